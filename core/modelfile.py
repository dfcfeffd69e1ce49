"""The self-contained model file: config, backbone name, memory bank, Swin weights, validation
metrics, normalisation and thresholds, training record. One ``torch.save`` of plain dicts, tensors,
strings and numbers, written atomically and loaded with ``weights_only=True`` (no pickle code runs
when a user opens a model file someone sent them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .bank import MemoryBank
from .config import LEGACY_DEFAULTS, Config
from .errors import InputError
from .fileio import atomic_write_with

FORMAT = "semirest.model/1"


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

    # ---- builders used by the predictor -------------------------------------------------------
    def encoder(self, device):
        from .features import Encoder
        return Encoder(self.config.features, device, backbone=self.backbone)

    @property
    def method(self) -> str:
        return self.config.method

    def swin(self, device):
        from .training import build_model
        model = build_model(self.feature_dim, self.config, self.residual_scale)
        model.load_state_dict(self.swin_state)
        return model.to(device).eval()

    def bank(self, device) -> MemoryBank:
        return MemoryBank.from_state(self.bank_state, device)

    # ---- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "config": self.config.to_dict(), "backbone": self.backbone,
                "feature_dim": self.feature_dim, "bank": self.bank_state, "swin": self.swin_state,
                "residual_scale": self.residual_scale, "validation": self.validation,
                "calibration": self.calibration, "training": self.training}

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
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise InputError(path, f"not a readable SemiREST model file ({type(exc).__name__}: {exc})") from exc
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise InputError(path, f"not a SemiREST model file (expected format {FORMAT})")
        return cls(Config.from_dict(_with_legacy_defaults(d["config"]), where=f"{path} config"), d["backbone"], int(d["feature_dim"]),
                   d["bank"], d["swin"], float(d["residual_scale"]), d.get("validation") or {},
                   d.get("calibration") or {}, d.get("training") or {})

    def summary(self) -> str:
        tr, val = self.training, self.validation
        parts = [f"method {self.method}", f"backbone {self.backbone}", f"preset {self.config.preset}",
                 f"bank {self.bank_state['features'].shape[0]} x {self.feature_dim}"]
        if "val_pixel_ap" in val:
            parts.append(f"validation pixel AP {val['val_pixel_ap']:.3f} (step {val.get('step')})")
        if tr.get("seconds"):
            parts.append(f"trained {tr['seconds']:.0f} s on {tr.get('device', '?')}")
        return ", ".join(parts)
