"""A benchmark category of many image sizes, derived from a PIPED class (issue 14, part 1).

Real inspection sets mix sizes and aspect ratios (one public surface-defect set has about 400
different sizes, from 113x288 to 599x244, in grayscale); the PIPED dev classes are all 128 x 128.
:func:`derive` turns a PIPED class into such a set, deterministically: every image (and its mask,
the same way) is cropped to a random 45-100 % of each side, stretched to a random longest side of
96-320 px and a random aspect ratio change of 0.6-1.6, and made grayscale. A defective test image's
crop keeps at least half of its defect. The images and defects are the real ones; only their frame
changes. The derived category is named ``MIXED_<class>`` and lives under the benchmark's work folder.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

PREFIX = "MIXED_"
VERSION = 1          # of the derivation; a change rebuilds derived sets


def _frame(rng: np.random.Generator, h: int, w: int, mask: np.ndarray | None):
    """(y, x, ch, cw, out_w, out_h): a crop keeping >= half of the mask, and its new size."""
    for _ in range(50):
        ch, cw = int(rng.integers(int(0.45 * h), h + 1)), int(rng.integers(int(0.45 * w), w + 1))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        if mask is None or mask[y:y + ch, x:x + cw].sum() * 2 >= mask.sum():
            break
    else:
        y, x, ch, cw = 0, 0, h, w
    longest = float(rng.uniform(96, 320))
    aspect = (cw / ch) * float(rng.uniform(0.6, 1.6))
    out_w, out_h = (longest, longest / aspect) if aspect >= 1 else (longest * aspect, longest)
    return y, x, ch, cw, max(16, int(round(out_w))), max(16, int(round(out_h)))


def derive(src: Path, dst_root: Path, seed: int = 0) -> Path:
    """``dst_root/MIXED_<src.name>`` in MVTec layout (rebuilt only when absent or outdated)."""
    src, dst = Path(src), Path(dst_root) / f"{PREFIX}{Path(src).name}"
    stamp = dst / "derived.json"
    meta = {"source": src.name, "seed": seed, "version": VERSION}
    if stamp.exists() and json.loads(stamp.read_text()) == meta:
        return dst
    from core.data.images import read_image, read_mask, write_mask, write_png
    from core.fileio import atomic_write_text
    rng = np.random.default_rng(seed)
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if not p.is_file() or rel.parts[0] not in ("train", "test"):
            continue
        img = read_image(p)
        m_src = src / "ground_truth" / rel.parts[1] / f"{p.stem}_mask.png"
        mask = read_mask(m_src, img.shape[:2]) if rel.parts[0] == "test" and m_src.exists() else None
        y, x, ch, cw, ow, oh = _frame(rng, *img.shape[:2], mask)
        gray = cv2.cvtColor(img[y:y + ch, x:x + cw], cv2.COLOR_RGB2GRAY)
        write_png(dst / rel, cv2.resize(gray, (ow, oh), interpolation=cv2.INTER_AREA), rgb=False)
        if mask is not None:
            crop = mask[y:y + ch, x:x + cw].astype(np.uint8)
            write_mask(dst / "ground_truth" / rel.parts[1] / f"{p.stem}_mask.png",
                       cv2.resize(crop, (ow, oh), interpolation=cv2.INTER_NEAREST) > 0)
    atomic_write_text(stamp, json.dumps(meta))
    return dst


def size_summary(category: Path) -> dict:
    """How varied a category's image sizes are: distinct sizes, and the extremes (w x h)."""
    sizes = []
    for p in sorted((Path(category) / "train").rglob("*")) + sorted((Path(category) / "test").rglob("*")):
        if p.is_file():
            img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            if img is not None:
                sizes.append((img.shape[1], img.shape[0]))
    if not sizes:
        return {}
    area = sorted(sizes, key=lambda s: s[0] * s[1])
    aspect = sorted(sizes, key=lambda s: s[0] / s[1])
    return {"images": len(sizes), "distinct": len(set(sizes)), "smallest": list(area[0]),
            "largest": list(area[-1]), "tallest": list(aspect[0]), "widest": list(aspect[-1])}
