"""The known-defect bank (decision 0025): what the user's located labels teach without training.

The Swin learns from a handful of labelled defects only through a few hundred gradient steps, and on
the dev classes that bought about 2 points of pixel AP. The labelled blocks themselves say more:
a test block that looks like a block the user marked defective is likely defective too, whatever
the Swin learnt. So the features of every block a label marks anomalous (masks and block labels as
labelled; boxes through their pseudo-masks, decision 0015) are kept beside the bank of normals,
and each block of a new image gets

    g = d_n / (d_n + d_k)

with ``d_n`` its distance to the nearest normal bank entry (computed anyway for the residual) and
``d_k`` its distance to the nearest known-defect block: 0 far from every known defect, 1/2 halfway,
near 1 on a known defect's twin. It is a nearest-neighbour posterior that needs no scale. The map's
block score ``s`` (the Swin's probability, fused with the distance: core/learning/fusion.py) becomes

    s' = (s + w * g) / (1 + w)          (w = train.known_defects_weight; 0: off)

which stays in [0, 1] for a probability ``s``. ``w`` is one constant, not chosen per model: the
held-out labelled images favoured ever larger weights while test AP fell beyond w = 2 on every dev
class (the held-out images' defects are the labelled ones' kin; the test's normal images are many),
so no validation split here can choose it (numbers in decision 0025).

A tag says only that an image has a defect somewhere. The model scores such images as defective
(image AUROC about 99% on the dev classes), and its highest block is where the defect most likely
is: each defective-tagged image adds its ``train.known_defects_per_tag`` [1] highest blocks by the
trained Swin's probability, if they score above every block of the held-out normal images. Where
the model cannot tell a tagged image from the normals, its highest block is no evidence of where
the defect is, and the image adds nothing (a weak model's guesses lowered block AP; the floor is
what keeps them out). Measured on the dev classes without retraining (decision 0025), one block
per tagged image gained as much as every block of the same images' masks.

Masks, block labels and boxes add at most ``train.known_defects_per_image`` [3] blocks an image: its
labelled blocks farthest from the normal bank. Every labelled block made banks of hundreds to
thousands of blocks on large defects (fibres), and such a bank lifted normal blocks by chance
(g rises with every entry): at 20 labelled images it cost 1.4-2.0 points on PA_BRG03_TL where the
cap gained 3.1-3.6 on the same models (decision 0025, last section).
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.labels import BLOCK_ANOMALOUS, BLOCK_UNKNOWN


def is_defective_tag(it) -> bool:
    """A TokenImage tagged defective: every block unknown, nothing located."""
    return it.label_kind == "tag" and bool((it.targets == BLOCK_UNKNOWN).all())


def exemplars(items, max_entries: int, seed: int = 0, score=None, per_tag: int = 0,
              tag_floor: float = -np.inf, rank=None, per_image: int = 0) -> np.ndarray:
    """(k, d) float32 features of the blocks labelled anomalous in ``items`` (TokenImages) and,
    with ``score`` (TokenImage -> (rows, cols) block scores), the ``per_tag`` highest-scored blocks
    of each defective-tagged image among those scored above ``tag_floor``; at most ``max_entries``
    rows (a greedy k-centre choice beyond that, as the bank's coreset); (0, d) without any.
    With ``per_image`` > 0 and ``rank`` (TokenImage -> (rows, cols), higher first), an image with
    located labels adds only its ``per_image`` highest-ranked anomalous blocks."""
    rows = []
    for it in items:
        flat = it.feats.reshape(-1, it.feats.shape[-1])
        if is_defective_tag(it):
            if score is not None and per_tag > 0:
                s = torch.as_tensor(np.asarray(score(it), np.float32)).reshape(-1)
                top = torch.topk(s, min(per_tag, s.numel())).indices
                top = top[s[top] > tag_floor]
                rows.append(flat[top].float())
        elif per_image > 0 and rank is not None:
            bad = (it.targets == BLOCK_ANOMALOUS).reshape(-1)
            if bad.any():
                r = torch.as_tensor(np.asarray(rank(it), np.float32)).reshape(-1)
                r = torch.where(bad, r, torch.full_like(r, -np.inf))
                top = torch.topk(r, min(per_image, int(bad.sum()))).indices
                rows.append(flat[top].float())
        else:
            rows.append(it.feats[it.targets == BLOCK_ANOMALOUS].float())
    rows = [r for r in rows if len(r)]
    if not rows:
        d = items[0].feats.shape[-1] if items else 0
        return np.zeros((0, d), np.float32)
    feats = torch.cat(rows)
    if len(feats) > max_entries:
        from ..embedding.bank import approximate_greedy_coreset
        feats = feats[torch.from_numpy(approximate_greedy_coreset(feats, max_entries, seed=seed))]
    return np.ascontiguousarray(feats.numpy(), np.float32)


def closeness(d_normal, d_known):
    """g = d_n / (d_n + d_k) per block (numpy arrays or torch tensors alike): 0 where a block is
    on a normal entry, 1 where it is on a known defect."""
    return d_normal / (d_normal + d_known + 1e-12)


def with_known(score, g, weight: float):
    """The map's block score with the known-defect closeness mixed in (numpy or torch alike)."""
    if weight == 0:
        return score
    return (score + weight * g) / (1.0 + weight)
