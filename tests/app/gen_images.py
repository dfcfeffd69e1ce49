"""Small synthetic images for the app tests (no dependence on ../shared/data)."""
from pathlib import Path

import cv2
import numpy as np

from core.data.images import write_mask, write_png


def make_image(path: Path, width: int = 64, height: int = 48, seed: int = 0) -> Path:
    """A textured RGB PNG with a dark blob, so screenshots show something."""
    rng = np.random.default_rng(seed)
    img = (rng.integers(90, 160, size=(height, width, 3))).astype(np.uint8)
    img = cv2.GaussianBlur(img, (5, 5), 0)
    cv2.circle(img, (width // 3, height // 2), max(2, min(width, height) // 8), (30, 30, 40), -1)
    write_png(path, img)
    return path


def make_folder(folder: Path, n: int = 3, width: int = 64, height: int = 48) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [make_image(folder / f"img_{i:03d}.png", width, height, seed=i) for i in range(n)]


def synthetic_mvtec(root: Path) -> Path:
    """An MVTec-layout category ``root/widget``: 3 train/good, 2 test/good, 2 test/scratch
    (40 x 32 px) with their ground-truth masks."""
    cat = root / "widget"
    make_folder(cat / "train" / "good", 3, 40, 32)
    make_folder(cat / "test" / "good", 2, 40, 32)
    make_folder(cat / "test" / "scratch", 2, 40, 32)
    for i in range(2):
        m = np.zeros((32, 40), bool)
        m[5 + i: 12 + i, 8:20] = True
        write_mask(cat / "ground_truth" / "scratch" / f"img_{i:03d}_mask.png", m)
    return cat
