"""Datasets: the MVTec AD folder layout, image preparation, and the train / validation split.

MVTec layout::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/<kind>/*.png               (kind "good" or a defect type)
    <root>/<category>/ground_truth/<kind>/<stem>_mask.png    (255 = defect)

Errors name the folder or file and the problem (missing folders, empty train folder, a defect
image without its mask, a mask of the wrong size).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import DatasetError, ImageReadError
from .geometry import model_input_size
from .images import list_images, read_image, read_mask


@dataclass(frozen=True)
class Sample:
    path: Path
    kind: str = "good"              # "good" or the defect type
    mask_path: Path | None = None

    @property
    def is_anomalous(self) -> bool:
        return self.kind != "good"

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.path.name}"


@dataclass
class MVTecCategory:
    root: Path
    name: str
    train: list[Path]
    test: list[Sample] = field(default_factory=list)

    @property
    def defect_kinds(self) -> list[str]:
        return sorted({s.kind for s in self.test if s.is_anomalous})


def load_mvtec(data_dir: str | Path, category: str | None = None, need_test: bool = True) -> MVTecCategory:
    """Index an MVTec-layout category. ``category`` None means ``data_dir`` is the category folder."""
    root = Path(data_dir) / category if category else Path(data_dir)
    if not root.is_dir():
        raise DatasetError(root, "category folder not found")
    train_dir = root / "train" / "good"
    if not train_dir.is_dir():
        raise DatasetError(train_dir, "missing: an MVTec-layout category needs train/good with normal images")
    train = list_images(train_dir)
    if not train:
        raise DatasetError(train_dir, "holds no images (.png, .jpg, .bmp, .tif): nothing to learn normality from")
    test: list[Sample] = []
    test_dir = root / "test"
    if test_dir.is_dir():
        for kind_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
            kind = kind_dir.name
            for img in list_images(kind_dir):
                mask = None
                if kind != "good":
                    mask = root / "ground_truth" / kind / f"{img.stem}_mask.png"
                    if not mask.is_file():
                        raise DatasetError(mask, f"missing: the ground-truth mask of test image {img}")
                test.append(Sample(img, kind, mask))
    if need_test and not test:
        raise DatasetError(test_dir, "holds no test images (test/<kind>/*.png)")
    return MVTecCategory(root, root.name, train, test)


def load_sample_mask(sample: Sample, hw: tuple[int, int]) -> np.ndarray:
    """Ground-truth mask of a test sample (all False for good images), checked against the image size."""
    if sample.mask_path is None:
        return np.zeros(hw, bool)
    return read_mask(sample.mask_path, expected_hw=hw)


def prepare_image(img: np.ndarray, image_size: int, multiple: int = 64) -> np.ndarray:
    """Resize a uint8 RGB image to the model input size (component 1)."""
    h, w = img.shape[:2]
    return resize_to_input(img, *model_input_size(w, h, image_size, multiple))


def resize_to_input(img: np.ndarray, w_in: int, h_in: int) -> np.ndarray:
    """Resize to a given model input size as :func:`prepare_image` does (area when shrinking,
    bilinear when enlarging); an exported model (core/deploy/export.py) has one fixed input size."""
    h, w = img.shape[:2]
    if (w_in, h_in) == (w, h):
        return img
    interp = cv2.INTER_AREA if w_in < w else cv2.INTER_LINEAR
    return cv2.resize(img, (w_in, h_in), interpolation=interp)


def read_images(paths: list[Path]) -> list[np.ndarray]:
    """Read every image; failures are collected so one error lists every bad file."""
    out, bad = [], []
    for p in paths:
        try:
            out.append(read_image(p))
        except ImageReadError as exc:
            bad.append(exc)
    if len(bad) == 1:
        raise bad[0]
    if bad:
        raise ImageReadError(None, f"{len(bad)} images cannot be read:\n  " + "\n  ".join(map(str, bad)))
    return out


def split_train_val(paths: list[Path], fraction: float, min_val: int, seed: int) -> tuple[list[Path], list[Path]]:
    """Hold out ``fraction`` of the training normals (at least ``min_val``, leaving at least 2 for
    the bank) for checkpoint selection. Deterministic for a seed."""
    n = len(paths)
    n_val = max(min_val, int(round(n * fraction)))
    n_val = min(n_val, n - 2) if n > 2 else 0
    if n_val <= 0:
        return list(paths), []
    rng = np.random.default_rng(seed)
    val_idx = set(rng.choice(n, n_val, replace=False).tolist())
    train = [p for i, p in enumerate(paths) if i not in val_idx]
    val = [p for i, p in enumerate(paths) if i in val_idx]
    return train, val
