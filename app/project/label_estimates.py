"""Estimated annotation seconds for labels that arrive without being drawn here (no Qt).

Imported labels (and the demo's seeded ones, which are imported too) were not drawn in this
project, so their time cannot be measured. They get seconds anyway, so the label budget can weigh
them, but flagged *estimated* (docs/decisions/0003): seconds the label file carries (measured in
another project, or estimated there) are kept as they are; kinds the file has no seconds for get
the keystroke-level model's estimate (core/data/labelcost.py), calibrated on this project's own
measured seconds when it has enough of them, else the paper's Fig. 6 priors.
"""
from __future__ import annotations

import uuid

from core.data.labelcheck import CHECKED
from core.data.labelcost import LabelCostModel, LabelGeometry, calibrate, label_geometry
from core.data.labels import ImageLabel

from .store import Store


def measured_samples(store: Store) -> list[tuple[LabelGeometry, float]]:
    """(geometry, measured seconds) per image and label kind the project measured. A tag's time is
    what the app books for it: the verdict ("checked") plus any "tag" edit on that image."""
    per_image: dict[int, dict[str, float]] = {}
    for image_id, kind, estimated, seconds, _verdict in store.timing_totals():
        if not estimated:
            key = "tag" if kind == CHECKED else kind
            d = per_image.setdefault(image_id, {})
            d[key] = d.get(key, 0.0) + seconds
    out = []
    for image_id, secs in per_image.items():
        for g in label_geometry(store.image_label(image_id, with_seconds=False)):
            if secs.get(g.kind, 0.0) > 0:
                out.append((g, secs[g.kind]))
    return out


def project_cost_model(store: Store) -> LabelCostModel:
    """The cost model calibrated on this project's measured seconds, where there are enough."""
    return calibrate(measured_samples(store))


def imported_seconds(label: ImageLabel, model: LabelCostModel) -> dict[str, float]:
    """Seconds to record for an imported label: the file's own, then the model's for the kinds
    the file has none for (a tag's time goes under "checked", as the app books a verdict)."""
    out = {k: float(v) for k, v in label.seconds.items() if v > 0}
    have_tag = "tag" in out or CHECKED in out
    for kind, s in model.estimate(label, tag_key=CHECKED).items():
        if kind not in out and not (kind == CHECKED and have_tag):
            out[kind] = s
    return out


def record_imported(store: Store, image_id: int, label: ImageLabel, model: LabelCostModel) -> dict[str, float]:
    """Store the estimated seconds of one imported label (inside the caller's transaction, so a
    label is never in without them); returns what was recorded."""
    seconds = imported_seconds(label, model)
    if seconds:
        store.save_timing(f"import-{uuid.uuid4().hex[:12]}", image_id, seconds, 0.0, 0.0,
                          estimated=True, verdict=label.tag)
    return seconds
