"""Inference speed from one run: ms per image of the whole inference (image in, map and score out)
at batch 1 and batch 8, with and without bagging, beside the backbone alone at the same batch
size, and their ratios (issue 12: whole <= 2x the backbone with bagging, <= 1.3x without).

The ratios are the robust figures: on a shared machine every time moves, but whole and backbone
move together. Each figure is the median over batches of the wall time of the batch divided by
its size; the four settings and the backbone are measured interleaved, pass after pass, so that
load from other processes falls on all of them alike. Called by bench/job.py; runnable alone:

    python -m bench.speed --model runs/bench/PA_BDP01_TL-unsup-0.pt --images ../shared/data/piped/PA_BDP01_TL/test --threads 1
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

BATCHES = (1, 8)


def _chunks(items: list, n: int) -> list[list]:
    return [items[i:i + n] for i in range(0, len(items) - n + 1, n)]   # whole batches only


def measure(bundle, images: list[np.ndarray], device: str = "cpu", passes: int = 3,
            precisions: tuple[str, ...] = ("float32",)) -> dict:
    """Speed of ``bundle`` (a ModelBundle) on ``images`` (uint8 RGB; at least 8): see the module.
    ``precisions``: the Swin's float types to time (core/deploy/precision.py), each a row set."""
    from core.data.datasets import prepare_image
    from core.deploy.inference import Predictor

    if len(images) < max(BATCHES):
        raise ValueError(f"speed needs at least {max(BATCHES)} images, got {len(images)}")
    settings = [(bag, prec) for prec in precisions for bag in (True, False)]
    preds = {s: Predictor(bundle, device, bagging=s[0], precision=s[1]) for s in settings}
    enc = preds[settings[0]].encoder
    fcfg = bundle.config.features
    prepared = [prepare_image(im, fcfg.image_size, fcfg.size_multiple) for im in images]
    sync = (lambda: torch.cuda.synchronize(device)) if str(device).startswith("cuda") else (lambda: None)

    def whole(setting, batch):
        preds[setting].predict_batch(batch)

    def backbone(batch):
        enc.encode(batch)

    jobs = {}
    for b in BATCHES:
        for st in settings:
            jobs[("whole", st, b)] = (lambda batch, st=st: whole(st, batch), _chunks(images, b))
        jobs[("backbone", None, b)] = (backbone, _chunks(prepared, b))
    times: dict[tuple, list[float]] = {k: [] for k in jobs}
    stages: dict[tuple, list[dict]] = {k: [] for k in jobs if k[0] == "whole"}
    with torch.inference_mode():
        for fn, chunks in jobs.values():       # warm-up: allocations, plans, faiss index
            fn(chunks[0])
        for _ in range(passes):
            for key, (fn, chunks) in jobs.items():
                for batch in chunks:
                    sync()
                    t = time.perf_counter()
                    fn(batch)
                    sync()
                    times[key].append((time.perf_counter() - t) * 1000 / len(batch))
                if key[0] == "whole":   # per-stage split, from the same predictor (one more batch)
                    stages[key].append(preds[key[1]].predict_batch(chunks[0])[0].timings_ms)
    rows = []
    for b in BATCHES:
        bb = float(np.median(times[("backbone", None, b)]))
        for bag, prec in settings:
            ms = float(np.median(times[("whole", (bag, prec), b)]))
            st = stages[("whole", (bag, prec), b)]
            rows.append({"batch": b, "bagging": bag, "precision": prec, "ms": ms, "backbone_ms": bb,
                         "ratio": ms / bb,
                         "stages_ms": {k: float(np.median([s[k] for s in st])) for k in st[0]}})
    return {"threads": torch.get_num_threads(), "device": str(device), "n_images": len(images),
            "passes": passes, "rows": rows}


def main(argv=None) -> int:
    from core.data.images import list_images, read_image
    from core.deploy.modelfile import ModelBundle

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--images", required=True, help="a folder of images (searched recursively)")
    p.add_argument("--n", type=int, default=24, help="images used (whole batches of 8)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--passes", type=int, default=3)
    p.add_argument("--json-out")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = Path(args.images)
    paths = sorted(q for d in [root, *sorted(x for x in root.rglob("*") if x.is_dir())]
                   for q in list_images(d))[:args.n]
    res = measure(ModelBundle.load(args.model), [read_image(q) for q in paths], args.device, args.passes)
    for line in speed_lines([{"category": Path(args.model).stem, "speed": res}]):
        print(line)
    if args.json_out:
        from core.fileio import atomic_write_text
        atomic_write_text(args.json_out, json.dumps(res, indent=1) + "\n")
    return 0


def speed_lines(rows: list[dict]) -> list[str]:
    """Markdown table of the jobs' ``speed`` results (bench/report.py)."""
    out = ["| class | batch | backbone ms/img | whole, bagging: ms/img | ratio | "
           "whole, no bagging: ms/img | ratio |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        sp = r.get("speed")
        if not sp:
            continue
        for b in BATCHES:
            by = {x["bagging"]: x for x in sp["rows"]
                  if x["batch"] == b and x.get("precision", "float32") == "float32"}
            if not by:
                continue
            bag, nob = by[True], by[False]
            out.append(f"| {r['category']} | {b} | {bag['backbone_ms']:.1f} | {bag['ms']:.1f} | "
                       f"{bag['ratio']:.2f}x | {nob['ms']:.1f} | {nob['ratio']:.2f}x |")
    return out if len(out) > 2 else []


if __name__ == "__main__":
    sys.exit(main())
