"""Benchmark SemiREST beside PatchCore on every class of ``../shared/data/piped``; write
``docs/benchmarks.md`` (tables) and ``docs/bench-results/*.json`` (one file per job).

    python -m bench                                   # unsup + PatchCore, every class
    python -m bench --protocols unsup sup semi tag    # + the labelled protocols, seeds 0 1 2
    python -m bench --classes --mixed-sizes PA_BDP01_TL  # only the many-sizes row of one class

The unsupervised wave also runs on ``MIXED_<class>`` sets derived from ``--mixed-sizes`` classes
(bench/mixed_sizes.py: the same real images, cropped and stretched to many sizes and aspect
ratios, in grayscale), reported in their own table.

Each (class, protocol, seed) job runs in its own process (so its peak memory is its own) and its
result file is kept: a rerun skips finished jobs unless ``--fresh``. semi and tag start from the
class's unsupervised model (the paper initialises the semi-supervised model from it); sup trains
from scratch, as in the paper.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from .mixed_sizes import derive

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "piped"


def _job_file(results: Path, cat: str, proto: str, seed: int) -> Path:
    return results / f"{cat}-{proto}-{seed}.json"


def _command(args, data: Path, work: Path, out: Path, cat: str, proto: str, seed: int) -> list[str] | None:
    cmd = [sys.executable, "-m", "bench.job", "--data", str(data), "--category", cat,
           "--protocol", proto, "--seed", str(seed), "--preset", args.preset,
           "--device", args.device, "--threads", str(args.threads), "--workdir", str(work),
           "--out", str(out)]
    if proto == "unsup":
        from core.methods import REGISTRY
        others = [m.name for m in REGISTRY if m.name not in ("semirest", "patchcore")]
        return cmd + ["--patchcore", "--keep-model", "--speed"] + (["--methods", *others] if others else [])
    # The first labelled protocol of a seed also evaluates the unsupervised model and PatchCore on
    # that seed's test split (10 defective images fewer; the same split for every protocol), so
    # every column of a protocol table sees the same images, computed once per seed.
    init = work / f"{cat}-unsup-0.pt"
    if not init.exists():
        return None
    if proto == next(p for p in args.protocols if p != "unsup"):
        cmd += ["--patchcore", "--compare", str(init)]
    if proto in ("semi", "tag"):
        cmd += ["--init", str(init)]
    return cmd


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
    waves = [[(data, c, "unsup", 0) for c in classes if "unsup" in args.protocols]
             + [(mixed_root, c, "unsup", 0) for c in mixed],
             [(data, c, p, s) for c in classes for p in args.protocols if p != "unsup" for s in args.seeds]]
    total = sum(len(w) for w in waves)
    t_start, n = time.perf_counter(), 0
    for wave in waves:
        running: list[tuple] = []
        queue = list(wave)
        while queue or running:
            while queue and len(running) < args.jobs:
                root, cat, proto, seed = queue.pop(0)
                n += 1
                out = _job_file(results, cat, proto, seed)
                if out.exists() and not args.fresh:
                    print(f"[{n}/{total}] {cat} {proto} seed {seed}: done earlier", flush=True)
                    continue
                cmd = _command(args, root, work, out, cat, proto, seed)
                if cmd is None:
                    print(f"[{n}/{total}] {cat} {proto}: no unsupervised model to start from; run unsup first",
                          flush=True)
                    continue
                log = open(work / f"{cat}-{proto}-{seed}.log", "w")
                running.append((subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT),
                                time.perf_counter(), cat, proto, seed, out, log))
                print(f"[{n}/{total}] {cat} {proto} seed {seed} started", flush=True)
            for job in list(running):
                proc, t0, cat, proto, seed, out, log = job
                if proc.poll() is None:
                    continue
                running.remove(job)
                log.close()
                el = time.perf_counter() - t0
                if proc.returncode != 0:
                    print(f"    {cat} {proto} seed {seed}: FAILED (exit {proc.returncode}) after {el:.0f} s; "
                          f"see {log.name}", flush=True)
                    continue
                r = json.loads(out.read_text())
                pc = r.get("patchcore", {}).get("pixel_ap")
                print(f"    {cat} {proto} seed {seed}: {el:.0f} s, SemiREST AP {r['semirest']['pixel_ap']:.3f}"
                      + (f", PatchCore AP {pc:.3f}" if pc is not None else ""), flush=True)
            time.sleep(0.5)
    print(f"all jobs: {time.perf_counter() - t_start:.0f} s", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--classes", nargs="*", help="PIPED classes (default: every one; none with no names)")
    p.add_argument("--mixed-sizes", nargs="*", default=["PA_BDP01_TL", "PA_FLR01_TL"],
                   help="classes whose many-sizes variant (bench/mixed_sizes.py) the unsupervised wave "
                        "also runs (none with no names)")
    p.add_argument("--protocols", nargs="+", default=["unsup"], choices=["unsup", "sup", "semi", "tag"])
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
    p.add_argument("--report-only", action="store_true", help="only rewrite the tables from result files")
    args = p.parse_args(argv)
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
