"""Benchmark SemiREST beside PatchCore on every class of ``../shared/data/piped``; write
``docs/benchmarks.md`` (tables) and ``docs/bench-results/*.json`` (one file per job).

    python -m bench                                   # unsup + PatchCore, every class
    python -m bench --protocols unsup sup semi tag    # + the labelled protocols, seeds 0 1 2

Each (class, protocol, seed) job runs in its own process (so its peak memory is its own) and its
result file is kept: a rerun skips finished jobs unless ``--fresh``. semi and tag start from the
class's unsupervised model (the paper initialises the semi-supervised model from it); sup trains
from scratch, as in the paper.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "piped"


def _job_file(results: Path, cat: str, proto: str, seed: int) -> Path:
    return results / f"{cat}-{proto}-{seed}.json"


def run_jobs(args) -> None:
    data = Path(args.data)
    classes = args.classes or sorted(p.name for p in data.iterdir() if (p / "train" / "good").is_dir())
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    jobs = []
    for cat in classes:
        for proto in args.protocols:
            for seed in ([0] if proto == "unsup" else args.seeds):
                jobs.append((cat, proto, seed))
    t_start = time.perf_counter()
    for i, (cat, proto, seed) in enumerate(jobs, 1):
        out = _job_file(results, cat, proto, seed)
        if out.exists() and not args.fresh:
            print(f"[{i}/{len(jobs)}] {cat} {proto} seed {seed}: done earlier", flush=True)
            continue
        cmd = [sys.executable, "-m", "bench.job", "--data", str(data), "--category", cat,
               "--protocol", proto, "--seed", str(seed), "--preset", args.preset,
               "--device", args.device, "--threads", str(args.threads), "--workdir", str(work),
               "--out", str(out)]
        if proto == "unsup":
            cmd += ["--patchcore", "--keep-model"]
        elif proto in ("semi", "tag"):
            init = work / f"{cat}-unsup-0.pt"
            if not init.exists():
                print(f"[{i}/{len(jobs)}] {cat} {proto}: no unsupervised model to start from; run unsup first",
                      flush=True)
                continue
            cmd += ["--init", str(init)]
        t0 = time.perf_counter()
        print(f"[{i}/{len(jobs)}] {cat} {proto} seed {seed} ...", flush=True)
        rc = subprocess.call(cmd, cwd=ROOT)
        el = time.perf_counter() - t0
        if rc != 0:
            print(f"    FAILED (exit {rc}) after {el:.0f} s", flush=True)
        else:
            r = json.loads(out.read_text())
            pc = r.get("patchcore", {}).get("pixel_ap")
            print(f"    {el:.0f} s: SemiREST AP {r['semirest']['pixel_ap']:.3f}"
                  + (f", PatchCore AP {pc:.3f}" if pc is not None else ""), flush=True)
    print(f"all jobs: {time.perf_counter() - t_start:.0f} s", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--classes", nargs="*")
    p.add_argument("--protocols", nargs="+", default=["unsup"], choices=["unsup", "sup", "semi", "tag"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--results", default=str(ROOT / "docs" / "bench-results"))
    p.add_argument("--workdir", default=str(ROOT / "runs" / "bench"))
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
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
    write_report(Path(args.results), Path(args.out), args)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
