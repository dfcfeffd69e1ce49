"""PosFAR residuals (bank.search = posfar; WeakREST, method.md component 17): speed and accuracy
against the exact search.

    python -m bench.posfar --threads 1

Speed: a bank of 400 PIPED images' real features at the cpu preset (32 x 32 patches of 152 dims,
i.e. 400 images of 512 px at that preset; bench/coreset.py encodes them), 10 % coreset; 16 other
images are searched: the median ms per image of ``MemoryBank.nearest`` exact and with PosFAR, and
how often PosFAR finds the exact nearest entry (and how much farther its pick is when it does not).

Accuracy: the unsupervised SemiREST models the benchmark kept (``runs/bench/<class>-unsup-0.pt``,
trained with exact residuals) score their class's test images with the exact search and with
PosFAR at inference. PIPED classes have 24 normals, fewer than PosFAR's 64: ``--images`` (default
8) makes it restrict the search, so the AP change is measured where it bites.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "piped"


def speed(data: Path, bank_images: int, queries: int, settings: list[tuple[int, float]]) -> list[str]:
    import torch
    from core.config import BankConfig
    from core.embedding.bank import build_bank
    from .coreset import features
    per_image, what = features("piped", (bank_images + queries) * 1024, 152, data, 0)
    b = BankConfig()
    bank = build_bank(per_image[:bank_images], b.coreset_ratio, b.coreset_dim, b.coreset_starts,
                      b.max_patches, 0, cell_size=b.coreset_cell)
    qs = [torch.from_numpy(f) for f in per_image[bank_images:bank_images + queries]]
    lines = [f"features: {what}; bank of {bank_images} images: {len(bank)} entries; "
             f"{len(qs)} query images of {len(qs[0])} patches", "",
             "| search | ms per image (median) | same nearest entry as exact | mean distance / exact |",
             "|---|---|---|---|"]
    exact = None
    for images, pca in [(0, 0.0)] + settings:
        bank.use(BankConfig(search="posfar" if images else "exact", posfar_images=max(images, 1),
                            posfar_pca=pca))
        bank.nearest(qs[0])                                     # faiss index / PCA built once
        ms, out = [], []
        for q in qs:
            t = time.perf_counter()
            out.append(bank.nearest(q))
            ms.append((time.perf_counter() - t) * 1000)
        if exact is None:
            exact = out
            name, same, ratio = "exact (faiss IndexFlatL2)", 1.0, 1.0
        else:
            name = f"PosFAR, {images} images" + (f", PCA {pca:.0%}" if pca else "")
            same = float(np.mean([(i == ei).mean() for (_, i), (_, ei) in zip(out, exact)]))
            ratio = float(np.mean([d.mean() / max(ed.mean(), 1e-12) for (d, _), (ed, _) in zip(out, exact)]))
        lines.append(f"| {name} | {np.median(ms):.1f} | {same:.1%} | {ratio:.4f} |")
    return lines


def accuracy(data: Path, models: Path, images: int, pca: float) -> list[str]:
    import torch
    from core import api
    from core.data.datasets import load_mvtec, prepare_image, read_images
    from core.deploy.modelfile import ModelBundle
    lines = ["| class | exact AP | PosFAR AP | change | exact ms/img search | PosFAR ms/img search |",
             "|---|---|---|---|---|---|"]
    diffs = []
    for path in sorted(models.glob("PA_*-unsup-0.pt")):
        cat = path.name.split("-unsup")[0]
        ds = load_mvtec(data, cat)
        b = ModelBundle.load(path)
        names = b.training.get("bank_images") or []
        by_name = {p.name: p for p in ds.train}
        if not names or any(n not in by_name for n in names):
            continue
        f = b.config.features
        enc = b.encoder("cpu")
        with torch.inference_mode():
            feats = enc.encode([prepare_image(i, f.image_size, f.size_multiple)
                                for i in read_images([by_name[n] for n in names])])
        b.bank_state["image_desc"] = torch.stack([x.reshape(-1, x.shape[-1]).mean(0) for x in feats])
        res = {}
        for search in ("exact", "posfar"):
            b.config = b.config.updated({"bank": {"search": search, "posfar_images": images, "posfar_pca": pca}})
            r = api.evaluate(b, data, samples=ds.test, device="cpu")
            res[search] = (r.metrics["pixel_ap"], r.timings_ms.get("search", float("nan")))
        (e, te), (p, tp) = res["exact"], res["posfar"]
        diffs.append(p - e)
        lines.append(f"| {cat} | {100 * e:.1f} | {100 * p:.1f} | {100 * (p - e):+.2f} | {te:.1f} | {tp:.1f} |")
    if diffs:
        lines.append(f"| **mean change** | | | **{100 * np.mean(diffs):+.2f}** | | |")
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--models", default=str(ROOT / "runs" / "bench"))
    p.add_argument("--images", type=int, default=8, help="PosFAR images for the accuracy part")
    p.add_argument("--pca", type=float, default=0.95)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-speed", action="store_true")
    a = p.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    if not a.skip_speed:
        print("\n".join(speed(Path(a.data), 400, 16, [(64, 0.0), (64, a.pca), (16, a.pca)])))
        print()
    print(f"PosFAR at inference, {a.images} of 24 training images, PCA {a.pca:.0%}:")
    print("\n".join(accuracy(Path(a.data), Path(a.models), a.images, a.pca)))


if __name__ == "__main__":
    main()
