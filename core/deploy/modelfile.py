"""The self-contained model file: config, backbone name, memory bank, Swin weights, validation
metrics, normalisation and thresholds, training record. One ``torch.save`` of plain dicts, tensors,
strings and numbers, written atomically and loaded with ``weights_only=True`` (no pickle code runs
when a user opens a model file someone sent them).
"""
from __future__ import annotations

import math
import numbers
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import LEGACY_DEFAULTS, Config
from ..embedding.bank import MemoryBank
from ..errors import InputError
from ..fileio import atomic_write_with

FORMAT = "semirest.model/1"


#: (field, what it must be, test) of a model file's dictionary; "optional" fields may be absent or None.
_FIELDS = (
    ("config", "a dictionary of settings", lambda v: isinstance(v, dict)),
    ("backbone", "a backbone name", lambda v: isinstance(v, str) and bool(v)),
    ("feature_dim", "a positive integer",
     lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0),
    ("bank", "a memory bank (tensors 'features' of (n, d) and 'owner' of (n,))",
     lambda v: isinstance(v, dict) and isinstance(v.get("features"), torch.Tensor)
     and isinstance(v.get("owner"), torch.Tensor) and v["features"].ndim == 2
     and v["owner"].shape == v["features"].shape[:1]),
    ("swin", "a dictionary of weight tensors",
     lambda v: isinstance(v, dict) and all(isinstance(t, torch.Tensor) for t in v.values())),
    ("residual_scale", "a finite number",
     lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)),
)
_OPTIONAL = ("validation", "calibration", "training")   # dictionaries, may be absent
# Dictionaries of weight tensors a method may add; absent (files written before they existed, and
# methods without them): empty. backbone_state: an adapted backbone (REB's DefectMaker
# fine-tuning); method_state: a method's own weights beside the bank and the Swin (HaloAE's
# auto-encoder, core/methods/haloae.py).
_OPTIONAL_TENSORS = ("backbone_state", "method_state")


def _not_a_model(path: Path, why: str) -> InputError:
    return InputError(path, f"not a SemiREST model file ({why})")


