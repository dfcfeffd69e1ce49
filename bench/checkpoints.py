"""Does validation rank checkpoints as the test does? (the accuracy issue, part 3: "report how
well the validation ranking of checkpoints agrees with the test ranking")

    python -m bench.checkpoints --data ../shared/data/piped --category PA_BDP01_TL PA_BRG03_TL --threads 1

For each class the unsupervised model is trained as the bench trains it (``api.run_protocol``,
protocol ``unsup``, seed 0), and every EMA state that training validates (every
``train.val_every`` steps, on the synthetic validation split) is kept aside. After training, each
of those states is scored on the test split twice, by the code ``semirest eval`` runs:

- ``swin``: the Swin's map alone (fusion weight 0), the map validation itself scores;
- ``shipped``: with the model's own calibration (the fusion weight chosen on validation for the
  kept state), what a user of that checkpoint would get.

Analysis only: nothing here feeds back into training or into which checkpoint a model keeps. It
reports, per class, Spearman's rho and Kendall's tau between the validation metric and test pixel
AP over the checkpoints, and the test AP of validation's pick (the best validation metric), of
the state the model kept (``train.checkpoint``: the last since decision 0014, which this
measurement revisits) and of the best checkpoint in hindsight (an oracle no user has). Result files:
``docs/bench-results/checkpoints/<class>.json``; ``table`` is the report's section.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

SUBDIR = "checkpoints"
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "bench-results" / SUBDIR
VARIANTS = ("swin", "shipped")


def _spy_on_validation(snaps: list[dict]):
    """Wrap Trainer.validation so every validated state (the EMA weights) is copied aside; returns
    the function that undoes it."""
    from core.learning.training import Trainer
    orig = Trainer.validation

    def validation(self, model):
        val, metric = orig(self, model)
        snaps.append({"stage": self.stage, "metric": float(metric),
                      "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}})
        return val, metric

    Trainer.validation = validation
    return lambda: setattr(Trainer, "validation", orig)


def rank_agreement(val: list[float], test: list[float]) -> dict:
    """Spearman's rho and Kendall's tau (tau-b: ties allowed) of two score lists, with their
    p-values; NaN where either list is constant."""
    from scipy.stats import kendalltau, spearmanr
    if len(val) < 3 or np.ptp(val) == 0 or np.ptp(test) == 0:
        return {"spearman": float("nan"), "spearman_p": float("nan"),
                "kendall": float("nan"), "kendall_p": float("nan")}
    rho, rp = spearmanr(val, test)
    tau, tp = kendalltau(val, test)
    return {"spearman": float(rho), "spearman_p": float(rp), "kendall": float(tau), "kendall_p": float(tp)}


def summarise(points: list[dict], kept_step: int, variant: str) -> dict:
    """Per variant: rank agreement, and the test AP of validation's pick (the checkpoint with the
    best validation metric, the first of equals), of the state the model kept (``kept_step``:
    ``train.checkpoint`` decides, the last under decision 0014), of the last and of the best in
    hindsight, from ``points`` ({"step", "val", variant: {"pixel_ap", ...}})."""
    val = [p["val"] for p in points]
    test = [p[variant]["pixel_ap"] for p in points]
    pick = int(np.argmax(val))
    kept = next(p[variant]["pixel_ap"] for p in points if p["step"] == kept_step)
    return {**rank_agreement(val, test), "val_pick": test[pick], "val_pick_step": points[pick]["step"],
            "kept": kept, "kept_step": kept_step, "best": max(test), "best_step": points[int(np.argmax(test))]["step"],
            "last": test[-1], "mean": float(np.mean(test))}


def run_class(args, category: str, code: dict | None = None) -> dict:
    import torch
    from core import api
    from core.config import load_config
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, preset_name=args.preset)
    model_path = Path(args.workdir) / f"{category}-unsup-checkpoints.pt"
    snaps: list[dict] = []
    undo = _spy_on_validation(snaps)
    t0 = time.perf_counter()
    try:
        run = api.run_protocol(args.data, category, "unsup", model_path, cfg, args.device, seed=0, retrain=True)
    finally:
        undo()
    train_s = time.perf_counter() - t0
    bundle, test = run.bundle, run.split.test
    history = [h for h in bundle.validation.get("history", []) if "step" in h]
    # the preflight dry run (decision 0016) validates too, before the training: its states come first
    snaps = snaps[-len(history):] if history else []
    if not history or len(snaps) != len(history):
        raise RuntimeError(f"{category}: {len(snaps)} validated states for {len(history)} history entries")
    kept_step = int(bundle.validation.get("step", history[-1]["step"]))
    kept_state = next(s for h, s in zip(history, snaps) if int(h["step"]) == kept_step)
    if not all(torch.equal(kept_state["state"][k], v.cpu()) for k, v in bundle.swin_state.items()):
        raise RuntimeError(f"{category}: the state kept aside at step {kept_step} is not the model's")
    swin_only = {**bundle.calibration, "fusion": {**(bundle.calibration.get("fusion") or {}), "weight": 0.0}}
    points = []
    for h, s in zip(history, snaps):
        p = {"step": int(h["step"]), "val": s["metric"]}
        for variant, calib in (("swin", swin_only), ("shipped", bundle.calibration)):
            b = dataclasses.replace(bundle, swin_state=s["state"], calibration=calib)
            p[variant] = api.evaluate(b, args.data, samples=test, device=args.device).metrics
        points.append(p)
        print(f"{category} step {p['step']}: val {p['val']:.4f}, test pixel AP swin "
              f"{p['swin']['pixel_ap']:.4f}, shipped {p['shipped']['pixel_ap']:.4f}", flush=True)
    model_path.unlink(missing_ok=True)
    return {"category": category, "preset": cfg.preset, "seed": 0, "code": code,
            "date": time.strftime("%Y-%m-%d"), "train_s": train_s, "n_test": len(test),
            "swin": {k: getattr(bundle.config.swin, k) for k in ("embed_dim", "num_heads", "depth", "mu", "step")},
            "train_precision": bundle.training.get("precision"),
            "selection_metric": "val_pixel_ap (synthetic validation split)",
            "fusion_weight": float((bundle.calibration.get("fusion") or {}).get("weight", 0.0)),
            "kept_step": kept_step, "model_pixel_ap": run.result.metrics["pixel_ap"],
            "points": points}     # the summaries are derived from the points (table)


def load(results: Path = RESULTS) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(results).glob("*.json"))] if Path(results).is_dir() else []


def table(results: Path = RESULTS) -> list[str]:
    """The report's section (empty without results)."""
    rows = load(results)
    if not rows:
        return []
    from .report import provenance

    def pct(x):
        return "-" if x != x else f"{100 * x:.1f}"

    def rho(x):
        return "-" if x != x else f"{x:+.2f}"

    lines = ["| class | map | Spearman rho | Kendall tau | test AP at: validation's pick (step) | kept "
             "(step) | best in hindsight (step) | pick - best | pick - kept |", "|---|" + "---|" * 8]
    agg: dict[str, dict[str, list]] = {v: {} for v in VARIANTS}
    for r in rows:
        for v in VARIANTS:
            # every summary is derived from the points here: one definition for every file
            s = summarise(r["points"], r["kept_step"], v)
            for k in ("spearman", "kendall", "val_pick", "kept", "best"):
                agg[v].setdefault(k, []).append(s[k])
            lines.append(f"| {r['category']} | {v} | {rho(s['spearman'])} | {rho(s['kendall'])} | "
                         f"{pct(s['val_pick'])} ({s['val_pick_step']}) | {pct(s['kept'])} ({s['kept_step']}) | "
                         f"{pct(s['best'])} ({s['best_step']}) | {100 * (s['val_pick'] - s['best']):+.1f} | "
                         f"{100 * (s['val_pick'] - s['kept']):+.1f} |")
    for v in VARIANTS:
        # rho is undefined for a training whose checkpoints all score alike: left out of its mean
        a = {k: float(np.mean([y for y in x if y == y])) if any(y == y for y in x) else float("nan")
             for k, x in agg[v].items()}
        lines.append(f"| **mean** ({len(rows)} classes) | {v} | {rho(a['spearman'])} | {rho(a['kendall'])} | "
                     f"{pct(a['val_pick'])} | {pct(a['kept'])} | {pct(a['best'])} | "
                     f"{100 * (a['val_pick'] - a['best']):+.1f} | {100 * (a['val_pick'] - a['kept']):+.1f} |")
    return ["Each class's unsupervised model (seed 0) trained as the bench trains it; every state "
            "validation scored (the EMA weights, every `train.val_every` steps, pixel AP on the synthetic "
            "validation split) is then scored on the test split: `swin` is the Swin's map alone, the map "
            "validation scores; `shipped` adds the fusion weight the kept model chose. Validation's "
            "pick is the checkpoint with the best validation AP; the model keeps its last state "
            "(`train.checkpoint: last`, decision 0014), the `kept` column. Rank agreement is "
            "over the checkpoints of one training (about ten points: a rho of 0.6 is not significant "
            "at 5 %). Analysis only: no checkpoint or weight is chosen from it. " + provenance(rows), ""] + lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--category", nargs="+", required=True)
    p.add_argument("--preset", default="cpu")
    p.add_argument("--config")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--workdir", default="runs/checkpoints")
    p.add_argument("--results", default=str(RESULTS), help="one JSON per class")
    args = p.parse_args(argv)
    from core.device import resolve_device
    from core.fileio import atomic_write_text
    args.device = str(resolve_device(args.device))
    work, results_dir = Path(args.workdir), Path(args.results)
    work.mkdir(parents=True, exist_ok=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    from .report import code_state
    code = code_state()     # before any run: the code this process imports
    for c in args.category:
        rec = run_class(args, c, code)
        f = results_dir / f"{c}.json"
        atomic_write_text(f, json.dumps(rec, indent=1, default=float) + "\n")
        print(f"wrote {f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
