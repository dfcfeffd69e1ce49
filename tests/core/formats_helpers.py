"""Synthetic images and labels for the format tests, and label comparison."""
from __future__ import annotations

from pathlib import Path

import zlib

import numpy as np

from core.data.images import write_png
from core.data.labels import BlockCells, ImageLabel, RotatedBox

W, H = 64, 48


def make_image(path: Path, w: int = W, h: int = H, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(path.name.encode()))
    write_png(path, (rng.integers(0, 40, (h, w, 3)) + value).astype(np.uint8))
    return path


def multi_component_mask() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[0:5, 0:3] = True            # touches the top-left corner
    m[20:30, 50:64] = True        # touches the right border
    m[47, 10] = True              # one pixel on the bottom border
    m[10:14, 20:22] = True
    m[14, 22] = True              # diagonal neighbour: same 8-connected component
    return m


def sample_labels(folder: Path) -> list[ImageLabel]:
    """One image per label situation, all 64x48, in ``folder``."""
    names = ["mask", "boxes", "blocks", "normal", "mixed", "emptymask"]
    paths = {n: make_image(folder / f"{n}.png") for n in names}
    mixed_mask = np.zeros((H, W), bool)
    mixed_mask[30:40, 5:9] = True
    return [
        ImageLabel(paths["mask"], W, H, mask=multi_component_mask(), seconds={"mask": 12.5}),
        ImageLabel(paths["boxes"], W, H, tag="defective", seconds={"boxes": 4.8, "tag": 0.75},
                   boxes=[RotatedBox(20.25, 10.5, 8, 4, 0), RotatedBox(30, 30, 12, 5, 30),
                          RotatedBox(45.5, 20, 10, 3.5, -45), RotatedBox(10, 35, 9, 6, 90),
                          RotatedBox(62, 3, 14, 6, 30)]),          # crosses the top-right border
        ImageLabel(paths["blocks"], W, H, blocks=BlockCells(256, 8, [(0, 0), (2, 3), (23, 31)]),
                   seconds={"blocks": 3.0}),
        ImageLabel(paths["normal"], W, H, tag="normal", seconds={"tag": 1.0}),
        ImageLabel(paths["mixed"], W, H, mask=mixed_mask, boxes=[RotatedBox(40, 12, 6, 6, 15)]),
        ImageLabel(paths["emptymask"], W, H, mask=np.zeros((H, W), bool)),
    ]


def by_image(labels) -> dict[Path, ImageLabel]:
    out = {}
    for lab in labels:
        key = Path(lab.image).resolve()
        assert key not in out, f"{key} came back twice"
        out[key] = lab
    return out


def same_polygon(a: RotatedBox, b: RotatedBox, tol: float = 1e-4) -> bool:
    """Equal as rectangles: every corner of one within tol of a corner of the other."""
    ca, cb = a.corners(), b.corners()
    d = np.hypot(ca[:, None, 0] - cb[None, :, 0], ca[:, None, 1] - cb[None, :, 1])
    return bool((d.min(axis=1) <= tol).all() and (d.min(axis=0) <= tol).all())


def assert_boxes_equal(got: list[RotatedBox], want: list[RotatedBox], tol: float = 1e-4) -> None:
    assert len(got) == len(want), f"{len(got)} boxes, expected {len(want)}"
    unmatched = list(got)
    for w in want:
        match = next((g for g in unmatched if same_polygon(g, w, tol)), None)
        assert match is not None, f"no box equal to {w.as_dict()} in {[g.as_dict() for g in got]}"
        unmatched.remove(match)
