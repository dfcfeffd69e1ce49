"""The label economy benchmark (issue 13, part 3): test pixel AP against labelling seconds.

    python -m bench --protocols economy            # ./dev bench --protocol economy

For each class and seed, ``max(ladder)`` defective test images are drawn once (stratified over
defect types, core/data/protocols.draw_anomalous) and the first ``n`` of them are labelled, for each
``n`` of the ladder (2, 5, 10, 20) and each kind of label:

- masks (protocol ``sup``): pixel masks, trained from scratch as in the paper;
- blocks (``blocks``): the cells Eq. 14 marks on the block tool's grid, trained from scratch;
- boxes (``semi``): one rotated box per defect component, pseudo-masks (decision 0015) trained
  from the unsup model;
- tags (``tag``): "defective" only, ResMixMatch from the unsup model.

All drawn images leave the test set, so every point of a seed is tested on the same images, and
the unsupervised model and PatchCore are scored on those images too (the horizontal lines). The
x axis is the labels' estimated seconds (core/data/labelcost.py: a keystroke-level model with the
paper's Fig. 6 priors), summed over the ``n`` labelled images: no person drew them.

The report (``section``) answers the paper's claim (Fig. 6, Table 6): do boxes reach >= 95% of the
pixel masks' AP gain over Unsup at <= 1/5 of their labelling seconds?
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

KINDS = {"sup": "masks", "blocks": "blocks", "semi": "boxes", "tag": "tags"}   # protocol: label kind
LADDER = (2, 5, 10, 20)
# At least this share of a class's defective test images stays in its test set; a class with
# fewer defective images than twice the ladder's top gets a clipped ladder (reported as such).
TEST_SHARE = 0.5
SUBDIR = "economy"                   # result files: docs/bench-results/economy/*.json
GAIN_SHARE, SECONDS_SHARE = 0.95, 0.2    # the paper's claim: 95% of the mask gain at 1/5 the seconds


def ladder_for(n_defective: int, ladder=LADDER) -> list[int]:
    """The ladder's counts that leave at least TEST_SHARE of ``n_defective`` images for testing."""
    cap = int(n_defective * (1 - TEST_SHARE))
    return [n for n in sorted(set(ladder)) if 0 < n <= cap]


def job_file(results: Path, cat: str, proto: str, n: int, seed: int) -> Path:
    return Path(results) / SUBDIR / f"{cat}-{proto}-n{n}-{seed}.json"


def load(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((Path(results) / SUBDIR).glob("*.json"))]


def summarise(rows: list[dict], ladder=LADDER) -> dict:
    """Means per (kind, n) over the runs (class, seed) that have them, and the baselines.

    Returns {"points": {(proto, n): {"runs", "ap", "gain", "seconds", "pairs"}}, "baselines":
    {(cat, seed): {"Unsup", "PatchCore"}}, "classes", "seeds", "mismatch": [(cat, seed), ...]
    (a class and seed whose jobs were not all tested on the same images), "clipped": {cat: (pool,
    defective test images)} (classes drawn fewer than ``ladder``'s top)}. ``gain`` is the mean of AP - Unsup over the runs with a baseline."""
    base: dict[tuple, dict] = {}
    sets: dict[tuple, set] = {}
    for r in rows:
        key = (r["category"], r["seed"])
        sets.setdefault(key, set()).add(r.get("test_set"))
        if "unsup_on_split" in r and "patchcore" in r:
            base[key] = {"Unsup": r["unsup_on_split"]["pixel_ap"], "PatchCore": r["patchcore"]["pixel_ap"]}
    runs: dict[tuple, dict[tuple, tuple[float, float]]] = {}
    known: dict[tuple, list[float]] = {}
    for r in rows:
        if r["protocol"] in KINDS:
            key = (r["protocol"], r["n_labelled"])
            runs.setdefault(key, {})[(r["category"], r["seed"])] = (r["semirest"]["pixel_ap"], r["label_seconds_total"])
            if "semirest_without_known" in r:      # the same model without its known defects (bench/job.py)
                known.setdefault(key, []).append(r["semirest"]["pixel_ap"] - r["semirest_without_known"]["pixel_ap"])
    points = {}
    for key, by in runs.items():
        ap = [v[0] for v in by.values()]
        gains = [v[0] - base[p]["Unsup"] for p, v in by.items() if p in base]
        points[key] = {"runs": len(by), "ap": float(np.mean(ap)), "seconds": float(np.mean([v[1] for v in by.values()])),
                       "gain": float(np.mean(gains)) if gains else None, "pairs": by,
                       "known": (float(np.mean(known[key])), len(known[key])) if key in known else None}
    clipped = {r["category"]: (r["pool"], r.get("n_defective_test")) for r in rows
               if r.get("pool") is not None and r["pool"] < max(ladder)}
    return {"points": points, "baselines": base,
            "classes": sorted({r["category"] for r in rows}), "seeds": sorted({r["seed"] for r in rows}),
            "mismatch": sorted(k for k, v in sets.items() if len(v) > 1), "clipped": clipped}


