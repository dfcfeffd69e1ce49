"""int8 against float32 exports of the bench's unsupervised SemiREST models (core/deploy/export.py
``--quantize int8``, decision 0021): per class, the ONNX Runtime time per image (``--threads``,
batch 1, the two exports interleaved image by image so that a shared machine slows both alike),
pixel AP and image AUROC of each export on the whole test split (``api.evaluate`` with the
runtime: the bench's scoring), the largest map difference between them, and the graph's size.

    python -m bench.quantize --data ../shared/data/piped --workdir runs/bench [--classes C ...]

It reads the models the unsupervised wave keeps (``runs/bench/<class>-unsup-0.pt``), writes
``docs/bench-results/quantize/<class>.json`` and the report (bench/report.py) makes a table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from core.deploy.export import QUANTIZATIONS as KINDS   # "none" (float32) first, then "int8"

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "bench-results" / "quantize"


def measure(model: Path, data: Path, category: str, work: Path, threads: int, n_timed: int = 24,
            passes: int = 3) -> dict:
    from core import api
    from core.data.datasets import load_mvtec
    from core.data.images import read_image
    from core.deploy.export import ONNX_NAME, ExportPredictor, export_model
    out: dict = {"category": category, "model": model.name, "threads": threads}
    folders = {}
    for kind in KINDS:
        folders[kind] = work / f"{category}-export-{kind}"
        t0 = time.perf_counter()
        meta = json.loads(export_model(model, folders[kind], quantize=kind).read_text(encoding="utf-8"))
        res = api.evaluate(folders[kind], data, category, runtime="onnxruntime")
        out[kind] = {"export_s": time.perf_counter() - t0, "metrics": res.metrics,
                     "mb": (folders[kind] / ONNX_NAME).stat().st_size / 2**20,
                     "check_max_abs_map_diff": meta.get("check", {}).get("max_abs_map_diff")}
    preds = {k: ExportPredictor(f, threads=threads) for k, f in folders.items()}
    samples = load_mvtec(data, category).test[:n_timed]
    imgs = [read_image(s.path) for s in samples]
    ms: dict[str, list[float]] = {k: [] for k in KINDS}
    worst = 0.0
    for _ in range(passes):
        for img in imgs:
            maps = {}
            for k in KINDS:
                p = preds[k].predict(img, img.shape[:2])
                ms[k].append(p.timings_ms["onnxruntime"])
                maps[k] = p.anomaly_map
            worst = max(worst, float(np.abs(maps["none"] - maps["int8"]).max()))
    for k in KINDS:
        out[k]["ms"] = float(np.median(ms[k]))
    out["speedup"] = out["none"]["ms"] / out["int8"]["ms"]
    out["max_abs_map_diff"] = worst
    out["n_timed"], out["passes"] = len(imgs), passes
    return out


def table(results: Path = RESULTS) -> list[str]:
    """The report's table (empty without results)."""
    from .report import machine_line
    rows = [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))] if results.is_dir() else []
    if not rows:
        return []
    lines = ["| class | float32 ms | int8 ms | speed-up | float32 pixel AP | int8 pixel AP | int8 - float32 "
             "| image AUROC float32 / int8 | max map diff | MB float32 / int8 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f, q = r["none"], r["int8"]
        lines.append(f"| {r['category']} | {f['ms']:.1f} | {q['ms']:.1f} | {r['speedup']:.2f}x | "
                     f"{100 * f['metrics']['pixel_ap']:.1f} | {100 * q['metrics']['pixel_ap']:.1f} | "
                     f"{100 * (q['metrics']['pixel_ap'] - f['metrics']['pixel_ap']):+.1f} | "
                     f"{100 * f['metrics']['image_auroc']:.1f} / {100 * q['metrics']['image_auroc']:.1f} | "
                     f"{r['max_abs_map_diff']:.4f} | {f['mb']:.1f} / {q['mb']:.1f} |")
    mean = lambda get: float(np.mean([get(r) for r in rows]))   # noqa: E731
    lines.append(f"| **mean** | **{mean(lambda r: r['none']['ms']):.1f}** | **{mean(lambda r: r['int8']['ms']):.1f}** "
                 f"| **{mean(lambda r: r['speedup']):.2f}x** | "
                 f"**{100 * mean(lambda r: r['none']['metrics']['pixel_ap']):.1f}** | "
                 f"**{100 * mean(lambda r: r['int8']['metrics']['pixel_ap']):.1f}** | "
                 f"**{100 * mean(lambda r: r['int8']['metrics']['pixel_ap'] - r['none']['metrics']['pixel_ap']):+.1f}** "
                 f"| | **{max(r['max_abs_map_diff'] for r in rows):.4f}** (max) | |")
    threads = sorted({r["threads"] for r in rows})
    return [f"ONNX Runtime, {', '.join(map(str, threads))} thread(s), batch 1, median ms per image over "
            f"{rows[0]['passes']} passes of {rows[0]['n_timed']} test images, the two exports "
            "interleaved; AP and AUROC on the whole test split. Max map diff: between the two "
            "exports' maps on the timed images. " + machine_line(rows), ""] + lines


def kept_unsup_classes(work: Path, data: Path) -> list[str]:
    """The classes of ``data`` whose unsupervised seed-0 model the bench kept in ``work``."""
    return sorted(c.name for c in data.iterdir() if (work / f"{c.name}-unsup-0.pt").exists())


def kept_models_run(doc: str, results_default: Path, argv=None):
    """The command line of a bench script that measures the kept unsupervised models (this one,
    bench/precision.py): ``(args, work, data, results, classes)``, torch's threads set, the
    results folder made; None (after saying why) when there is no model to measure."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--workdir", default=str(ROOT / "runs" / "bench"))
    p.add_argument("--classes", nargs="+")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results", default=str(results_default))
    args = p.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    work, data, results = Path(args.workdir), Path(args.data), Path(args.results)
    classes = args.classes or kept_unsup_classes(work, data)
    if not classes:
        print(f"no unsupervised models in {work}: run `python -m bench` first", file=sys.stderr)
        return None
    results.mkdir(parents=True, exist_ok=True)
    return args, work, data, results, classes


def main(argv=None) -> int:
    run = kept_models_run(__doc__, RESULTS, argv)
    if run is None:
        return 2
    args, work, data, results, classes = run
    from core.fileio import atomic_write_text
    from .report import machine
    from core.errors import ExportError
    host = machine()        # once: the same for every class of this run
    for c in classes:
        try:
            r = measure(work / f"{c}-unsup-0.pt", data, c, work, args.threads)
            r["machine"] = host
        except ExportError as exc:          # e.g. a model that runs no Swin: nothing to compare
            print(f"{c}: skipped, {exc}", flush=True)
            continue
        atomic_write_text(results / f"{c}.json", json.dumps(r, indent=1))
        print(f"{c}: float32 {r['none']['ms']:.1f} ms, int8 {r['int8']['ms']:.1f} ms "
              f"({r['speedup']:.2f}x); pixel AP {100 * r['none']['metrics']['pixel_ap']:.1f} -> "
              f"{100 * r['int8']['metrics']['pixel_ap']:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