def _torch_load(path: Path):
    """``torch.load`` with ``weights_only=True``; its errors become one plain sentence.

    PyTorch's own message for a refused object advises loading with ``weights_only=False``, i.e.
    running the file's code: never pass that on (not in the message, not as the cause)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or exc})") from exc
    if not head:
        raise _not_a_model(path, "the file is empty")
    if head != b"PK\x03\x04":     # torch.save writes a zip archive; anything else is not ours
        raise _not_a_model(path, "it is not a PyTorch zip archive")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # pickle-protocol notes: the error below says enough
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:   # noqa: BLE001 - only for a better reason; the fallback is still true
            names = []
        what = f"Python objects ({', '.join(names[:3])})" if names else "data other than tensors, numbers and strings"
        raise _not_a_model(path, f"it holds {what}, which SemiREST never loads since loading "
                                 f"them could run code") from None
    except Exception as exc:   # noqa: BLE001 - torch raises RuntimeError, EOFError, KeyError...
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        if "weights_only" in first:
            first = type(exc).__name__
        raise _not_a_model(path, f"PyTorch cannot read it, damaged or truncated? ({first})") from None


def read_model_dict(path: Path) -> dict:
    """The checked dictionary of a model file: our format tag, every field there and well-typed.
    Errors are InputError naming the file: not a model file / a newer one / incomplete / invalid."""
    d = _torch_load(path)
    if not isinstance(d, dict):
        raise _not_a_model(path, f"it holds a {type(d).__name__}, not a SemiREST model")
    fmt = d.get("format")
    if fmt is None:
        raise _not_a_model(path, "it has no format tag: a plain PyTorch state dict or checkpoint?")
    if fmt != FORMAT:
        m = re.fullmatch(r"semirest\.model/(\d+)", str(fmt))
        if m and int(m.group(1)) > int(FORMAT.rsplit("/", 1)[1]):
            raise InputError(path, f"written by a newer SemiREST Studio (model format {fmt}; this "
                                   f"version reads {FORMAT}): update SemiREST Studio to open it")
        raise _not_a_model(path, f"its format tag is {fmt!r}, expected {FORMAT!r}")
    missing = [k for k, _, _ in _FIELDS if k not in d]
    if missing:
        raise InputError(path, "SemiREST model file is incomplete: missing "
                               + ", ".join(repr(k) for k in missing))
    for key, what, ok in _FIELDS:
        if not ok(d[key]):
            raise InputError(path, f"SemiREST model file is invalid: '{key}' must be {what}, got "
                                   f"{_describe(d[key])}")
    for key in _OPTIONAL:
        if d.get(key) is not None and not isinstance(d[key], dict):
            raise InputError(path, f"SemiREST model file is invalid: '{key}' must be a dictionary, "
                                   f"got {_describe(d[key])}")
    for key in _OPTIONAL_TENSORS:
        v = d.get(key)
        if v is not None and not (isinstance(v, dict) and all(isinstance(k, str) and isinstance(t, torch.Tensor)
                                                              for k, t in v.items())):
            raise InputError(path, f"SemiREST model file is invalid: '{key}' must be a dictionary of "
                                   f"weight tensors, got {_describe(v)}")
    density = d["bank"].get("density")
    if density is not None and not (isinstance(density, torch.Tensor)
                                    and density.shape == d["bank"]["features"].shape[:1]):
        raise InputError(path, f"SemiREST model file is invalid: the bank's 'density' must be a tensor "
                               f"of one value per bank entry ({d['bank']['features'].shape[0]}), got "
                               f"{_describe(density)}")
    return d


def _describe(v) -> str:
    if isinstance(v, torch.Tensor):
        return f"a tensor of shape {tuple(v.shape)}"
    r = repr(v)
    return r if len(r) <= 60 else f"a {type(v).__name__}"


def _with_legacy_defaults(config: dict) -> dict:
    """A saved config with the settings of its time filled in: a model saved before a setting
    existed was trained with the old behaviour (config.LEGACY_DEFAULTS), not today's default."""
    out = dict(config)
    for section, values in LEGACY_DEFAULTS.items():
        if isinstance(out.get(section), dict):
            out[section] = {**values, **out[section]}
    return out


