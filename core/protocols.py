"""The evaluation protocols of the paper (section 4.1) and WeakREST's tag setting.

- ``unsup``: train on normals only, test on the whole test split.
- ``sup``: ``n`` defective test images, drawn with a seed, move into training with their pixel
  masks (turned into block labels by Eq. 14, eps+ 25%); the rest is the test set.
- ``semi``: the same images, labelled with one minimum-area rotated box per connected component
  of the ground truth (Eq. 15); trained with ResMixMatch from the unsupervised model.
- ``tag``: the same images, tagged "defective" only (every block unknown).

The draw is stratified over defect types (round robin over the types in a seeded order, images
drawn at random within a type), so "10 images from various types of defects" holds, and the same
seed moves the same images under sup, semi and tag, which makes the three comparable.

No person drew these labels, so each carries the label cost model's estimate of the seconds it
would have taken (core/labelcost.py, the paper's Fig. 6 priors), flagged estimated
(``seconds_estimated``): the model file records them as ``label_seconds`` and the benchmark can
put accuracy against labelling seconds.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .datasets import MVTecCategory, Sample, load_sample_mask
from .errors import DatasetError
from .images import read_image
from .labelcost import PRIOR, LabelCostModel
from .labels import ImageLabel, boxes_from_mask

PROTOCOLS = ("unsup", "sup", "semi", "tag")


@dataclass
class ProtocolSplit:
    protocol: str
    labels: list[ImageLabel]      # labelled images that moved into training
    moved: list[Path]             # which test images moved
    test: list[Sample]            # what remains for evaluation


def draw_anomalous(samples: list[Sample], n: int, seed: int) -> list[Sample]:
    """``n`` defective samples, stratified over defect types, deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    by_kind: dict[str, list[Sample]] = {}
    for s in samples:
        if s.is_anomalous:
            by_kind.setdefault(s.kind, []).append(s)
    total = sum(len(v) for v in by_kind.values())
    if n > total:
        raise DatasetError(None, f"the protocol needs {n} defective test images, the category has {total}")
    pools = {k: [v[i] for i in rng.permutation(len(v))] for k, v in sorted(by_kind.items())}
    order = [k for k in rng.permutation(sorted(pools))]
    picked: list[Sample] = []
    while len(picked) < n:
        for k in order:
            if pools[k] and len(picked) < n:
                picked.append(pools[k].pop())
    return picked


def make_protocol(ds: MVTecCategory, protocol: str, n_anomalous: int = 10, seed: int = 0,
                  cost: LabelCostModel = PRIOR) -> ProtocolSplit:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    if protocol == "unsup":
        return ProtocolSplit(protocol, [], [], list(ds.test))
    moved = draw_anomalous(ds.test, n_anomalous, seed)
    moved_set = {s.path for s in moved}
    labels = []
    for s in moved:
        h, w = read_image(s.path).shape[:2]
        mask = load_sample_mask(s, (h, w))
        lab = ImageLabel(image=s.path, width=w, height=h)
        if protocol == "sup":
            lab.mask = mask
        elif protocol == "semi":
            lab.boxes = boxes_from_mask(mask)
        else:
            lab.tag = "defective"
        lab.seconds = cost.estimate(lab)
        lab.seconds_estimated = dict(lab.seconds)
        labels.append(lab.validate())
    return ProtocolSplit(protocol, labels, [s.path for s in moved],
                         [s for s in ds.test if s.path not in moved_set])
