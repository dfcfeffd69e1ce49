"""Bank fitting at scale (issue 12, part 2): time, peak memory and coverage of the coreset.

    python -m bench.coreset --patches 409600 --dim 152

Features: real ones. PIPED images (every class's normals, then impurity images to fill up) are
encoded with the ``cpu`` preset in a child process (so the backbone's memory is not counted), at
256 px: 32 x 32 = 1024 patch features of 152 dims per image, i.e. what 400 images of 512 px give
at that preset. When more patches are asked for than the images give, the features are tiled with
a small jitter (1 % of each dimension's spread). ``--source clustered`` uses a random Gaussian
mixture instead (no data needed; less representative: real patches lie near a low-dimensional
surface).

Printed: the time and peak RSS of ``build_bank`` at the config's defaults (10 %, projection to 128
dims, cells of ``bank.coreset_cell`` points); coverage (mean / max Euclidean distance from every
patch to its nearest bank entry, in the original feature space) of the partitioned greedy against
PatchCore's plain greedy and a random subset on a ``--subset`` of the patches; the bank's size in
memory and on disk for ``--bank-images`` images.
"""
from __future__ import annotations

import argparse
import io
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "piped"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def encode_piped(data: Path, n_images: int, out: Path) -> None:
    """Child process: ``n_images`` PIPED images -> (n_images, 1024, 152) float32 in ``out``."""
    import torch
    from core.config import preset
    from core.data.datasets import prepare_image
    from core.data.images import read_image
    from core.embedding.features import Encoder
    cfg = preset("cpu")
    paths = sorted(data.glob("*/train/good/*.png")) + sorted(data.glob("*/test/good/*.png"))
    paths += sorted(data.glob("*/test/impurity/*.png"))
    if not paths:
        raise SystemExit(f"no PIPED images under {data}: give --data or use --source clustered")
    paths = paths[:n_images]
    imgs = [prepare_image(read_image(p), cfg.features.image_size, cfg.features.size_multiple) for p in paths]
    with torch.inference_mode():
        feats = Encoder(cfg.features, "cpu").encode(imgs)
    np.save(out, np.stack([f.reshape(-1, f.shape[-1]).numpy() for f in feats]).astype(np.float32))


