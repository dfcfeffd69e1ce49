"""Validation on real labelled defects (accuracy issue, part 4).

Synthetic validation defects do not rank checkpoints the way real defects do (decision 0014). When
the user has labelled defective images, some are held out of training (``train.real_val_fraction``
of them, at least one, once ``train.real_val_min_labelled`` are labelled) and checkpoints are
chosen on them instead; a stage may then also fall back to the model it started from (ResMixMatch
that does not help on held-out boxes keeps the unsupervised model).

The metric is block-level average precision (``val_real_ap``) where labels say where the defect
is (masks, block labels, boxes):
- positives: blocks labelled anomalous (masks, block labels) or unknown (inside a box);
- negatives: blocks labelled normal in those images (outside boxes and masks), and every block of
  the validation split's held-out normal images;
- blocks Eq. 14 leaves undecided are not scored.
Image tags say only *that* an image is defective: tagged images are scored at image level
(``val_real_image_auroc``: each image's highest block against the held-out normals' highest),
which is the selection metric when no held-out image has a located label.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.labels import BLOCK_ANOMALOUS, BLOCK_NORMAL, BLOCK_UNKNOWN


def split_labelled(labelled: list, fraction: float, min_labelled: int, seed: int) -> tuple[list, list]:
    """(train, held out): deterministic for a seed; nothing held out below ``min_labelled``."""
    n = len(labelled)
    if n < max(2, min_labelled) or fraction <= 0:
        return list(labelled), []
    n_val = min(n - 1, max(1, int(round(n * fraction))))
    rng = np.random.default_rng([seed, 4242])
    held = set(rng.choice(n, n_val, replace=False).tolist())
    return [x for i, x in enumerate(labelled) if i not in held], [x for i, x in enumerate(labelled) if i in held]


@torch.no_grad()
def validate_real(model, items, normals, bank_t: torch.Tensor, cfg, device) -> dict[str, float]:
    """``{"val_real_ap": block AP}`` over held-out labelled ``items`` and validation ``normals``."""
    from ..learning.training import block_maps   # training imports this module: import here
    from .metrics import image_auroc, pixel_ap
    if not items:
        return {}
    scores, labels, img_scores, img_labels = [], [], [], []
    located = []      # (scores, labels) of each held-out image with a located label
    model.eval()
    for it in list(items) + list(normals):
        p, _ = block_maps(model, it, bank_t, cfg, device)
        t = it.targets.numpy()
        if it.kind == "normal" or it.label_kind == "tag":
            img_scores.append(float(p.max()))
            img_labels.append(it.kind != "normal")
        if it.label_kind == "tag":
            continue
        pos = (t == BLOCK_ANOMALOUS) | (t == BLOCK_UNKNOWN)
        keep = pos | (t == BLOCK_NORMAL)
        scores.append(p[keep])
        labels.append(pos[keep])
        if it.kind != "normal":
            located.append((p[keep], pos[keep]))
    out = {}
    if scores:
        s, y = np.concatenate(scores), np.concatenate(labels)
        if y.any() and not y.all():
            out["val_real_ap"] = pixel_ap(s[None, None], y[None, None])
    if located and scores:
        # per held-out image: its blocks against every held-out normal block (a jury of images,
        # so that one image does not decide whether labels helped; see core/learning/training.py)
        neg = [s[~y] for s, y in zip(scores, labels)]
        per = []
        for s_i, y_i in located:
            if y_i.any():
                s = np.concatenate([s_i] + neg)
                y = np.concatenate([y_i] + [np.zeros(len(n), bool) for n in neg])
                per.append(pixel_ap(s[None, None], y[None, None]))
        out["per_image"] = per
    y_img = np.array(img_labels, bool)
    if y_img.any() and not y_img.all():
        s_img = np.array(img_scores)
        out["val_real_image_auroc"] = image_auroc(s_img, y_img)
        if "per_image" not in out:
            # per tagged image: the fraction of held-out normals it outscores
            out["per_image"] = [float((s_img[~y_img] < s).mean()) for s in s_img[y_img]]
    return out
