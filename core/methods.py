"""The detection methods a user can train, one list for the CLI, the API, the app and the bench.

A model file records its method in its config (``Config.method``); :class:`core.inference.Predictor`
runs either from the same model file format.
"""
from __future__ import annotations

METHODS: dict[str, str] = {
    "semirest": "SemiREST: residuals to normal features, classified per 8x8 block by a Swin; "
                "learns from any labels",
    "patchcore": "PatchCore: distance to the nearest normal feature; no training (the baseline)",
}

# What each method can learn from. Labels a method cannot use are refused with this reason.
USES_LABELS: dict[str, bool] = {"semirest": True, "patchcore": False}