def verdicts(s: dict) -> list[tuple[int, str, str]]:
    """Per n, on the runs that have masks, boxes and a baseline: (n, "met" | "MISSED" | "cannot
    be judged", why). Judged on the means over those runs: boxes' gain over Unsup at least
    GAIN_SHARE of the masks' gain, and boxes' seconds at most SECONDS_SHARE of the masks'."""
    out = []
    ns = sorted({n for (p, n) in s["points"] if p == "sup"} & {n for (p, n) in s["points"] if p == "semi"})
    for n in ns:
        m, b = s["points"][("sup", n)]["pairs"], s["points"][("semi", n)]["pairs"]
        pairs = sorted(set(m) & set(b) & set(s["baselines"]))
        if not pairs:
            out.append((n, "cannot be judged", "no run has masks, boxes and the baselines"))
            continue
        u = np.array([s["baselines"][p]["Unsup"] for p in pairs])
        gm = float(np.mean([m[p][0] for p in pairs] - u))
        gb = float(np.mean([b[p][0] for p in pairs] - u))
        sm, sb = (float(np.mean([d[p][1] for p in pairs])) for d in (m, b))
        where = f"{len(pairs)} runs; masks {100 * gm:+.1f} AP for {sm:.0f} s, boxes {100 * gb:+.1f} AP for {sb:.0f} s"
        if gm <= 0:
            out.append((n, "cannot be judged", f"masks gain nothing over Unsup ({where})"))
            continue
        ok = gb >= GAIN_SHARE * gm and sb <= SECONDS_SHARE * sm
        out.append((n, "met" if ok else "MISSED",
                    f"boxes {100 * gb / gm:.0f}% of the mask gain at {sb / sm:.2f}x its seconds ({where})"))
    return out


def _mean_baseline(s: dict, name: str) -> float | None:
    vals = [v[name] for v in s["baselines"].values()]
    return float(np.mean(vals)) if vals else None


def table(s: dict) -> list[str]:
    """The table; a column of what the known defects (decision 0025) add, on the same models, where
    any result file recorded it ("-" for rows without: older files, or no known defect kept)."""
    with_known = any(pt["known"] for pt in s["points"].values())
    extra = (" of which known defects (same models, runs) |", "---|") if with_known else ("", "")
    out = ["| labels | n | runs | pixel AP | gain over Unsup (same runs) |" + extra[0]
           + " labelling s (all n images) | s per image |",
           "|---|---|---|---|---|" + extra[1] + "---|---|"]
    for name in ("Unsup", "PatchCore"):
        v = _mean_baseline(s, name)
        if v is not None:
            out.append(f"| {name} | 0 | {len(s['baselines'])} | {100 * v:.1f} | - |" + (" - |" if with_known else "")
                       + " 0 | 0 |")
    for proto, kind in KINDS.items():
        for n in sorted(n for (p, n) in s["points"] if p == proto):
            pt = s["points"][(proto, n)]
            gain = "-" if pt["gain"] is None else f"{100 * pt['gain']:+.1f}"
            kd = ""
            if with_known:
                kd = " - |" if pt["known"] is None else f" {100 * pt['known'][0]:+.1f} ({pt['known'][1]}) |"
            out.append(f"| {kind} | {n} | {pt['runs']} | {100 * pt['ap']:.1f} | {gain} |{kd} {pt['seconds']:.0f} | "
                       f"{pt['seconds'] / n:.1f} |")
    return out


