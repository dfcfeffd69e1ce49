"""The embedded demo: make a small inspection dataset, train with the ``cpu`` preset, evaluate.

    python -m core.demo [--out runs/demo] [--steps N] [--device auto]

The dataset is generated here (no download, no outside data): 128 x 128 images of a fibrous,
paper-like surface; defects are dark specks, dark fibres and pale blotches, with exact masks, in
the MVTec AD layout. The run prints which backbone it uses, progress per stage, the four metrics,
and writes heatmaps and overlays for the test images.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from .data.images import write_mask, write_png

SIZE = 128


def _smooth_noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    small = rng.standard_normal((max(2, size // scale),) * 2).astype(np.float32)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def surface(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A paper-like surface: a base tint, multi-scale mottling and faint light fibres."""
    base = np.array([196, 184, 150], np.float32) + rng.normal(0, 4, 3)
    mott = sum(_smooth_noise(rng, size, s) * a for s, a in ((32, 5.0), (8, 3.0), (2, 2.0)))
    img = base[None, None, :] + mott[..., None]
    fib = np.zeros((size, size), np.float32)
    for _ in range(rng.integers(15, 30)):
        p = rng.uniform(0, size, 2)
        ang = rng.uniform(0, np.pi)
        length = rng.uniform(5, 25)
        q = p + length * np.array([np.cos(ang), np.sin(ang)])
        cv2.line(fib, tuple(int(v) for v in p), tuple(int(v) for v in q), 1.0, 1, cv2.LINE_AA)
    img += 6.0 * cv2.GaussianBlur(fib, (0, 0), 0.7)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def add_defect(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One to three defects: dark speck, dark fibre or pale blotch. Returns (image, mask)."""
    size = img.shape[0]
    out = img.astype(np.float32)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(1, 4)):
        m = np.zeros((size, size), np.uint8)
        kind = rng.choice(["speck", "fibre", "blotch"], p=[0.5, 0.3, 0.2])
        c = tuple(int(v) for v in rng.uniform(12, size - 12, 2))
        if kind == "speck":
            axes = tuple(int(v) for v in rng.uniform(2, 5, 2))
            cv2.ellipse(m, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            color = rng.uniform(30, 80)
        elif kind == "fibre":
            pts = [np.array(c, float)]
            ang = rng.uniform(0, 2 * np.pi)
            for _ in range(6):
                ang += rng.normal(0, 0.4)
                pts.append(pts[-1] + 4 * np.array([np.cos(ang), np.sin(ang)]))
            cv2.polylines(m, [np.array(pts, np.int32)], False, 1, int(rng.integers(1, 3)))
            color = rng.uniform(50, 100)
        else:
            axes = tuple(int(v) for v in rng.uniform(4, 9, 2))
            cv2.ellipse(m, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            color = rng.uniform(225, 250)
        soft = cv2.GaussianBlur(m.astype(np.float32), (0, 0), 0.8)[..., None]
        out = out * (1 - soft) + color * soft
        mask |= m
    return np.clip(out, 0, 255).astype(np.uint8), mask.astype(bool)


def make_dataset(root: str | Path, n_train: int = 20, n_good: int = 8, n_bad: int = 12, seed: int = 0) -> Path:
    """Write an MVTec-layout category ``root/demo`` and return its path."""
    cat = Path(root) / "demo"
    rng = np.random.default_rng(seed)
    for i in range(n_train):
        write_png(cat / "train" / "good" / f"{i:03d}.png", surface(rng))
    for i in range(n_good):
        write_png(cat / "test" / "good" / f"{i:03d}.png", surface(rng))
    for i in range(n_bad):
        img, mask = add_defect(surface(rng), rng)
        write_png(cat / "test" / "defect" / f"{i:03d}.png", img)
        write_mask(cat / "ground_truth" / "defect" / f"{i:03d}_mask.png", mask)
    return cat


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--steps", type=int, help="training steps (default: the cpu preset's)")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    from . import api
    from .cli import _metrics_table
    from .config import preset
    from .progress import TqdmRenderer

    out = Path(args.out)
    t0 = time.perf_counter()
    cat = make_dataset(out / "data")
    print(f"demo dataset: {cat} (20 normal training images, 8 normal + 12 defective test images)")
    cfg = preset("cpu")
    if args.steps:
        cfg = cfg.updated({"train": {"steps": args.steps}})
    render = TqdmRenderer()
    bundle = api.train(cat, None, out / "model.pt", cfg, args.device, progress=render, resume=False)
    render.close()
    print(f"model: {out / 'model.pt'}: {bundle.summary()}")
    res = api.evaluate(bundle, cat, device=args.device, progress=render)
    render.close()
    api.predict(bundle, cat / "test" / "defect", out / "heatmaps", args.device, progress=render)
    render.close()
    print(_metrics_table(res.metrics, f"demo test set ({res.n_images} images)"))
    print(f"heatmaps and overlays: {out / 'heatmaps'}; total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
