"""The detection methods a user can train, one list for the CLI, the API, the app and the bench.

A model file records its method in its config (``Config.method``); :class:`core.inference.Predictor`
runs either from the same model file format.
"""
from __future__ import annotations

METHODS: dict[str, str] = {
    "semirest": "SemiREST: memory bank + position-constrained residuals + Swin block classifier; "
                "learns from synthetic defects and any labels (boxes, blocks, masks, tags)",
    "patchcore": "PatchCore: nearest-neighbour distance to a memory bank of normal features; "
                 "no training, normal images only (the baseline, at parity with anomalib's)",
}

# What each method can learn from. Labels a method cannot use are refused with this reason.
USES_LABELS: dict[str, bool] = {"semirest": True, "patchcore": False}
