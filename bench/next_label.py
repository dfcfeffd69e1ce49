"""Which image to label next, measured: test pixel AP after labelling k images chosen by the
ranking (core/eval/nextlabel.py) vs at random vs highest score first, against estimated labelling
seconds (core/data/labelcost.py).

    python -m bench.next_label --data ../shared/data/piped --category PA_BDP01_TL \\
        [--k 2 5] [--seeds 0 1] [--kind mask|boxes] [--preset cpu] [--config tiny.yaml] \\
        [--device auto] [--threads 1] [--unsup-from runs/bench] [--results DIR] [--out all.json]

Per class and seed: the test split is cut in two halves (seeded): a *pool* a person would label
from, and a *held-out* half the AP is measured on. An unsupervised model is trained on the train
normals and scores the pool once (scores, block maps); each strategy orders the pool from those;
for each k its first k images are labelled from the ground truth (a defective image by ``--kind``:
its mask, or one rotated box per component; a good image tagged normal), with the cost model's
estimated seconds (a normal tag costs a verdict, 2 s), and a model is trained with them (boxes
fine-tune the unsupervised model, as `semirest eval --protocol semi` does) and evaluated on the
held-out half. The ranking is computed once, from the unsupervised model (in the app it is
recomputed after every label): this measures the first pick of k, the cheapest setting.

Costs 1 + 3 x len(k) trainings per class and seed (3 x len(k) with ``--unsup-from``, which takes
the unsupervised model the benchmark's unsupervised wave kept, ``<dir>/<class>-unsup-0.pt``:
training is deterministic, so it is the model this script would train): run it on a GPU; on 2 CPU
cores with the cpu preset, about 6 minutes per training. Each class and seed is written as soon as
it is done to ``docs/bench-results/next_label/<class>-<kind>-<seed>.json`` (``--results``), and the
report (bench/report.py, ``table``) makes a table of them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

STRATEGIES = ("ranked", "random", "top_score")
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "bench-results" / "next_label"


def _label(sample, kind: str):
    from core.data.datasets import load_sample_mask
    from core.data.images import read_image
    from core.data.labelcost import PRIOR
    from core.data.labels import ImageLabel, boxes_from_mask
    h, w = read_image(sample.path).shape[:2]
    lab = ImageLabel(image=sample.path, width=w, height=h)
    if sample.is_anomalous:
        mask = load_sample_mask(sample, (h, w))
        if kind == "mask":
            lab.mask = mask
        else:
            lab.boxes = boxes_from_mask(mask)
    else:
        lab.tag = "normal"
    lab.seconds = PRIOR.estimate(lab, normal_tags=True)
    lab.seconds_estimated = dict(lab.seconds)
    return lab.validate()


def orders(pool, predictions, seed: int) -> dict[str, list[int]]:
    """Each strategy's order of the pool (indices). ``predictions``: (score, block map) per image."""
    from core.data.images import read_image
    from core.eval.nextlabel import Candidate, embedding, rank_next
    import cv2
    cands = []
    for i, (s, (score, bmap)) in enumerate(zip(pool, predictions)):
        img = read_image(s.path)
        thumb = cv2.resize(img, (96, max(1, round(96 * img.shape[0] / img.shape[1]))), interpolation=cv2.INTER_AREA)
        cands.append(Candidate(i, embedding(thumb, bmap), score, np.clip(bmap, 0, 1)))
    scores = np.array([p[0] for p in predictions])
    threshold = float(np.median(scores))    # no calibrated threshold in a bench: the pool's median
    return {"ranked": [r.key for r in rank_next(cands, threshold)],
            "random": [int(i) for i in np.random.default_rng(seed).permutation(len(pool))],
            "top_score": [int(i) for i in np.argsort(-scores, kind="stable")]}


