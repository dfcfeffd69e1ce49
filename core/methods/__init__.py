"""The detection methods a user can train. This module is the registry: one list for the CLI, the
API, the app and the bench. The package holds the methods themselves: the interface (detector),
SemiREST (semirest), PatchCore (patchcore), REB (reb, ldknn, defect_finetune) and HaloAE (haloae).

Torch-free on purpose (the app's Train panel and ``core.config`` read it at start). Each entry
names the class that implements it (:class:`core.methods.detector.Detector`), imported only when
a model of that method is trained or run. A model file records its method in its config
(``Config.method``); predict, eval, info, the viewer, calibration and thresholds work the same for
every method.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str                  # what --method and Config.method take
    title: str                 # what the app shows
    summary: str               # one line for the Train panel and --help
    uses_labels: bool          # learns from labelled defective images (boxes, masks, blocks, tags)
    labels_note: str           # why labels are refused when it cannot use them
    detector: str              # "module:Class" implementing core.methods.detector.Detector
    exports: bool = False      # `semirest export` writes its whole inference path (core/deploy/export.py)
    steps_setting: str | None = "train.steps"   # the "section.field" that --steps sets (None: the
                                                # method has no optimisation steps)
    train_precision: bool = False  # its training honours train.precision (core/deploy/precision.py)


REGISTRY: tuple[Method, ...] = (
    Method("semirest", "SemiREST",
           "SemiREST: residuals to normal features, classified per 8x8 block by a Swin; "
           "learns from any labels", True, "",
           "core.methods.semirest:SemiREST", exports=True, train_precision=True),
    Method("patchcore", "PatchCore",
           "PatchCore: distance to the nearest normal feature; no training (the baseline)", False,
           "PatchCore learns from normal images only (images tagged normal join its bank)",
           "core.methods.patchcore:PatchCoreDetector", exports=True, steps_setting=None),
    Method("reb", "REB",
           "REB: distance to the nearest normal feature minus its local density (LDKNN), "
           "optionally on a backbone fine-tuned on DefectMaker defects", False,
           "REB learns from normal images only (images tagged normal join its bank)",
           "core.methods.reb:RebDetector", exports=True, steps_setting="reb.finetune_steps"),
    Method("haloae", "HaloAE",
           "HaloAE: a local-attention (HaloNet) auto-encoder reconstructs normal features; "
           "the reconstruction error is the map", False,
           "HaloAE learns from normal images only (images tagged normal join its training set)",
           "core.methods.haloae:HaloAEDetector", exports=True, steps_setting="haloae.steps"),
)

BY_NAME: dict[str, Method] = {m.name: m for m in REGISTRY}
# Derived views, for callers that need only one field.
METHODS: dict[str, str] = {m.name: m.summary for m in REGISTRY}
USES_LABELS: dict[str, bool] = {m.name: m.uses_labels for m in REGISTRY}


def detector_class(name: str):
    """The class implementing method ``name`` (imports torch and the method's modules)."""
    if name not in BY_NAME:
        from ..errors import ConfigError
        raise ConfigError(f"method: unknown method {name!r}; choose one of {sorted(BY_NAME)}")
    module, cls = BY_NAME[name].detector.split(":")
    return getattr(importlib.import_module(module), cls)