def plot(s: dict, path: Path) -> None:
    """One curve per kind of label, mean pixel AP against mean labelling seconds (log x), with
    Unsup and PatchCore as horizontal lines. Matplotlib's object API on the Agg canvas: no pyplot
    state, so it is safe inside other programs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from core.fileio import atomic_write_bytes
    fig = Figure(figsize=(7, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, (proto, kind) in enumerate(KINDS.items()):
        ns = sorted(n for (p, n) in s["points"] if p == proto)
        if not ns:
            continue
        xs = [max(s["points"][(proto, n)]["seconds"], 1e-3) for n in ns]
        ys = [100 * s["points"][(proto, n)]["ap"] for n in ns]
        line, = ax.plot(xs, ys, marker="o", label=kind, color=f"C{i}")   # one colour per kind, always
        for x, y, n in zip(xs, ys, ns):
            ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                        color=line.get_color())
    for name, style in (("Unsup", "--"), ("PatchCore", ":")):
        v = _mean_baseline(s, name)
        if v is not None:
            ax.axhline(100 * v, linestyle=style, color="grey" if name == "Unsup" else "black", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("estimated labelling seconds (sum over the labelled images; core/data/labelcost.py)")
    ax.set_ylabel("test pixel AP (%)")
    ax.set_title(f"Label economy: {len(s['classes'])} classes x {len(s['seeds'])} seeds "
                 f"(numbers: labelled defective images)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))   # outside: never over a curve
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def headline(v: list[tuple[int, str, str]]) -> str:
    """The verdicts in one phrase: where the claim was met, missed, or could not be judged."""
    parts = []
    for state, word in (("met", "met"), ("MISSED", "missed"), ("cannot be judged", "cannot be judged")):
        ns = [str(n) for n, st, _ in v if st == state]
        if ns:
            parts.append(f"{word} at n = {', '.join(ns)}")
    return "; ".join(parts)


def section(results: Path, out: Path, ladder=LADDER) -> list[str]:
    """The markdown section of docs/benchmarks.md (and its plot beside it), or [] without
    economy results. ``ladder``: the counts asked for (a class drawn fewer is reported clipped)."""
    from .report import contrast_line, provenance    # report imports this module lazily
    rows = load(results)
    if not rows:
        return []
    s = summarise(rows, ladder)
    png = out.with_name("economy.png")
    plot(s, png)
    kinds_seen = sorted({r["protocol"] for r in rows}, key=list(KINDS).index)
    ns_seen = sorted({r["n_labelled"] for r in rows})
    expected = len(s["classes"]) * len(kinds_seen) * len(ns_seen) * len(s["seeds"])
    lines = ["", "## Label economy: pixel AP per labelling second (bench/economy.py)", "",
             f"Over {len(s['classes'])} classes ({', '.join(s['classes'])}) and seeds "
             f"{', '.join(map(str, s['seeds']))}: {len(rows)} of the {expected} trainings that these "
             f"classes, kinds ({', '.join(KINDS[k] for k in kinds_seen)}), counts "
             f"({', '.join(map(str, ns_seen))}) and seeds make"
             + (" (the full protocol: 8 classes x 4 kinds x 4 counts x 3 seeds = 384)." if expected < 384 else ".")
             + " " + provenance([r for r in rows if r["protocol"] in KINDS])
             + contrast_line([r for r in rows if r["protocol"] in KINDS], KINDS),
             "",
             "For each class and seed, the largest count of defective test images is drawn once "
             "(stratified over defect types) and the first n of them are labelled, so the labelled "
             "sets are nested; every drawn image leaves the test set, so every row of a class and "
             "seed, Unsup and PatchCore included, is scored on the same test images. Masks and blocks "
             "train from scratch (blocks: the cells Eq. 14 marks, eps+ 25%, on the block tool's grid); "
             "boxes (one rotated box per defect component) fine-tune the class's unsupervised model "
             "on pseudo-masks (decisions 0015 and 0022), tags with ResMixMatch. With 4 or more "
             "labelled images, 30% of them are held out to choose checkpoints (core/eval/realval.py). "
             "Seconds are **estimated** by the label cost model (core/data/labelcost.py, the paper's Fig. 6 priors: boxes ~5 s, "
             "blocks ~17 s, masks >= 32 s for a typical defect; tags 2 s, our assumption), summed "
             "over the n labelled images; no person drew these labels. Means are over the runs "
             "(class, seed) each row has.", ""]
    if s["clipped"]:
        lines += ["Ladder clipped (fewer than twice the top count of defective test images): " + "; ".join(
            f"{c}: {d if d is not None else '?'} defective test images, pool {p}"
            for c, (p, d) in sorted(s["clipped"].items())) + ".", ""]
    if s["mismatch"]:
        lines += ["**Warning:** these class/seed pairs have jobs scored on different test images "
                  "(stale result files?): " + ", ".join(f"{c} seed {sd}" for c, sd in s["mismatch"]) + ".", ""]
    if len({frozenset(pt["pairs"]) for pt in s["points"].values()} | {frozenset(s["baselines"])}) > 1:
        lines += ["**Uneven:** the rows are means over different runs (the runs column; an unfinished "
                  "run), so their AP values, and the curves and lines of the plot, mix classes; the gain "
                  "column and the verdicts compare each row with Unsup on its own runs only.", ""]
    lines += table(s) + ["", f"![Pixel AP against labelling seconds]({png.name})", ""]
    v = verdicts(s)
    if v:
        lines += [f"Paper's claim (Fig. 6, Table 6), boxes reach >= {100 * GAIN_SHARE:.0f}% of the pixel "
                  f"masks' AP gain over Unsup at <= 1/{round(1 / SECONDS_SHARE)} of their labelling "
                  f"seconds, judged per n on the same images: **{headline(v)}** "
                  f"({len(s['classes'])} classes x {len(s['seeds'])} seeds)."]
        lines += [f"- n = {n}: {state}: {why}" for n, state, why in v]
        lines.append("")
    return lines
