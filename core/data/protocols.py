"""The evaluation protocols of the paper (section 4.1) and WeakREST's tag setting.

- ``unsup``: train on normals only, test on the whole test split.
- ``sup``: ``n`` defective test images, drawn with a seed, move into training with their pixel
  masks (turned into block labels by Eq. 14, eps+ 25%); the rest is the test set.
- ``blocks``: the same images, labelled as a person would with the block tool: the cells Eq. 14
  calls anomalous, painted on the block grid (the app's default grid is the cpu preset's model
  grid); trained from scratch like ``sup``. It costs less to draw than a mask (core/data/labelcost.py).
- ``semi``: the same images, labelled with one minimum-area rotated box per connected component
  of the ground truth (Eq. 15); trained with ResMixMatch from the unsupervised model.
- ``tag``: the same images, tagged "defective" only (every block unknown).

The draw is stratified over defect types (round robin over the types in a seeded order, images
drawn at random within a type), so "10 images from various types of defects" holds, and the same
seed moves the same images under sup, blocks, semi and tag, which makes them comparable.

Nested draws (``pool``, the label economy benchmark): ``pool`` images are drawn once for a seed and
the first ``n`` of them are labelled; all ``pool`` leave the test set, so every ``n`` of a seed is
tested on the same images and the labelled sets grow by adding images (the stratified draw of
``n`` is itself the first ``n`` of the draw of ``pool``).

No person drew these labels, so each carries the label cost model's estimate of the seconds it
would have taken (core/data/labelcost.py, the paper's Fig. 6 priors), flagged estimated
(``seconds_estimated``): the model file records them as ``label_seconds`` and the benchmark can
put accuracy against labelling seconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .datasets import MVTecCategory, Sample, load_sample_mask
from .images import read_image
from .labelcost import PRIOR, LabelCostModel
from .labels import ImageLabel, block_cells_from_mask, boxes_from_mask

PROTOCOLS = ("unsup", "sup", "blocks", "semi", "tag")
DEFAULT_BLOCK_GRID = (256, 8)   # the block tool's grid in the app (image_size, block): the cpu preset's model grid


@dataclass
class ProtocolSplit:
    protocol: str
    labels: list[ImageLabel]      # labelled images that moved into training
    moved: list[Path]             # which test images moved
    test: list[Sample]            # what remains for evaluation
    # drawn images kept out of the test set but not labelled (nested draws: the pool beyond n)
    withheld: list[Path] = field(default_factory=list)


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
                  cost: LabelCostModel = PRIOR, pool: int | None = None,
                  block_grid: tuple[int, int] = DEFAULT_BLOCK_GRID, eps_pos: float = 0.25) -> ProtocolSplit:
    """The split of ``protocol``: ``n_anomalous`` labelled defective images (the first of a
    stratified draw of ``pool``, default ``n_anomalous``, all of which leave the test set).
    ``block_grid`` (image_size, block) and ``eps_pos`` (Eq. 14's eps+ for real labels, config
    ``train.eps_pos_real``, 25% in the paper) make the ``blocks`` protocol's cells."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    if protocol == "unsup":
        return ProtocolSplit(protocol, [], [], list(ds.test))
    pool = n_anomalous if pool is None else pool
    if pool < n_anomalous:
        raise ValueError(f"the pool of drawn images ({pool}) is smaller than the labelled ones ({n_anomalous})")
    drawn = draw_anomalous(ds.test, pool, seed)
    moved = drawn[:n_anomalous]
    drawn_set = {s.path for s in drawn}
    labels = []
    for s in moved:
        h, w = read_image(s.path).shape[:2]
        mask = load_sample_mask(s, (h, w))
        lab = ImageLabel(image=s.path, width=w, height=h)
        if protocol == "sup":
            lab.mask = mask
        elif protocol == "blocks":
            lab.blocks = block_cells_from_mask(mask, block_grid[0], block_grid[1], eps_pos)
        elif protocol == "semi":
            lab.boxes = boxes_from_mask(mask)
        else:
            lab.tag = "defective"
        lab.seconds = cost.estimate(lab)
        lab.seconds_estimated = dict(lab.seconds)
        labels.append(lab.validate())
    return ProtocolSplit(protocol, labels, [s.path for s in moved],
                         [s for s in ds.test if s.path not in drawn_set],
                         [s.path for s in drawn[n_anomalous:]])
