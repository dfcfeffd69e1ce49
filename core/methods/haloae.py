"""HaloAE (Mathian et al. 2022): a HaloNet local-transformer auto-encoder of normal features.

The paper stacks four VGG19 maps into one 64 x 64 x 704 feature map, reconstructs it with an
encoder-decoder of HaloNet blocks (local self-attention: block 8, halo 4), reconstructs the image
with a transposed VGG, and trains a CutPaste classification head beside; the anomaly map is the
channel-mean squared error of the feature reconstruction. Here, as every method of this project:

- **features**: the frozen backbone features every method uses (core/embedding/features.py ``Encoder``,
  without the position code), one vector per 8 x 8 input pixels, so the error map is the block map
  the Predictor expects (no resizing). Each channel is standardised with the training normals'
  mean and standard deviation (stored in the model) so that no stage of the backbone dominates the
  error by its scale alone (the paper's VGG maps are used raw).
- **auto-encoder** (:class:`HaloAE`): a 3 x 3 convolution to ``width`` channels, ``depth`` halo
  bottleneck blocks (1 x 1 conv, halo attention, 3 x 3 conv, shortcut) narrowing to ``latent``
  channels, the mirror image back to ``width``, a 1 x 1 convolution to the feature channels. No
  spatial downsampling, as the research code's default (``reduction='s1'``): the bottleneck is in
  the channels. Halo attention pads maps whose sides are not multiples of the block and masks
  the padding, so any model-input size works.
- **CutPaste head**: the research code's "feature map only" variant (no image decoder): a small
  head classifies the *reconstructed* feature map of a normal image against those of its
  CutPaste and CutPaste-scar copies (core/synthetic/cutpaste.py). Its cross-entropy and the reconstruction
  loss (MSE + 1 - SSIM, on the normal images only) are weighted by the paper's schedule
  (:func:`loss_weights`: the head first, the reconstruction later), mapped onto the run's steps.
- **calibration**: maps of normals held out of training (the same split SemiREST validates on)
  and of DefectMaker defects pasted on them; no test image is used.

Never flip labels or scores: the research scoring script inverts any AUROC below 0.5; a map here
is the reconstruction error, larger means more anomalous, always.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, HaloAEConfig
from ..data.datasets import prepare_image, read_images, split_train_val
from ..embedding.features import Encoder
from ..eval.anomaly_map import eval_mask, image_map
from ..eval.calibration import calibrate
from .detector import Detector, FitJob, label_record, normals_from_labels, training_record

CALIBRATION_IMAGES = 6      # held-out normals scored for calibration, each with 2 DefectMaker defects
STD_FLOOR = 0.1             # channel std floor, x the median channel std: a channel (nearly) constant
                            # on normals must not turn a small change into a huge error


# ---------------------------------------------------------------------------------------------
# Halo attention
# ---------------------------------------------------------------------------------------------
class HaloAttention(nn.Module):
    """HaloNet's blocked local self-attention (Vaswani et al., CVPR 2021).

    The map is cut into ``block`` x ``block`` blocks of queries; each block attends to the keys of
    the ``(block + 2 halo)``-wide window around it. Position enters as a learned relative bias per
    head, ``t_row[dy] + t_col[dx]`` of the key's offset from the query (Swin's form, factored by
    axis as HaloNet factors its relative logits; HaloNet's logits also depend on the query's content,
    which would not let the attention run as one fused scaled-dot-product call). Sides that are not
    multiples of ``block`` are zero-padded and every padded or out-of-image key is masked out, so
    the output at a real position never depends on the padding. (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, dim: int, block: int = 8, halo: int = 4, heads: int = 8, dim_head: int = 16):
        super().__init__()
        if block < 1 or halo < 0 or heads < 1 or dim_head < 1:
            raise ValueError(f"halo attention: block {block} >= 1, halo {halo} >= 0, heads {heads} >= 1 "
                             f"and dim_head {dim_head} >= 1 needed")
        self.block, self.halo, self.heads, self.dim_head = block, halo, heads, dim_head
        inner = heads * dim_head
        self.q = nn.Conv2d(dim, inner, 1, bias=False)
        self.kv = nn.Conv2d(dim, 2 * inner, 1, bias=False)
        self.out = nn.Conv2d(inner, dim, 1)
        n_rel = 2 * (block + halo) - 1            # offsets -(block - 1 + halo) .. block - 1 + halo
        self.rel_row = nn.Parameter(torch.zeros(heads, n_rel))
        self.rel_col = nn.Parameter(torch.zeros(heads, n_rel))
        nn.init.trunc_normal_(self.rel_row, std=0.02)
        nn.init.trunc_normal_(self.rel_col, std=0.02)
        win = block + 2 * halo
        # offset index of (query row in its block, key row in the window): key - halo - query, shifted
        # to start at 0; it depends only on the offset of the two positions in the image
        rel = torch.arange(win)[None, :] - halo - torch.arange(block)[:, None] + block + halo - 1
        self.register_buffer("rel_idx", rel, persistent=False)

    @property
    def window(self) -> int:
        return self.block + 2 * self.halo

    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        # ceiling division written without negative operands: while tracing for ONNX (core/deploy/
        # export.py) h and w are tensors, and ONNX's integer division truncates where // floors
        b = self.block
        return (h + b - 1) // b * b, (w + b - 1) // b * b

    def _window_index(self, h: int, w: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(blocks, window^2) flat indices of each block's key window into the map zero-padded to
        (padded height + 2 halo) x (padded width + 2 halo), and which of those keys are real
        positions of the h x w map (bool)."""
        hp, wp = self.padded_size(h, w)
        b, win, halo = self.block, self.window, self.halo
        ar = torch.arange(win, device=device)
        rows = torch.arange(0, hp, b, device=device)[:, None] + ar      # (blocks down, win) padded rows
        cols = torch.arange(0, wp, b, device=device)[:, None] + ar      # (blocks across, win)
        index = rows[:, None, :, None] * (wp + 2 * halo) + cols[None, :, None, :]
        real = (((rows >= halo) & (rows < halo + h))[:, None, :, None]
                & ((cols >= halo) & (cols < halo + w))[None, :, None, :])
        return index.reshape(-1, win * win), real.reshape(-1, win * win)

    def key_windows(self, t: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, hp, wp) map of an h x w input padded to whole blocks -> (each block's key window,
        (B, C, blocks, window^2), zero beyond the map; which of those keys are real positions of the
        h x w input, (blocks, window^2) bool).

        Gathered by index from the map zero-padded by the halo rather than cut with ``Tensor.unfold``:
        the same values (tests/core/test_haloae_method.py checks that the layer's output is
        identical), and the ONNX exporter (core/deploy/export.py) cannot convert an unfold of a
        padded map."""
        index, real = self._window_index(h, w, t.device)
        return F.pad(t, (self.halo,) * 4).flatten(2)[:, :, index], real

    def key_mask(self, h: int, w: int, device=None) -> torch.Tensor:
        """(blocks, window^2) bool: which keys of each block's window are real positions."""
        return self._window_index(h, w, device)[1]

    def position_bias(self) -> torch.Tensor:
        """(heads, block^2, window^2) relative position bias of every (query, key) pair of a block."""
        b, win = self.block, self.window
        row = self.rel_row[:, self.rel_idx]                    # (heads, query row, key row)
        col = self.rel_col[:, self.rel_idx]                    # (heads, query col, key col)
        return (row[:, :, None, :, None] + col[:, None, :, None, :]).reshape(self.heads, b * b, win * win)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bsz, _, h, w = x.shape
        b, heads, dh, win = self.block, self.heads, self.dim_head, self.window
        hp, wp = self.padded_size(h, w)
        xp = F.pad(x, (0, wp - w, 0, hp - h))
        nby, nbx = hp // b, wp // b
        # queries: (B, blocks, heads, block^2, dh); keys, values: (B, blocks, heads, window^2, dh)
        q = self.q(xp).view(bsz, heads, dh, nby, b, nbx, b).permute(0, 3, 5, 1, 4, 6, 2)
        q = q.reshape(bsz, nby * nbx, heads, b * b, dh)
        kv, real = self.key_windows(self.kv(xp), h, w)                 # (B, 2i, blocks, win^2)
        kv = kv.reshape(bsz, 2, heads, dh, nby * nbx, win * win).permute(1, 0, 4, 2, 5, 3)
        k, v = kv[0], kv[1]
        mask = torch.zeros(nby * nbx, 1, 1, win * win, device=x.device, dtype=q.dtype)
        mask.masked_fill_(~real[:, None, None, :], float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.position_bias() + mask)
        out = out.view(bsz, nby, nbx, heads, b, b, dh).permute(0, 3, 6, 1, 4, 2, 5)
        out = out.reshape(bsz, heads * dh, hp, wp)[..., :h, :w]
        return self.out(out)


class HaloBlock(nn.Module):
    """HaloNet bottleneck as HaloAE stacks them: 1x1 conv, BN, ReLU, halo attention, ReLU,
    3x3 conv, BN, plus the shortcut (a 1x1 conv + BN when the width changes).

    No ReLU after the sum (the research code has one): the bottleneck stays signed, and on PIPED
    training normals the auto-encoder then fits much faster (held-out normals' error after 300 cpu
    preset steps 0.59 instead of 0.80 of the standardised variance), which matters at a few
    hundred steps instead of the paper's 188,000."""

    def __init__(self, cin: int, cout: int, h: HaloAEConfig):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
        self.attn = HaloAttention(cout, h.block, h.halo, h.heads, h.dim_head)
        self.mix = nn.Sequential(nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.short = (nn.Identity() if cin == cout
                      else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        return self.mix(self.attn(self.reduce(x))) + self.short(x)


def stage_channels(h: HaloAEConfig) -> list[int]:
    """Encoder widths, input to bottleneck: the first block keeps ``width`` (as the research code's
    first stage), the others narrow to ``latent``; the decoder runs the same list backwards."""
    return [h.width] + [h.width if i == 0 and h.depth > 1 else h.latent for i in range(h.depth)]


class HaloAE(nn.Module):
    """Standardised features (B, d, H, W) -> their reconstruction; ``classify`` is the CutPaste head."""

    def __init__(self, dim: int, h: HaloAEConfig, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None):
        super().__init__()
        ch = stage_channels(h)
        self.stem = nn.Sequential(nn.Conv2d(dim, h.width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(h.width), nn.ReLU())
        self.encoder = nn.Sequential(*[HaloBlock(a, b, h) for a, b in zip(ch[:-1], ch[1:])])
        back = ch[::-1]
        self.decoder = nn.Sequential(*[HaloBlock(a, b, h) for a, b in zip(back[:-1], back[1:])])
        self.to_features = nn.Conv2d(h.width, dim, 1)
        hidden = max(8, h.latent // 2)
        self.head_conv = nn.Sequential(nn.Conv2d(dim, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU())
        self.head = nn.Linear(2 * hidden, 2)       # normal | CutPaste (either kind) [2 classes]
        # the training normals' channel statistics, saved with the weights
        self.register_buffer("mean", torch.zeros(dim) if mean is None else mean.float().clone())
        self.register_buffer("std", torch.ones(dim) if std is None else std.float().clone())

    def standardise(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, H, W, d) Encoder features -> (B, d, H, W) standardised."""
        return ((feats - self.mean) / self.std).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.to_features(self.decoder(self.encoder(self.stem(z))))

    def classify(self, recon: torch.Tensor) -> torch.Tensor:
        y = self.head_conv(recon)
        return self.head(torch.cat([y.mean((2, 3)), y.amax((2, 3))], 1))

    @torch.no_grad()
    def error_map(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, H, W, d) features -> (B, H, W) channel-mean squared reconstruction error."""
        z = self.standardise(feats)
        return (self(z) - z).pow(2).mean(1)


class ErrorMapHead(nn.Module):
    """HaloAE's block map for the exported graph (Detector.graph_head): one image's (rows, cols, d)
    features -> :meth:`HaloAE.error_map`, the auto-encoder itself reused."""

    def __init__(self, model: HaloAE):
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.model.error_map(feats[None])[0]


def build_haloae(dim: int, h: HaloAEConfig, mean=None, std=None) -> HaloAE:
    return HaloAE(dim, h, mean, std)


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------
def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of two (B, C, H, W) maps, per channel with a Gaussian window (pytorch_ssim, as the
    paper: zero padding, C1 = 0.01^2, C2 = 0.03^2)."""
    c = x.shape[1]
    g = torch.exp(-(torch.arange(window, dtype=x.dtype, device=x.device) - window // 2) ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    k = (g[:, None] * g[None, :]).expand(c, 1, window, window).contiguous()

    def blur(t):
        return F.conv2d(t, k, padding=window // 2, groups=c)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))).mean()


def loss_weights(progress: float, cutpaste_weight: float = 1.0) -> tuple[float, float]:
    """(head, reconstruction) weights at ``progress`` (0..1) of training: the research code's
    inverse-logistic schedule over its 251 epochs, mapped onto the run. The head starts near 1 and
    falls to 0.4 (centre epoch 40); the reconstruction rises from 0.03 to 1.2 (centre epoch 75).
    Normalised to sum to 1; ``cutpaste_weight`` scales the head first (0: reconstruction alone)."""
    x = 250.0 * min(max(progress, 0.0), 1.0)
    head = 0.6 / (1.0 + math.exp(0.07 * (x - 40.0))) + 0.4
    recon = 1.2 - 1.2 / (1.0 + math.exp(0.05 * (x - 75.0)))
    head *= cutpaste_weight
    return head / (head + recon), recon / (head + recon)


# ---------------------------------------------------------------------------------------------
# Training data: each normal with its CutPaste and scar copies, as features
# ---------------------------------------------------------------------------------------------
def three_way(img: np.ndarray, rng: np.random.Generator,
              jitter: float) -> tuple[list[np.ndarray], list[tuple[float, float] | None]]:
    """CutPaste 3-way of one normal: (jittered normal, its CutPaste copy, its scar copy), and the
    centre (row, col) in pixels of each copy's pasted region (None for the normal)."""
    from ..synthetic.cutpaste import cutpaste_patch, cutpaste_scar
    from ..synthetic.defectmaker import color_jitter
    base = np.clip(np.rint(color_jitter(img, rng, jitter)), 0, 255).astype(np.uint8) if jitter else img
    images, centres = [base], [None]
    for make in (cutpaste_patch, cutpaste_scar):
        out, mask = make(base, rng, jitter)
        ys, xs = np.nonzero(mask)
        images.append(out)
        centres.append((float(ys.mean()), float(xs.mean())))
    return images, centres


def crop_origin(size: int, crop: int, block: int, rng: np.random.Generator, centre: float | None) -> int:
    """Start of a ``crop``-long window on a side of ``size`` positions: on the block grid (so the
    attention sees the blocks it sees on whole maps) where possible, covering ``centre`` if given."""
    if crop >= size:
        return 0
    starts = sorted(set(range(0, size - crop + 1, block)) | {size - crop})
    if centre is not None:
        covering = [o for o in starts if o <= centre < o + crop]
        starts = covering or starts
    return int(starts[int(rng.integers(len(starts)))])


class TrainingMaps:
    """Batches of (3 x batch, H, W, d) raw features: ``batch`` normals of one model-input size, then
    their CutPaste copies, then their scar copies. With ``pool_per_normal`` copies per normal the
    backbone runs once before training (features kept as float16 on the CPU); with 0 every step
    draws and encodes fresh augmentations, as the paper does. With ``crop``, each map is a random
    crop x crop window (on the block grid); a copy's window covers its pasted region, so that the
    CutPaste head's label stays true."""

    def __init__(self, images: list[np.ndarray], encoder: Encoder, h: HaloAEConfig, seed: int, report=None):
        self.images, self.encoder, self.h, self.seed = images, encoder, h, seed
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.shape, []).append(i)
        self.groups = list(groups.values())
        self.pool: list[list[tuple[torch.Tensor, list]]] | None = None
        if h.pool_per_normal:
            n, k = len(images), h.pool_per_normal
            tick = report.tick("features", "CutPaste copies of the normals") if report else None
            self.pool = []
            for i, im in enumerate(images):
                copies = []
                for c in range(k):
                    trio, centres = three_way(im, np.random.default_rng([seed, 1, i, c]), h.jitter)
                    copies.append((torch.stack(encoder.encode(trio, with_position=False)).half(), centres))
                self.pool.append(copies)
                if tick:
                    tick(i + 1, n)

    def batch(self, step: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, 2, step])
        sizes = np.array([len(g) for g in self.groups], float)
        group = self.groups[int(rng.choice(len(self.groups), p=sizes / sizes.sum()))]
        b = self.h.batch
        idx = rng.choice(group, b, replace=len(group) < b)
        if self.pool is not None:
            picked = [self.pool[int(i)][int(rng.integers(len(self.pool[int(i)])))] for i in idx]
            maps = [t.float() for t, _ in picked]
            centres = [c for _, c in picked]
        else:
            trios = [three_way(self.images[int(i)], rng, self.h.jitter) for i in idx]
            feats = torch.stack(self.encoder.encode([im for t, _ in trios for im in t], with_position=False))
            maps = list(feats.view(b, 3, *feats.shape[1:]))
            centres = [c for _, c in trios]
        out = []
        for k in range(3):                      # normals, CutPastes, scars
            for m, c in zip(maps, centres):
                out.append(self._crop(m[k], c[k], rng))
        return torch.stack(out)

    def _crop(self, m: torch.Tensor, centre, rng) -> torch.Tensor:
        crop = self.h.crop
        if not crop:
            return m
        h, w = m.shape[:2]
        cy, cx = (None, None) if centre is None else (centre[0] / 8.0, centre[1] / 8.0)   # pixels -> positions
        y0 = crop_origin(h, crop, self.h.block, rng, cy)
        x0 = crop_origin(w, crop, self.h.block, rng, cx)
        return m[y0:y0 + crop, x0:x0 + crop]


def channel_stats(feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of (H, W, d) feature maps, the std floored (:data:`STD_FLOOR`)."""
    x = torch.cat([f.reshape(-1, f.shape[-1]).double() for f in feats])
    mean, std = x.mean(0), x.std(0)
    floor = STD_FLOOR * float(std.median())
    return mean.float(), std.clamp_min(max(floor, 1e-6)).float()


def train_autoencoder(model: HaloAE, maps: TrainingMaps, h: HaloAEConfig, dev: torch.device,
                      report=None) -> list[dict]:
    """Adam on the scheduled loss; returns the per-step loss terms."""
    opt = torch.optim.Adam(model.parameters(), lr=h.lr, weight_decay=h.weight_decay)
    b = h.batch
    labels = torch.cat([torch.zeros(b), torch.ones(2 * b)]).long().to(dev)
    history = []
    model.train()
    for step in range(h.steps):
        z = model.standardise(maps.batch(step).to(dev))
        recon = model(z)
        mse = F.mse_loss(recon[:b], z[:b])                   # the normals only are reconstructed
        dssim = 1.0 - ssim(recon[:b], z[:b], h.ssim_window)
        w_head, w_rec = loss_weights(step / max(1, h.steps - 1), h.cutpaste_weight)
        ce = F.cross_entropy(model.classify(recon), labels) if w_head > 0 else recon.new_zeros(())
        loss = w_head * ce + w_rec * (mse + dssim)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        parts = {"loss": loss.item(), "mse": mse.item(), "ssim": 1.0 - dssim.item(), "ce": ce.item()}
        history.append(parts)
        if report is not None:
            report("train", step + 1, h.steps, "HaloAE", **parts)
    model.eval()
    return history


# ---------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------
def empty_bank(dim: int) -> dict:
    """HaloAE keeps no memory bank; the model file's bank field holds none (0 entries)."""
    return {"features": torch.zeros(0, dim), "owner": torch.zeros(0, dtype=torch.int32)}


def state_problem(bundle) -> str | None:
    """Why ``bundle.method_state`` cannot be this config's auto-encoder (missing, unexpected or
    misshapen tensors), or None."""
    want = {k: tuple(v.shape) for k, v in build_haloae(bundle.feature_dim, bundle.config.haloae).state_dict().items()}
    have = {k: tuple(v.shape) for k, v in bundle.method_state.items()}
    if not have:
        return "HaloAE model file without its auto-encoder weights ('method_state' is empty)"
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing or extra:
        return (f"HaloAE weights do not match its settings: missing {missing[:3]}, unexpected {extra[:3]}")
    bad = [k for k in want if want[k] != have[k]]
    if bad:
        k = bad[0]
        return f"HaloAE weight {k} has shape {have[k]}, its settings need {want[k]}"
    return None


class HaloAEDetector(Detector):
    """HaloAE as a method users train (core/methods/__init__.py): fit = the auto-encoder on normals;
    score = the feature reconstruction error per 8 x 8 block."""

    name = "haloae"

    def __init__(self, bundle, device, encoder, bagging=None, precision="float32"):
        super().__init__(bundle, device, encoder, bagging, precision)
        self.model = build_haloae(bundle.feature_dim, self.cfg.haloae)
        self.model.load_state_dict(bundle.method_state)
        self.model.to(device).eval()

    @classmethod
    def state_problem(cls, bundle) -> str | None:
        return state_problem(bundle)

    def group_maps(self, xs: list[np.ndarray], timer) -> list[np.ndarray]:
        with timer("backbone"):
            f = torch.stack(self.encoder.encode(xs, with_position=False))
        with timer("autoencoder"):
            return list(self.model.error_map(f.to(self.device)).float().cpu().numpy())

    def graph_head(self, rows: int, cols: int) -> nn.Module:
        return ErrorMapHead(self.model)

    @classmethod
    def fit(cls, job: FitJob):
        from ..deploy.modelfile import ModelBundle
        from . import BY_NAME
        cfg, report, dev, h = job.cfg, job.report, job.dev, job.cfg.haloae
        paths = normals_from_labels(job, BY_NAME[cls.name].labels_note)
        train_p, val_p = split_train_val(paths, cfg.train.val_fraction, cfg.train.val_min_images,
                                         cfg.train.seed)
        report.log(f"device: {dev}; HaloAE from {len(train_p)} normal images, {len(val_p)} held out "
                   f"to calibrate; {h.steps} steps of {h.batch} normals with their CutPaste copies")
        f = cfg.features
        train_imgs = [prepare_image(i, f.image_size, f.size_multiple) for i in read_images(train_p)]
        val_imgs = [prepare_image(i, f.image_size, f.size_multiple) for i in read_images(val_p)]
        torch.manual_seed(cfg.train.seed)
        encoder = Encoder(f, dev)
        plain = encoder.encode(train_imgs, with_position=False, tick=report.tick("features", "normals"))
        mean, std = channel_stats(plain)
        maps = TrainingMaps(train_imgs, encoder, h, cfg.train.seed, report)
        model = build_haloae(encoder.dim, h, mean, std).to(dev)
        t1 = time.perf_counter()
        history = train_autoencoder(model, maps, h, dev, report)
        train_seconds = time.perf_counter() - t1
        if not val_imgs:
            report.log("too few normals to hold any out: calibrating on training normals (thresholds "
                       "will sit low)")
        calib = calibration(model, encoder, val_imgs or train_imgs, cfg, report)
        tail = history[-max(1, len(history) // 10):]
        bundle = ModelBundle(
            config=cfg, backbone=encoder.backbone_name, feature_dim=encoder.dim,
            bank_state=empty_bank(encoder.dim), swin_state={}, residual_scale=1.0,
            validation={"final_mse": float(np.mean([x["mse"] for x in tail])),
                        "final_ce": float(np.mean([x["ce"] for x in tail]))},
            calibration=calib,
            training=training_record(job, train_seconds=train_seconds, steps=h.steps,
                                     normal_images=len(train_p), val_images=len(val_p),
                                     bank_images=[p.name for p in train_p], **label_record([])),
            method_state={k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        bundle.save(job.out)
        report("done", 1, 1, f"saved {job.out}")
        return bundle


def calibration(model: HaloAE, encoder: Encoder, images: list[np.ndarray], cfg: Config,
                report=None) -> dict:
    """Calibration (core/eval/calibration.py) from normals the auto-encoder did not train on, and two
    DefectMaker defects pasted on each (core/synthetic/defectmaker.py); no test image is used."""
    from ..synthetic.defectmaker import DefectMaker
    from ..synthetic.memseg import min_component_pixels
    out, seed = cfg.output, cfg.train.seed
    pick = images[:CALIBRATION_IMAGES]
    maps, masks = [], []
    dev = next(model.parameters()).device
    for i, x in enumerate(pick):
        maker = DefectMaker(min_component_pixels(cfg.synthesis, x.shape[:2]))
        rng = np.random.default_rng([seed, 3, i])
        variants = [(x, np.zeros(x.shape[:2], bool))] + [maker(x, rng) for _ in range(2)]
        feats = torch.stack(encoder.encode([v for v, _ in variants], with_position=False)).to(dev)
        for block, (img, mask) in zip(model.error_map(feats).cpu().numpy(), variants):
            maps.append(image_map(block, img.shape[:2], out, image=img)[0])
            masks.append(eval_mask(mask, out.eval_size))
        if report is not None:
            report("validate", i + 1, len(pick), "calibration")
    return calibrate(maps, masks)

