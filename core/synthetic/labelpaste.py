"""Label paste: the user's labelled defects, copied onto other normal images (accuracy issue, part 5).

A handful of labelled defective images is a handful of examples: the Swin sees each defect on one
background only. Pasting the labelled region of each one onto other training normals, at the same
place (so that objects keep their defects where they can occur), gives the model the same real
defect on several backgrounds, with labels that follow from the pasted region itself:

- a pixel mask (or block labels) pastes the defective pixels; the new image's block labels come
  from the pasted mask by Eq. 14, like the source's;
- boxes paste everything inside the boxes (the defect and whatever surrounds it); the new image's
  boxed blocks are unknown (Eq. 15) and ResMixMatch guesses them, like the source's;
- tags locate nothing and are not pasted.

The pasted region is slightly dilated and its edge feathered, so that the seam itself does not look
like a defect: the background immediately around a real defect comes along with it.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..data.geometry import BlockGrid
from ..data.labels import block_labels_from_box_coverage, block_labels_from_mask, mask_coverage


@dataclass
class Labelled:
    """A real labelled image at the model input size."""

    image: np.ndarray             # (h, w, 3) uint8, model input size
    targets: np.ndarray           # (rows, cols) int8 block labels
    kind: str                     # mask | blocks | boxes | tag
    name: str
    region: np.ndarray | None = None   # (h, w) bool: the labelled pixels (mask) or boxes' inside


def paste(src: np.ndarray, region: np.ndarray, dst: np.ndarray, feather_px: float) -> np.ndarray:
    """``src`` inside ``region`` over ``dst``; the edge feathered over about ``feather_px`` pixels."""
    if src.shape != dst.shape:
        raise ValueError(f"cannot paste a {src.shape} image onto a {dst.shape} one")
    m = region.astype(np.uint8)
    r = max(1, int(round(feather_px)))
    m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    alpha = cv2.GaussianBlur(m.astype(np.float32), (0, 0), max(0.5, feather_px / 2))
    alpha = np.maximum(alpha, region.astype(np.float32))[..., None]
    out = alpha * src.astype(np.float32) + (1 - alpha) * dst.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def pasted_targets(item: Labelled, eps_pos: float, eps_neg: float, v: float,
                   box_band: float | None = None) -> np.ndarray:
    grid = BlockGrid.at_input_size(item.image)
    if item.kind == "boxes":   # Eq. 15 with the ignore band, as for the source
        return block_labels_from_box_coverage(mask_coverage(item.region, grid), v, box_band)
    return block_labels_from_mask(item.region, grid, eps_pos, eps_neg)


def paste_labelled(items: list[Labelled], normals: list[np.ndarray], per_label: int, seed: int,
                   eps_pos: float, eps_neg: float, v: float, feather_px: float,
                   box_band: float | None = None) -> list[tuple[int, Labelled]]:
    """(index of the normal pasted onto, new labelled image) for each item with a region, onto
    ``per_label`` distinct normals of the same size (fewer if there are fewer), deterministic."""
    out = []
    for i, it in enumerate(items):
        if it.region is None or not it.region.any() or per_label <= 0:
            continue
        same = [j for j, n in enumerate(normals) if n.shape == it.image.shape]
        if not same:
            continue
        rng = np.random.default_rng([seed, 5151, i])
        for j in rng.choice(same, min(per_label, len(same)), replace=False):
            img = paste(it.image, it.region, normals[int(j)], feather_px)
            new = Labelled(img, np.zeros(0, np.int8), it.kind, f"{it.name}-pasted-on-{int(j)}", it.region)
            new.targets = pasted_targets(new, eps_pos, eps_neg, v, box_band)
            out.append((int(j), new))
    return out