@dataclass
class ModelBundle:
    config: Config
    backbone: str
    feature_dim: int
    bank_state: dict
    swin_state: dict
    residual_scale: float
    validation: dict = field(default_factory=dict)      # best val metrics, step, history
    calibration: dict = field(default_factory=dict)     # fixed map scale, default thresholds, score stats
    training: dict = field(default_factory=dict)        # images, labels used, seconds, device, date...
    backbone_state: dict = field(default_factory=dict)  # adapted backbone weights (REB); empty: ImageNet's
    method_state: dict = field(default_factory=dict)    # a method's own weight tensors (HaloAE's auto-encoder)

    # ---- builders used by the predictor -------------------------------------------------------
    def encoder(self, device):
        """The feature encoder this model was built with: the backbone's ImageNet weights, or the
        adapted weights the model file carries (``backbone_state``)."""
        from ..embedding.features import Encoder
        enc = Encoder(self.config.features, device, backbone=self.backbone)
        if self.backbone_state:
            net = enc.extractor.net
            # weights of blocks the extractor no longer runs (core/embedding/features.py)
            cut = tuple(getattr(net, "dropped_prefixes", ()))
            state = {k: v for k, v in self.backbone_state.items() if not (cut and k.startswith(cut))}
            try:
                net.load_state_dict(state)
            except RuntimeError as exc:   # names the first mismatching tensors
                first = str(exc).strip().splitlines()
                raise InputError(None, f"the model's adapted {self.backbone} weights do not fit "
                                       f"the backbone ({' '.join(first[:2])[:200]})") from None
            net.eval()
        return enc

    @property
    def method(self) -> str:
        return self.config.method

    def swin(self, device):
        from ..learning.model import build_model
        model = build_model(self.feature_dim, self.config, self.residual_scale)
        model.load_state_dict(self.swin_state)
        return model.to(device).eval()

    def bank(self, device) -> MemoryBank:
        return MemoryBank.from_state(self.bank_state, device).use(self.config.bank)

    # ---- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "config": self.config.to_dict(), "backbone": self.backbone,
                "feature_dim": self.feature_dim, "bank": self.bank_state, "swin": self.swin_state,
                "residual_scale": self.residual_scale, "validation": self.validation,
                "calibration": self.calibration, "training": self.training,
                "backbone_state": self.backbone_state, "method_state": self.method_state}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        # through a file handle: a full disk is then an OSError (ENOSPC) that atomic_path turns
        # into a plain WriteError; torch.save(obj, path) raises an errno-less RuntimeError instead
        data = self.to_dict()
        atomic_write_with(path, lambda fh: torch.save(data, fh))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ModelBundle":
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "no such model file")
        d = read_model_dict(path)
        bundle = cls(Config.from_dict(_with_legacy_defaults(d["config"]), where=f"{path} config"), d["backbone"],
                     int(d["feature_dim"]), d["bank"], d["swin"], float(d["residual_scale"]),
                     d.get("validation") or {}, d.get("calibration") or {}, d.get("training") or {},
                     d.get("backbone_state") or {}, d.get("method_state") or {})
        from ..methods import BY_NAME, detector_class
        if bundle.method in BY_NAME:      # the method checks its own weights (e.g. HaloAE's shapes)
            problem = detector_class(bundle.method).state_problem(bundle)
            if problem:
                raise InputError(path, problem)
        return bundle

    def summary(self) -> str:
        tr, val = self.training, self.validation
        parts = [f"method {self.method}", f"backbone {self.backbone}", f"preset {self.config.preset}"]
        if len(self.bank_state["features"]):
            parts.append(f"bank {self.bank_state['features'].shape[0]} x {self.feature_dim}")
        known = self.method_state.get("known_defects")
        if known is not None:    # SemiREST's known-defect blocks (decision 0025), not weights
            parts.append(f"{len(known)} known-defect blocks (weight "
                         f"{(self.calibration.get('known_defects') or {}).get('weight', 0.0):g})")
        weights = {k: t for k, t in self.method_state.items() if k != "known_defects"}
        if weights:
            n = sum(t.numel() for t in weights.values() if t.is_floating_point())
            parts.append(f"{self.method} weights {n / 1e6:.2f} M values")
        if "val_pixel_ap" in val:
            parts.append(f"validation pixel AP {val['val_pixel_ap']:.3f} (step {val.get('step')})")
        if tr.get("seconds"):
            parts.append(f"trained {tr['seconds']:.0f} s on {tr.get('device', '?')}"
                         + (f" in {tr['precision']}" if tr.get("precision", "float32") != "float32" else ""))
        if self.config.output.contrast:     # decision 0028: which labels chose it, when chosen
            on = (self.calibration.get("contrast") or {}).get("on")
            parts.append(f"maps refined by pixel contrast (beta {self.config.output.contrast:g}"
                         + (f", chosen on {on})" if on else ")"))
        pm = self.pseudo_mask_counts()
        if pm:
            parts.append(f"boxes: {pm['defective']} of {pm['boxed']} boxed blocks taken as defective "
                         f"({pm['images']} images, decision 0022)")
        return ", ".join(parts)

    def pseudo_mask_counts(self) -> dict | None:
        """{"images", "boxed", "defective"} of the pseudo-masks the boxes trained on
        (``training.pseudo_masks``), None when the model learned from no boxes."""
        rec = self.training.get("pseudo_masks")
        if not rec:
            return None
        count = lambda key: sum(row.count("1") for r in rec for row in r[key])   # noqa: E731
        return {"images": len(rec), "boxed": count("boxed"), "defective": count("defective")}
