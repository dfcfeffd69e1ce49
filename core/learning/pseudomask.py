"""Boxes -> pseudo-masks: hard block labels inside the user's boxes, from the model the labels
start from (accuracy issue, part 5; decision 0015).

ResMixMatch (core/learning/resmixmatch.py) guesses the blocks inside boxes from the model being trained. On
the PIPED dev classes its last state lost 7-15 points of pixel AP against the unsupervised model it
started from: the guesses follow the model, the model follows the guesses, and the positive region
grows to the box (pixel AUROC and PRO stay, precision goes). A box says *that* a defect lies inside
it; which blocks are defective is decided here once, before training, and never revised:

- belief of a block = the start model's probability (``semi.pseudo_belief = swin``, decision
  0022). ``max`` takes the larger of it and a nearest-neighbour distance belief (0 at the median
  distance of held-out normal blocks, 1 at their 99th percentile, the fusion's reference, linear
  between): it finds specks the Swin is unsure of, but around thin fibres the distance of the
  normal blocks beside the fibre is high too (the backbone's receptive field), so on PA_BRG03_TL
  more than half of its boxed positives were normal blocks (precision 0.44 against the true
  masks, the Swin's alone 0.84) and the fine-tuned model lost to its start;
- inside a box, blocks with belief >= ``threshold`` are anomalous; every box keeps at least its
  most believed block (a box is drawn around a defect); the rest of the box carries no label
  (Eq. 14's ignore band), the outside of the boxes stays normal (Eq. 15).

The result is trained like masks (Eq. 11), so boxes get Sup's recipe with the uncertain blocks left
out. Image tags locate nothing: they stay with ResMixMatch.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from ..data.labels import BLOCK_ANOMALOUS, BLOCK_IGNORE, BLOCK_UNKNOWN
from .fusion import distance_reference
from .training import Trainer, block_maps


def distance_belief(d: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 up to ``lo``, 1 from ``hi``, linear between."""
    return np.clip((d - lo) / max(hi - lo, 1e-12), 0, 1)


@torch.no_grad()
def pseudo_masks(model, material, cfg, device, threshold: float) -> int:
    """Rewrite the targets of box-labelled training images (``material.defective`` with
    ``label_kind == "boxes"``) in place; returns how many images were rewritten."""
    bank_t = torch.from_numpy(material.bank.features).to(device)
    ref = [it for it in material.val if it.kind == "normal"] or material.normals
    ref_d = [block_maps(model, it, bank_t, cfg, device)[1] for it in ref]
    lo, hi = float(np.median(np.concatenate([d.ravel() for d in ref_d]))), distance_reference(ref_d)
    model.eval()
    n = 0
    for it in material.defective:
        if it.label_kind != "boxes":
            continue
        t = it.targets.numpy()
        unknown = t == BLOCK_UNKNOWN
        if not unknown.any():
            continue
        p, d = block_maps(model, it, bank_t, cfg, device)
        belief = p if cfg.semi.pseudo_belief == "swin" else np.maximum(p, distance_belief(d, lo, hi))
        new = t.copy()
        new[unknown] = BLOCK_IGNORE
        new[unknown & (belief >= threshold)] = BLOCK_ANOMALOUS
        count, comp = cv2.connectedComponents(unknown.astype(np.uint8), connectivity=8)
        for c in range(1, count):   # every box region keeps at least its most believed block
            cells = comp == c
            if not (new[cells] == BLOCK_ANOMALOUS).any():
                r, q = np.unravel_index(np.argmax(np.where(cells, belief, -1.0)), belief.shape)
                new[r, q] = BLOCK_ANOMALOUS
        it.targets = torch.from_numpy(new)
        n += 1
    return n


def _rows(a: np.ndarray) -> list[str]:
    return ["".join("1" if v else "0" for v in row) for row in a]


def pseudo_mask_record(boxed: list[np.ndarray], material) -> list[dict]:
    """What the model file keeps of the pseudo-masks: per box-labelled image of
    ``material.defective`` (in its order; ``boxed``: their blocks inside boxes, the unknown blocks
    before :func:`pseudo_masks`), its file name, those blocks and the ones made defective, each as
    rows of "0"/"1". Small (a character a block); it lets the benchmark score the pseudo-masks
    against true masks (bench/job.py) and tells what a box taught. A list, not a dict by name: two
    labelled images may share a file name (test/crack/000.png, test/hole/000.png)."""
    items = [it for it in material.defective if it.label_kind == "boxes"]
    if len(items) != len(boxed):
        raise ValueError(f"{len(boxed)} box regions for {len(items)} box-labelled images")
    return [{"name": it.name, "boxed": _rows(b), "defective": _rows(b & (it.targets.numpy() == BLOCK_ANOMALOUS))}
            for it, b in zip(items, boxed)]


def read_rows(rows: list[str]) -> np.ndarray:
    """:func:`pseudo_mask_record`'s rows back to a boolean array."""
    return np.array([[c == "1" for c in r] for r in rows], dtype=bool).reshape(len(rows), -1)


class PseudoMaskTrainer(Trainer):
    """The stage that trains on pseudo-masks: Eq. 11 like masks (core/learning/training.py), for
    ``semi.steps`` steps from the model the labels start from, which stays a candidate."""

    stage = "boxes (pseudo-masks)"
    total_steps = property(lambda self: self.cfg.semi.steps)
