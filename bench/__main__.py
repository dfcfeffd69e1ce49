"""Benchmark SemiREST beside PatchCore on every class of ``../shared/data/piped``; write
``docs/benchmarks.md`` (tables) and ``docs/bench-results/*.json`` (one file per job).

    python -m bench                                   # unsup + PatchCore, every class
    python -m bench --protocols unsup sup semi tag    # + the labelled protocols, seeds 0 1 2
    python -m bench --classes --mixed-sizes PA_BDP01_TL  # only the many-sizes row of one class
    python -m bench --protocols economy               # pixel AP per labelling second (bench/economy.py)

The unsupervised wave also runs on ``MIXED_<class>`` sets derived from ``--mixed-sizes`` classes
(bench/mixed_sizes.py: the same real images, cropped and stretched to many sizes and aspect
ratios, in grayscale), reported in their own table.

Each (class, protocol, seed) job runs in its own process (so its peak memory is its own) and its
result file is kept: a rerun skips finished jobs unless ``--fresh``. semi and tag start from the
class's unsupervised model (the paper initialises the semi-supervised model from it); sup trains
from scratch, as in the paper. When a labelled protocol needs a class's unsupervised model and its
file is gone (a fresh clone has the result files but no runs/), the unsupervised job runs again.

``economy`` runs, per class and seed, every label kind (masks, blocks, boxes, tags) at every count
of ``--ladder`` on nested draws with one common test set (bench/economy.py); its result files go
to ``docs/bench-results/economy/``.

A side run with its own ``--results R`` writes its report to ``R/benchmarks.md`` and no label costs,
unless ``--out`` / ``--label-costs`` name them: the committed report stays the committed results'.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import economy
from .mixed_sizes import derive

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "piped"


def _job_file(results: Path, cat: str, proto: str, seed: int, n: int | None = None) -> Path:
    if n is not None:
        return economy.job_file(results, cat, proto, n, seed)
    return results / f"{cat}-{proto}-{seed}.json"


def _unsup_model(work: Path, cat: str) -> Path:
    return work / f"{cat}-unsup-0.pt"


def _command(args, data: Path, work: Path, out: Path, cat: str, proto: str, seed: int,
             economy_job: tuple[int, int, bool] | None = None) -> list[str] | None:
    """The job's command line, or None when it needs the class's unsupervised model and there is
    none. ``economy_job``: (n labelled, pool drawn, whether this job also scores the baselines)."""
    cmd = [sys.executable, "-m", "bench.job", "--data", str(data), "--category", cat,
           "--protocol", proto, "--seed", str(seed), "--preset", args.preset,
           "--device", args.device, "--threads", str(args.threads), "--workdir", str(work),
           "--out", str(out)] + (["--config", args.config] if args.config else [])
    if proto == "unsup":
        from core.methods import REGISTRY
        others = [m.name for m in REGISTRY if m.name not in ("semirest", "patchcore")]
        return cmd + ["--patchcore", "--keep-model", "--speed"] + (["--methods", *others] if others else [])
    init = _unsup_model(work, cat)
    if not init.exists():
        return None
    if economy_job is not None:
        n, pool, baselines = economy_job
        cmd += ["--n-anomalous", str(n), "--pool", str(pool), "--skip-onnx"]
        if baselines:
            cmd += ["--patchcore", "--compare", str(init)]
        if proto in ("semi", "tag"):
            cmd += ["--init", str(init)]
        return cmd
    # The first labelled protocol of a seed also evaluates the unsupervised model and PatchCore on
    # that seed's test split (10 defective images fewer; the same split for every protocol), so
    # every column of a protocol table sees the same images, computed once per seed.
    if proto == next(p for p in args.protocols if p not in ("unsup", "economy")):
        cmd += ["--patchcore", "--compare", str(init)]
    if proto in ("semi", "tag"):
        cmd += ["--init", str(init)]
    return cmd


def economy_jobs(args, data: Path, classes: list[str]) -> list[tuple]:
    """The economy protocol's jobs: every kind at every count of the class's ladder (clipped to
    leave half its defective test images for testing, said here and in the report), per seed;
    the first job of each class and seed also scores Unsup and PatchCore on the common test set
    (unless a finished job did, so that a rerun with other kinds does not score them twice)."""
    from core.data.datasets import load_mvtec
    jobs = []
    for c in classes:
        n_def = sum(s.is_anomalous for s in load_mvtec(data, c).test)
        ladder = economy.ladder_for(n_def, args.ladder)
        if ladder != sorted(set(args.ladder)):
            print(f"{c}: {n_def} defective test images; ladder clipped to {ladder or 'nothing'} so that "
                  f"half of them stay in the test set", flush=True)
        if not ladder:
            continue
        for seed in args.seeds:
            # baselines once per class and seed: on its first job, unless a finished job has them
            first = args.fresh or not any(
                "unsup_on_split" in r for r in economy.load(Path(args.results))
                if (r["category"], r["seed"]) == (c, seed))
            for proto in args.economy_kinds:
                for k in ladder:
                    jobs.append((data, c, proto, seed, (k, max(ladder), first)))
                    first = False
    return jobs


def run_jobs(args) -> None:
    """Unsupervised jobs first (semi and tag start from their models), ``--jobs`` at a time."""
    data = Path(args.data)
    classes = (sorted(p.name for p in data.iterdir() if (p / "train" / "good").is_dir())
               if args.classes is None else args.classes)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    mixed_root = work / "mixed"
    mixed = [derive(data / c, mixed_root).name for c in args.mixed_sizes] if "unsup" in args.protocols else []
    labelled = [p for p in args.protocols if p not in ("unsup", "economy")]
    needs_init = bool(labelled) or "economy" in args.protocols
    # (root, class, protocol, seed, economy job or None)
    waves = [[(data, c, "unsup", 0, None) for c in classes
              if "unsup" in args.protocols or (needs_init and not _unsup_model(work, c).exists())]
             + [(mixed_root, c, "unsup", 0, None) for c in mixed],
             [(data, c, p, s, None) for c in classes for p in labelled for s in args.seeds]
             + (economy_jobs(args, data, classes) if "economy" in args.protocols else [])]
    total = sum(len(w) for w in waves)
    from .ray_jobs import LocalLauncher, RayLauncher
    launcher = (RayLauncher(None if args.ray == "local" else args.ray, args.threads,
                            args.device.startswith("cuda")) if args.ray else LocalLauncher())
    t_start, n = time.perf_counter(), 0
    for wave in waves:
        running: list[tuple] = []
        queue = list(wave)
        while queue or running:
            while queue and len(running) < args.jobs:
                root, cat, proto, seed, eco = queue.pop(0)
                n += 1
                out = _job_file(results, cat, proto, seed, eco[0] if eco else None)
                name = f"{cat} {proto}" + (f" n={eco[0]}" if eco else "") + f" seed {seed}"
                model_gone = (proto == "unsup" and root == data and needs_init
                              and not _unsup_model(work, cat).exists())
                if out.exists() and not args.fresh and not model_gone:
                    print(f"[{n}/{total}] {name}: done earlier", flush=True)
                    continue
                cmd = _command(args, root, work, out, cat, proto, seed, eco)
                if cmd is None:
                    print(f"[{n}/{total}] {name}: no unsupervised model to start from; run unsup first",
                          flush=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                log = open(work / (out.stem + ".log"), "w")
                running.append((launcher.start(cmd, ROOT, out, log), time.perf_counter(), name, out, log))
                print(f"[{n}/{total}] {name} started", flush=True)
            for job in list(running):
                proc, t0, name, out, log = job
                if proc.poll() is None:
                    continue
                running.remove(job)
                log.close()
                el = time.perf_counter() - t0
                if proc.returncode != 0:
                    print(f"    {name}: FAILED (exit {proc.returncode}) after {el:.0f} s; "
                          f"see {log.name}", flush=True)
                    continue
                r = json.loads(out.read_text())
                pc = r.get("patchcore", {}).get("pixel_ap")
                print(f"    {name}: {el:.0f} s, SemiREST AP {r['semirest']['pixel_ap']:.3f}"
                      + (f", PatchCore AP {pc:.3f}" if pc is not None else ""), flush=True)
            time.sleep(0.5)
    print(f"all jobs: {time.perf_counter() - t_start:.0f} s", flush=True)


def main(argv=None) -> int:
    from core.data.protocols import PROTOCOLS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--classes", nargs="*", help="PIPED classes (default: every one; none with no names)")
    p.add_argument("--mixed-sizes", nargs="*", default=["PA_BDP01_TL", "PA_FLR01_TL"],
                   help="classes whose many-sizes variant (bench/mixed_sizes.py) the unsupervised wave "
                        "also runs (none with no names)")
    p.add_argument("--protocols", nargs="+", default=["unsup"], choices=list(PROTOCOLS) + ["economy"],
                   help="economy: pixel AP per labelling second over --ladder (bench/economy.py)")
    p.add_argument("--ladder", nargs="+", type=int, default=list(economy.LADDER),
                   help="economy: labelled defective images per class (nested draws)")
    p.add_argument("--economy-kinds", nargs="+", default=list(economy.KINDS), choices=list(economy.KINDS),
                   help="economy: which labels (sup: masks, blocks, semi: boxes, tag: tags)")
    p.add_argument("--config", help="a config file for every job (on top of --preset)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch threads per job")
    p.add_argument("--jobs", type=int, default=1, help="jobs run at once (timings are only clean with 1)")
    p.add_argument("--results", default=str(ROOT / "docs" / "bench-results"))
    p.add_argument("--workdir", default=str(ROOT / "runs" / "bench"))
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--label-costs", default=str(ROOT / "resources" / "label_costs.json"),
                   help="where to write the per-label-kind mean pixel AP the app's Train panel shows "
                        "('' for nowhere)")
    p.add_argument("--fresh", action="store_true", help="rerun jobs that have a result file")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run the jobs as Ray tasks (bench/ray_jobs.py): on a local Ray, or on the "
                        "cluster at ADDRESS (--jobs of them at once)")
    p.add_argument("--report-only", action="store_true", help="only rewrite the tables from result files")
    args = p.parse_args(argv)
    defaults = {a: p.get_default(a) for a in ("results", "out", "label_costs")}
    if Path(args.results).resolve() != Path(defaults["results"]).resolve():
        # a side run (its own --results): its report goes beside its results, never over the
        # committed docs/benchmarks.md and resources/label_costs.json, unless asked for by name
        if args.out == defaults["out"]:
            args.out = str(Path(args.results) / "benchmarks.md")
        if args.label_costs == defaults["label_costs"]:
            args.label_costs = ""
    if not Path(args.data).is_dir():
        print(f"benchmark data not found at {args.data} (expected ../shared/data/piped beside the "
              f"repository); nothing to run", file=sys.stderr)
        return 2
    if not args.report_only:
        run_jobs(args)
    from .report import write_report
    write_report(Path(args.results), Path(args.out), args, costs_out=Path(args.label_costs) if args.label_costs else None)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
