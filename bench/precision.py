"""bfloat16 against float32 inference (``--precision``, core/deploy/precision.py, decision 0024) on
the bench's unsupervised SemiREST models: per class, pixel AP and image AUROC of each precision on
the whole test split (``api.evaluate``: the bench's scoring), the largest map difference between
them, and the speed of both from one run (bench/speed.py: whole inference against the backbone
alone at batch 1 and 8, with and without bagging, all settings interleaved).

    python -m bench.precision --data ../shared/data/piped --workdir runs/bench [--classes C ...]

It reads the models the unsupervised wave keeps (``runs/bench/<class>-unsup-0.pt``), writes
``docs/bench-results/precision/<class>.json`` and the report (bench/report.py) makes a table.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .quantize import kept_models_run

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "bench-results" / "precision"
LOW = "bfloat16"          # the precision compared with float32


def measure(model: Path, data: Path, category: str, threads: int, n_timed: int = 24) -> dict:
    from core import api
    from core.data.datasets import load_mvtec
    from core.data.images import read_image
    from core.deploy.modelfile import ModelBundle
    from .speed import BATCHES, measure as speed

    bundle = ModelBundle.load(model)
    out: dict = {"category": category, "model": model.name, "threads": threads}
    samples = load_mvtec(data, category).test
    for prec in ("float32", LOW):
        out[prec] = {"metrics": api.evaluate(bundle, data, samples=samples, device="cpu",
                                             precision=prec).metrics}
    imgs = [read_image(s.path) for s in samples[:n_timed]]
    from core.deploy.inference import Predictor
    ref, low = (Predictor(bundle, "cpu", precision=p) for p in ("float32", LOW))
    out["max_abs_map_diff"] = max(float(np.abs(a.anomaly_map - b.anomaly_map).max())
                                  for a, b in zip(ref.predict_batch(imgs), low.predict_batch(imgs)))
    need = max(BATCHES)
    timed = (imgs * -(-need // len(imgs)))[:max(need, len(imgs))]   # a small test split: repeated
    out["speed"] = speed(bundle, timed, "cpu", precisions=("float32", LOW))
    return out


def _row(r: dict, batch: int, bagging: bool, prec: str) -> dict:
    return next(x for x in r["speed"]["rows"]
                if x["batch"] == batch and x["bagging"] == bagging and x["precision"] == prec)


def table(results: Path = RESULTS) -> list[str]:
    """The report's table (empty without results)."""
    from .report import machine_line
    rows = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))] if results.is_dir() else []
    if not rows:
        return []
    lines = [f"| class | batch | backbone ms | whole, bagging: float32 / {LOW} ms (ratio) | "
             f"whole, no bagging: float32 / {LOW} ms (ratio) | pixel AP float32 / {LOW} | "
             f"image AUROC float32 / {LOW} | max map diff |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f, q = r["float32"]["metrics"], r[LOW]["metrics"]
        for b in sorted({x["batch"] for x in r["speed"]["rows"]}):
            cells = []
            for bag in (True, False):
                a, z = _row(r, b, bag, "float32"), _row(r, b, bag, LOW)
                cells.append(f"{a['ms']:.1f} ({a['ratio']:.2f}x) / {z['ms']:.1f} ({z['ratio']:.2f}x)")
            acc = (f"{100 * f['pixel_ap']:.1f} / {100 * q['pixel_ap']:.1f} | "
                   f"{100 * f['image_auroc']:.1f} / {100 * q['image_auroc']:.1f} | "
                   f"{r['max_abs_map_diff']:.4f}") if b == 1 else " | | "
            lines.append(f"| {r['category']} | {b} | {_row(r, b, True, 'float32')['backbone_ms']:.1f} | "
                         f"{cells[0]} | {cells[1]} | {acc} |")
    mean = lambda get: float(np.mean([get(r) for r in rows]))   # noqa: E731
    gain = mean(lambda r: r[LOW]["metrics"]["pixel_ap"] - r["float32"]["metrics"]["pixel_ap"])
    ratio = {(b, bag): float(np.median([_row(r, b, bag, LOW)["ratio"] for r in rows]))
             for b in (1, 8) for bag in (True, False)}
    return [f"`--precision {LOW}`: the Swin under autocast, backbone and search in float32 "
            f"(decision 0024). torch, {rows[0]['threads']} thread(s), CPU; ms per image as bench/speed.py "
            "measures them, every setting interleaved in one run per class; AP and AUROC on the "
            "whole test split. " + machine_line(rows), ""] + lines + [
        "", f"Mean pixel AP change: {100 * gain:+.2f} points over {len(rows)} classes. Median "
            f"ratio to the backbone in {LOW}: with bagging {ratio[(1, True)]:.2f}x (batch 1) / "
            f"{ratio[(8, True)]:.2f}x (batch 8), without {ratio[(1, False)]:.2f}x / "
            f"{ratio[(8, False)]:.2f}x (targets: 2x and 1.3x)."]


def main(argv=None) -> int:
    run = kept_models_run(__doc__, RESULTS, argv)
    if run is None:
        return 2
    args, work, data, results, classes = run
    from core.deploy.precision import cpu_has_fast_bf16
    if not cpu_has_fast_bf16():
        print(f"note: this CPU has no AMX or AVX512-BF16: {LOW} is emulated and slow here", file=sys.stderr)
    from core.fileio import atomic_write_text
    from .report import machine
    host = machine()        # once: the same for every class of this run
    for c in classes:
        r = measure(work / f"{c}-unsup-0.pt", data, c, args.threads)
        r["machine"] = host
        atomic_write_text(results / f"{c}.json", json.dumps(r, indent=1))
        print(f"{c}: pixel AP {100 * r['float32']['metrics']['pixel_ap']:.2f} -> "
              f"{100 * r[LOW]['metrics']['pixel_ap']:.2f}; bagging batch 1 ratio "
              f"{_row(r, 1, True, 'float32')['ratio']:.2f}x -> {_row(r, 1, True, LOW)['ratio']:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