def run_class(args, category: str, seed: int, work: Path) -> dict:
    from core import api
    from core.config import load_config
    from core.data.datasets import load_mvtec
    from core.data.images import read_image
    from core.deploy.inference import Predictor
    from core.deploy.modelfile import ModelBundle
    from .report import code_state
    cfg = load_config(args.config, preset_name=args.preset)
    ds = load_mvtec(args.data, category)
    rng = np.random.default_rng(seed)
    test = list(ds.test)
    perm = rng.permutation(len(test))
    pool = [test[i] for i in perm[: len(test) // 2]]
    held = [test[i] for i in perm[len(test) // 2:]]
    t0 = time.perf_counter()
    kept = Path(args.unsup_from) / f"{category}-unsup-0.pt" if args.unsup_from else None
    if kept is not None and kept.exists():
        unsup, bundle = kept, ModelBundle.load(kept)
        if bundle.config.features != cfg.features or bundle.config.swin != cfg.swin:
            raise SystemExit(f"{kept}: trained with other settings than --preset/--config")
    else:
        unsup = work / f"{category}-unsup-{seed}.pt"
        bundle = api.fit(ds.train, unsup, cfg, args.device, resume=False)
    base = api.evaluate(bundle, args.data, samples=held, device=args.device).metrics
    pred = Predictor(bundle, args.device)
    predictions = []
    for s in pool:
        p = pred.predict(read_image(s.path))
        predictions.append((p.score, p.block_map))
    order = orders(pool, predictions, seed)
    out = {"category": category, "seed": seed, "kind": args.kind, "pool": len(pool), "held_out": len(held),
           "pool_defective": sum(s.is_anomalous for s in pool), "unsup": base, "unsup_model": str(unsup),
           "swin": {k: getattr(cfg.swin, k) for k in ("embed_dim", "num_heads", "depth")},
           "code": code_state(), "runs": []}
    for name in STRATEGIES:
        for k in args.k:
            picked = [pool[i] for i in order[name][:k]]
            labels = [_label(s, args.kind) for s in picked]
            model = work / f"{category}-{name}-k{k}-{seed}.pt"
            b = api.fit(ds.train, model, cfg, args.device, labels=labels, resume=False,
                        init_from=unsup if args.kind == "boxes" else None)
            m = api.evaluate(b, args.data, samples=held, device=args.device).metrics
            seconds = sum(sum(lab.seconds.values()) for lab in labels)
            out["runs"].append({"strategy": name, "k": k, "defective_picked": sum(s.is_anomalous for s in picked),
                                "label_seconds": round(seconds, 1), "metrics": m,
                                "ap_per_minute": (m["pixel_ap"] - base["pixel_ap"]) / max(seconds / 60, 1e-9)})
            print(f"{category} seed {seed} {name:9s} k={k}: {out['runs'][-1]['defective_picked']} defective, "
                  f"{seconds:6.1f} s of labels, pixel AP {m['pixel_ap']:.3f} (unsup {base['pixel_ap']:.3f})",
                  flush=True)
    out["seconds"] = time.perf_counter() - t0
    return out


def load(results: Path = RESULTS) -> list[dict]:
    from .report import _load    # the report imports this module lazily
    return _load(Path(results)) if Path(results).is_dir() else []


def table(results: Path = RESULTS) -> list[str]:
    """The report's section (empty without results): per class and seed, each strategy's pixel AP
    gain over the unsupervised model on the held-out half at each k, with what its picks cost; then
    the means over the runs and each strategy's gain per labelling minute."""
    rows = load(results)
    if not rows:
        return []
    ks = sorted({r["k"] for rec in rows for r in rec["runs"]})
    head = "| class | seed | kind | Unsup AP | " + " | ".join(
        f"{s}, k = {k}: defective, est. s, AP (gain)" for s in STRATEGIES for k in ks) + " |"
    lines = [head, "|" + "---|" * (4 + len(STRATEGIES) * len(ks))]
    gains: dict[tuple, list] = {}
    for rec in rows:
        base = rec["unsup"]["pixel_ap"]
        cells = []
        for s in STRATEGIES:
            for k in ks:
                r = next((r for r in rec["runs"] if r["strategy"] == s and r["k"] == k), None)
                if r is None:
                    cells.append("-")
                    continue
                g = r["metrics"]["pixel_ap"] - base
                gains.setdefault((s, k), []).append((g, r["label_seconds"]))
                cells.append(f"{r['defective_picked']}, {r['label_seconds']:.0f}, "
                             f"{100 * r['metrics']['pixel_ap']:.1f} ({100 * g:+.1f})")
        lines.append(f"| {rec['category']} | {rec['seed']} | {rec['kind']} | {100 * base:.1f} | "
                     + " | ".join(cells) + " |")
    lines += ["", "| strategy | " + " | ".join(f"k = {k}: mean gain, mean est. s, gain per labelling minute"
                                                for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for s in STRATEGIES:
        cells = []
        for k in ks:
            v = gains.get((s, k), [])
            if not v:
                cells.append("-")
                continue
            g, sec = float(np.mean([x[0] for x in v])), float(np.mean([x[1] for x in v]))
            # per minute only from a minute of labels on: a point lost on 4 s of normal tags is
            # not "-15 points per minute"
            rate = f"{100 * g / (sec / 60):+.2f} per min" if sec >= 60 else "under a minute of labels"
            cells.append(f"{100 * g:+.1f}, {sec:.0f} s, {rate}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    from .report import provenance
    return ["Per class and seed, the test split is halved (seeded): a pool to label from and a "
            "held-out half that every AP here is measured on. The unsupervised model scores the pool "
            "once; each strategy's first k picks are labelled from the ground truth (a defective "
            "image by its kind, a normal one tagged normal at 2 s) with the cost model's "
            f"**estimated** seconds, and a model is trained with them. {len(rows)} class/seed run(s). "
            + provenance(rows) + " One seed of one class cannot carry a claim: read the means with "
            "the number of runs.", ""] + lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--category", nargs="+", required=True)
    p.add_argument("--k", type=int, nargs="+", default=[2, 5])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--kind", choices=("mask", "boxes"), default="mask")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--config")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--workdir", default="runs/next_label")
    p.add_argument("--unsup-from", help="take <dir>/<class>-unsup-0.pt (the bench's unsupervised "
                                        "models) instead of training it, when it exists")
    p.add_argument("--results", default=str(RESULTS), help="one JSON per class, seed and kind")
    p.add_argument("--out", help="also every record in one JSON file")
    args = p.parse_args(argv)
    from core.device import resolve_device
    from core.fileio import atomic_write_text
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    args.device = str(resolve_device(args.device))
    work, results_dir = Path(args.workdir), Path(args.results)
    work.mkdir(parents=True, exist_ok=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for c in args.category:
        for s in args.seeds:
            rec = run_class(args, c, s, work)
            results.append(rec)
            f = results_dir / f"{c}-{args.kind}-{s}.json"
            atomic_write_text(f, json.dumps(rec, indent=1, default=float) + "\n")
            print(f"wrote {f}", flush=True)
    if args.out:
        atomic_write_text(Path(args.out), json.dumps(results, indent=2, default=float))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