def features(source: str, n_patches: int, dim: int, data: Path, seed: int) -> tuple[list[np.ndarray], str]:
    """Per-image feature arrays (1024 patches each) and a line saying what they are."""
    rng = np.random.default_rng(seed)
    per = 1024
    n_img = -(-n_patches // per)
    if source == "clustered":
        centres = rng.normal(0, 1, (256, dim)).astype(np.float32)
        lab = rng.integers(0, 256, n_img * per)
        f = centres[lab] + rng.normal(0, 0.3, (n_img * per, dim)).astype(np.float32)
        return list(f.reshape(n_img, per, dim)), "random Gaussian mixture, 256 clusters"
    if not any(data.glob("*/train/good/*.png")):
        raise SystemExit(f"no PIPED images under {data}: give --data or use --source clustered")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "feats.npy"
        subprocess.run([sys.executable, "-m", "bench.coreset", "--encode-to", str(out), "--data", str(data),
                        "--images", str(n_img)], check=True, cwd=ROOT)
        real = np.load(out)
    if real.shape[2] != dim:
        raise SystemExit(f"the cpu preset gives {real.shape[2]}-d features, --dim {dim} asked for")
    what = f"real: {len(real)} PIPED images encoded at the cpu preset"
    if len(real) < n_img:   # tile with jitter up to the count asked for
        spread = real.reshape(-1, dim).std(0) * 0.01
        extra = real[rng.integers(0, len(real), n_img - len(real))]
        extra = extra + rng.normal(0, 1, extra.shape).astype(np.float32) * spread
        real = np.concatenate([real, extra.astype(np.float32)])
        what += f", tiled with 1% jitter to {n_img}"
    return list(real), what


def coverage(feats: np.ndarray, idx: np.ndarray) -> tuple[float, float]:
    """(mean, max) Euclidean distance from every row of ``feats`` to the nearest of ``feats[idx]``."""
    import faiss
    index = faiss.IndexFlatL2(feats.shape[1])
    index.add(np.ascontiguousarray(feats[idx]))
    d2, _ = index.search(np.ascontiguousarray(feats), 1)
    d = np.sqrt(np.maximum(d2[:, 0], 0))
    return float(d.mean()), float(d.max())


def bank_bytes(bank) -> tuple[int, int]:
    """(in memory: features + owner + the faiss index's own copy, on disk: the saved state)."""
    import torch
    buf = io.BytesIO()
    torch.save(bank.state(), buf)
    mem = bank.features.nbytes * 2 + bank.owner.nbytes   # faiss IndexFlatL2 holds a second copy
    return mem, len(buf.getvalue())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--patches", type=int, default=409_600)
    p.add_argument("--dim", type=int, default=152)
    p.add_argument("--source", choices=["piped", "clustered"], default="piped")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--subset", type=int, default=50_000, help="patches for the coverage comparison")
    p.add_argument("--bank-images", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--encode-to", help=argparse.SUPPRESS)
    p.add_argument("--images", type=int, default=400, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.encode_to:
        return encode_piped(Path(a.data), a.images, Path(a.encode_to))

    import torch
    from core.config import BankConfig
    from core.embedding.bank import approximate_greedy_coreset, build_bank
    torch.set_num_threads(a.threads)
    b = BankConfig()
    per_image, what = features(a.source, a.patches, a.dim, Path(a.data), 0)
    n = sum(len(f) for f in per_image)
    print(f"features: {what}; {n} patches of {a.dim} dims; {a.threads} threads")
    rss0 = _peak_rss_mb()
    t = time.perf_counter()
    bank = build_bank(per_image, b.coreset_ratio, b.coreset_dim, b.coreset_starts, b.max_patches, 0,
                      cell_size=b.coreset_cell)
    dt = time.perf_counter() - t
    print(f"build_bank: {dt:.1f} s, {len(bank)} entries ({b.coreset_ratio:.0%}), cells of "
          f"{b.coreset_cell} points; peak RSS {_peak_rss_mb():.0f} MB (features alone: {rss0:.0f} MB)")

    rng = np.random.default_rng(1)
    all_f = np.concatenate(per_image)
    sub = all_f[np.sort(rng.choice(n, min(a.subset, n), replace=False))]
    k = max(1, round(len(sub) * b.coreset_ratio))
    print(f"coverage on {len(sub)} patches, {k} picked (distance to the nearest pick, original space):")
    # Cells of the default size, and as many cells as the full run had (smaller ones, so more
    # boundaries: the harder case, and the one the full run is in).
    full_cells = -(-n // b.coreset_cell)
    scaled = -(-len(sub) // full_cells)
    rows = [("plain greedy (PatchCore)", 0), (f"partitioned, cells of {b.coreset_cell}", b.coreset_cell),
            (f"partitioned, {full_cells} cells of {scaled}", scaled)]
    base = None
    for name, cell in rows:
        t = time.perf_counter()
        idx = approximate_greedy_coreset(torch.from_numpy(sub), k, b.coreset_dim, b.coreset_starts, 0,
                                         cell_size=cell)
        s = time.perf_counter() - t
        mean, mx = coverage(sub, idx)
        base = base or (mean, mx)
        print(f"  {name:32s} mean {mean:7.3f} ({mean / base[0]:.3f}x)  max {mx:7.3f} ({mx / base[1]:.3f}x)"
              f"  {s:6.1f} s")
    mean, mx = coverage(sub, rng.choice(len(sub), k, replace=False))
    print(f"  {'random subset':32s} mean {mean:7.3f} ({mean / base[0]:.3f}x)  max {mx:7.3f} ({mx / base[1]:.3f}x)")

    m = min(a.bank_images, len(per_image))
    bank = build_bank(per_image[:m], b.coreset_ratio, b.coreset_dim, b.coreset_starts, b.max_patches, 0,
                      cell_size=b.coreset_cell)
    mem, disk = bank_bytes(bank)
    print(f"bank of {m} images: {len(bank)} entries x {bank.dim} dims: {mem / 2**20:.1f} MiB in memory "
          f"(with the faiss copy), {disk / 2**20:.1f} MiB on disk")
    paper = a.bank_images * 64 * 64 * b.coreset_ratio * (1024 * 4 * 2 + 4)
    print(f"paper preset (512 px, 64 x 64 patches of 1024 dims), {a.bank_images} images: "
          f"{paper / 2**20:.0f} MiB in memory, {paper / 2 / 2**20:.0f} MiB on disk (computed)")


if __name__ == "__main__":
    main()
