"""Turn benchmark job results (JSON) into ``docs/benchmarks.md``."""
from __future__ import annotations

import datetime as dt
from collections import Counter
import json
import platform
import subprocess
from pathlib import Path

import numpy as np

METRICS = [("pixel_ap", "AP"), ("pro", "PRO"), ("pixel_auroc", "pAUROC"), ("image_auroc", "iAUROC")]


# anomalib's PatchCore on the same weights, run by the shared reference tool (outside the project;
# read, never copied): the parity target of our PatchCore (docs/decisions/0013).
REFERENCE = Path(__file__).resolve().parent.parent.parent / "shared" / "tools" / "patchcore_dev_piped.json"


def reference_patchcore(path: Path = REFERENCE) -> dict[str, dict]:
    """{class: metrics} of the reference PatchCore, or {} when the file is absent or unreadable."""
    try:
        return json.loads(path.read_text())["classes"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def reference_table(rows: list[dict], ref: dict[str, dict]) -> list[str]:
    """Pixel AP of SemiREST, our PatchCore and anomalib's, per class and on average. Parity is
    PatchCore's own map (``patchcore_unsharpened``: no sharpening, decision 0026) against anomalib's;
    results from before the sharpening have only ``patchcore``, which was that map."""
    out = ["| class | SemiREST | PatchCore (ours) | PatchCore (ours, unsharpened) | PatchCore (anomalib 2.7.0) "
           "| unsharpened - anomalib | SemiREST - PatchCore (ours) | SemiREST - anomalib |",
           "|---|---|---|---|---|---|---|---|"]
    acc = []
    for r in rows:
        a = ref.get(r["category"], {}).get("pixel_ap")
        s, p = r["semirest"]["pixel_ap"], r.get("patchcore", {}).get("pixel_ap")
        u = r.get("patchcore_unsharpened", r.get("patchcore", {})).get("pixel_ap")
        if a is None or p is None:
            continue
        acc.append((s, p, u, a))
        out.append(f"| {r['category']} | {_pct(s)} | {_pct(p)} | {_pct(u)} | {_pct(a)} | {100 * (u - a):+.1f} "
                   f"| {100 * (s - p):+.1f} | {100 * (s - a):+.1f} |")
    if not acc:
        return []
    s, p, u, a = np.mean(np.array(acc), axis=0)
    out.append(f"| **mean** | **{_pct(s)}** | **{_pct(p)}** | **{_pct(u)}** | **{_pct(a)}** | **{100 * (u - a):+.1f}** "
               f"| **{100 * (s - p):+.1f}** | **{100 * (s - a):+.1f}** |")
    return out


def _by_class_protocol(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """{(class, protocol): its result files}."""
    by: dict = {}
    for r in rows:
        by.setdefault((r["category"], r["protocol"]), []).append(r)
    return by


def _load(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f}"


def _commit() -> str:
    state = code_state()
    return state["commit"] if state else "?"


def code_state(root: Path = Path(__file__).resolve().parent.parent) -> dict | None:
    """The commit a result was measured with, and whether the method's code (core/, bench/)
    differed from it: recorded in every result file, so that a table built from files measured
    at different commits says so instead of passing old numbers off as the current code's."""
    try:
        commit = subprocess.check_output(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                         text=True, stderr=subprocess.DEVNULL).strip()
        dirty = subprocess.check_output(["git", "-C", str(root), "status", "--porcelain", "--", "core", "bench"],
                                        text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return None     # not a git checkout (an installed copy): the files say "not recorded"
    return {"commit": commit, "modified": bool(dirty)}


def code_line(rows: list[dict]) -> str:
    """Which commits these result files were measured at (recorded by bench/job.py and
    bench/next_label.py since 2026-12-06; older files say nothing)."""
    seen: dict[str, int] = {}
    for r in rows:
        if r.get("code"):
            key = r["code"]["commit"] + (" with uncommitted changes to core/ or bench/" if r["code"]["modified"] else "")
            seen[key] = seen.get(key, 0) + 1
    older = sum("code" not in r for r in rows)
    # job.py writes "code": null when it ran outside a git checkout (an installed copy)
    outside = sum("code" in r and not r["code"] for r in rows)
    said = [f"`{k}` ({n} file{'s' if n > 1 else ''})" for k, n in sorted(seen.items())]
    said += [f"not recorded in {older} of {len(rows)} result files (measured before 2026-12-06)"] if older else []
    said += [f"unknown for {outside} of {len(rows)} result files (measured outside a git checkout)"] if outside else []
    return "Measured at commit: " + ("; ".join(said) or "no result files") + "."


# the CPU extensions that change how fast int8 (VNNI, AMX) and bfloat16 (AMX, AVX512-BF16) run
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def machine() -> dict:
    """What a speed number was measured on: the CPU's model, logical cores and speed-relevant
    extensions, and the torch and ONNX Runtime versions. Recorded in every result file that holds
    a timing, so that runs on different hosts or library versions are not compared as if alike."""
    import os
    from importlib.metadata import PackageNotFoundError, version
    from core.deploy.precision import cpu_info
    info = cpu_info()
    flags = set(info.get("flags", "").split())
    name = info.get("model name") or platform.processor() or platform.machine()
    if info.get("cpu family") and info.get("model"):      # a VM's name is often generic
        name += f" (family {info['cpu family']}, model {info['model']})"
    out = {"cpu": name,
           "cores": os.cpu_count(), "flags": [f for f in SPEED_FLAGS if f in flags]}
    for pkg in ("torch", "onnxruntime"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def machine_line(rows: list[dict]) -> str:
    """Which machines and library versions a table's timings come from (recorded since
    2026-12-07; older files say nothing)."""
    seen: dict[str, int] = {}
    for r in rows:
        m = r.get("machine")
        if m:
            key = (f"{m['cpu']}, {m['cores']} logical cores ({', '.join(m['flags']) or 'no AVX2'}), "
                   f"torch {m['torch']}, ONNX Runtime {m['onnxruntime'] or 'absent'}")
            seen[key] = seen.get(key, 0) + 1
    older = sum(not r.get("machine") for r in rows)
    said = [f"{k} ({n} file{'s' if n > 1 else ''})" for k, n in sorted(seen.items())]
    said += [f"not recorded in {older} of {len(rows)} result files (measured before 2026-12-07)"] if older else []
    return ("Timed on: " + "; ".join(said) + ("." if len(seen) <= 1 else
                                               " (SEVERAL MACHINES: the timings do not compare)."))


def provenance(rows: list[dict]) -> str:
    """The Swin size and the code commit a table's result files were measured with."""
    return swin_line(rows) + " " + code_line(rows)


def swin_line(rows: list[dict]) -> str:
    """Which Swin sizes these result files were measured with (recorded by bench/job.py since
    2026-11-30; older files say nothing), so that a table never mixes presets silently."""
    sizes = sorted({(r["swin"]["embed_dim"], r["swin"]["num_heads"]) for r in rows if "swin" in r})
    unknown = sum("swin" not in r for r in rows)
    said = [f"width {w}, {h} heads" for w, h in sizes] + ([f"not recorded in {unknown} of {len(rows)} "
                                                         "result files"] if unknown else [])
    return ("Swin: " + "; ".join(said) + ("" if len(sizes) <= 1 else
                                          " (MIXED SIZES: the means mix presets)") + ".")


def _mean_sd(vals: list[float]) -> str:
    if not vals:
        return "-"
    a = 100 * np.array(vals)
    return f"{a.mean():.1f} ± {a.std(ddof=0):.1f}" if len(a) > 1 else f"{a[0]:.1f}"


def unsup_table(rows: list[dict]) -> list[str]:
    head = ("| class | " + " | ".join(f"SemiREST {m}" for _, m in METRICS) + " | "
            + " | ".join(f"PatchCore {m}" for _, m in METRICS) + " | train s | peak RSS MB |")
    out = [head, "|" + "---|" * (2 + 2 * len(METRICS) + 1)]
    acc = {k: [] for k in ("s", "p")}
    for r in rows:
        s, p = r["semirest"], r.get("patchcore", {})
        acc["s"].append([s.get(k) for k, _ in METRICS])
        acc["p"].append([p.get(k) for k, _ in METRICS])
        out.append(f"| {r['category']} | " + " | ".join(_pct(s.get(k)) for k, _ in METRICS) + " | "
                   + " | ".join(_pct(p.get(k)) for k, _ in METRICS)
                   + f" | {r['train_s']:.0f} | {r['peak_rss_mb']:.0f} |")
    if rows:
        ms = np.nanmean(np.array(acc["s"], dtype=float), axis=0)
        mp = np.nanmean(np.array(acc["p"], dtype=float), axis=0)
        out.append("| **mean** | " + " | ".join(f"**{_pct(v)}**" for v in ms) + " | "
                   + " | ".join(f"**{_pct(v)}**" for v in mp)
                   + f" | {np.mean([r['train_s'] for r in rows]):.0f} | {max(r['peak_rss_mb'] for r in rows):.0f} |")
    return out


def methods_table(rows: list[dict]) -> list[str]:
    """Every registered method (core/methods/__init__.py) that the unsupervised jobs ran, side by side: mean
    over classes of each metric, fit seconds and ms per image (all stages), from the same jobs."""
    from core.methods import REGISTRY
    present = [m for m in REGISTRY if any(m.name in r for r in rows)]
    if len(present) < 2:
        return []
    out = ["| method | " + " | ".join(m for _, m in METRICS)
           + " | fit s | ms per image | peak MB | classes |",
           "|---|" + "---|" * (len(METRICS) + 4)]
    # the job's peak covers every method of a class (one process); each method's own column is the
    # process's peak while that method fitted and evaluated (bench/memory.py), when measured
    peak = max((r.get("peak_rss_mb", 0.0) for r in rows), default=0.0)
    for m in present:
        have = [r for r in rows if m.name in r]
        vals = [np.nanmean([r[m.name].get(k, np.nan) for r in have]) for k, _ in METRICS]
        fit = np.mean([r["train_s"] if m.name == "semirest" else r.get(f"{m.name}_fit_s", np.nan) for r in have])
        ms = np.median([sum(r.get(f"{m.name}_ms", {}).values()) for r in have])
        mbs = [r[f"{m.name}_peak_mb"] for r in have if r.get(f"{m.name}_peak_mb") is not None]
        mb = f"{max(mbs):.0f}" if mbs else "-"
        out.append(f"| {m.title} | " + " | ".join(_pct(v) for v in vals)
                   + f" | {fit:.0f} | {ms:.1f} | {mb} | {len(have)} |")
    out += ["", f"Peak memory of a job (all {len(present)} methods of a class in one process): at most "
                f"{peak:.0f} MB. Peak MB per method: the largest over the classes of the process's "
                "resident peak while that method fitted and evaluated (it includes what the process "
                "already held; '-' where not measured). Fit s: SemiREST's whole training; the others' "
                "whole fit."]
    return out


def speed_table(rows: list[dict]) -> list[str]:
    out = ["| class | SemiREST ms/img: backbone | search | Swin | post | total | PatchCore ms/img total | "
           "SemiREST ONNX Runtime ms/img | PatchCore ONNX Runtime ms/img |",
           "|---|---|---|---|---|---|---|---|---|"]
    tots = []
    nan = float("nan")
    for r in rows:
        t = r["semirest_ms"]
        tot = sum(t.values())
        pct = sum(r.get("patchcore_ms", {}).values())
        # the exported graph (core/deploy/export.py) run by ONNX Runtime on the same images and threads
        so, po = ((r.get(k) or {}).get("ms", nan) for k in ("semirest_onnx", "patchcore_onnx"))
        tots.append((t.get("backbone", 0), t.get("search", 0), t.get("swin", 0), t.get("post", 0), tot, pct, so, po))
        out.append(f"| {r['category']} | {t.get('backbone', 0):.1f} | {t.get('search', 0):.1f} | "
                   f"{t.get('swin', 0):.1f} | {t.get('post', 0):.1f} | {tot:.1f} | {pct:.1f} | "
                   f"{so:.1f} | {po:.1f} |".replace("nan", "-"))
    if tots:
        med = np.median(np.array(tots), axis=0)
        out.append("| **median** | " + " | ".join(f"**{v:.1f}**" if np.isfinite(v) else "-" for v in med) + " |")
    return out


def mixed_sizes_table(mixed: list[dict], unsup: list[dict]) -> list[str]:
    """The many-sizes sets (bench/mixed_sizes.py) beside their source class at its one size."""
    from .mixed_sizes import PREFIX
    src = {r["category"]: r for r in unsup}
    out = ["| set | images (distinct sizes) | smallest, largest, tallest, widest (w x h) | SemiREST AP | "
           "PatchCore AP | SemiREST iAUROC | PatchCore iAUROC | same class at 128 x 128: SemiREST / "
           "PatchCore AP | train s | steps, s per step | PatchCore fit s | peak RSS MB |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(mixed, key=lambda r: r["category"]):
        z = r.get("sizes", {})
        ext = ", ".join("x".join(map(str, z[k])) for k in ("smallest", "largest", "tallest", "widest") if k in z)
        s, p = r["semirest"], r.get("patchcore", {})
        o = src.get(r["category"][len(PREFIX):])
        same = f"{_pct(o['semirest']['pixel_ap'])} / {_pct(o.get('patchcore', {}).get('pixel_ap'))}" if o else "-"
        steps, sw = r.get("steps"), r.get("swin_train_s")
        per = f"{steps}, {sw / steps:.2f}" if steps and sw else "-"
        out.append(f"| {r['category']} | {z.get('images', '?')} ({z.get('distinct', '?')}) | {ext} | "
                   f"{_pct(s.get('pixel_ap'))} | {_pct(p.get('pixel_ap'))} | {_pct(s.get('image_auroc'))} | "
                   f"{_pct(p.get('image_auroc'))} | {same} | {r['train_s']:.0f} | {per} | "
                   f"{r.get('patchcore_fit_s', float('nan')):.0f} | {r['peak_rss_mb']:.0f} |")
    return out


PLAIN_PATCHCORE = "PatchCore (unsharpened)"


def _protocol_values(by: dict, cat: str, metric: str) -> dict[str, dict[int, float]]:
    """{column: {seed: value}} of one class. PatchCore and Unsup on each labelled job's own test
    split (same images as Sup/Semi/Tag; the first labelled job of each seed carries them), else on
    the full test set (seed 0). ``PLAIN_PATCHCORE``: PatchCore's own map (unsharpened, decision
    0026; a result from before it has only ``patchcore``, which was that map)."""
    same = [r for p in ("sup", "semi", "tag") for r in by.get((cat, p), []) if "unsup_on_split" in r]
    same = {r["seed"]: r for r in same}
    un = by.get((cat, "unsup"), [])
    if same:
        pcs = list(same.values())
        vals = {"Unsup": {sd: r["unsup_on_split"][metric] for sd, r in same.items()}}
    else:
        pcs = [r for r in un if "patchcore" in r]
        vals = {"Unsup": {r["seed"]: r["semirest"][metric] for r in un}}
    vals["PatchCore"] = {r["seed"]: r["patchcore"][metric] for r in pcs}
    vals[PLAIN_PATCHCORE] = {r["seed"]: r.get("patchcore_unsharpened", r["patchcore"])[metric] for r in pcs}
    for proto, col in (("sup", "Sup"), ("semi", "Semi"), ("tag", "Tag")):
        vals[col] = {r["seed"]: r["semirest"][metric] for r in by.get((cat, proto), [])}
    return vals


def protocol_table(by: dict, classes: list[str], metric: str) -> tuple[list[str], dict[str, float]]:
    """The table, and each column's mean over classes (of each class's mean over seeds)."""
    cols = ["PatchCore", "Unsup", "Sup", "Semi", "Tag"]
    out = ["| class | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    per_class = {cat: _protocol_values(by, cat, metric) for cat in classes}
    means: dict[str, float] = {}
    for cat in classes:
        out.append(f"| {cat} | " + " | ".join(_mean_sd(list(per_class[cat][c].values())) for c in cols) + " |")
    cells = []
    for c in [*cols, PLAIN_PATCHCORE]:
        class_means = [np.mean(list(per_class[cat][c].values())) for cat in classes if per_class[cat][c]]
        if not class_means:
            cells.append("-")
            continue
        means[c] = float(np.mean(class_means))
        # spread of the 8-class mean between seeds, over the seeds every class has
        common = set.intersection(*(set(per_class[cat][c]) for cat in classes))
        seed_means = [np.mean([per_class[cat][c][sd] for cat in classes]) for sd in sorted(common)]
        spread = f" (sd {100 * np.std(seed_means):.1f} over {len(seed_means)} seeds)" if len(seed_means) > 1 else ""
        cells.append(f"**{100 * means[c]:.1f}**{spread}")
    out.append("| **mean** | " + " | ".join(cells[:len(cols)]) + " |")   # the unsharpened one: bar_lines
    return out, means


def bar_lines(means: dict[str, float]) -> list[str]:
    """The accuracy issue's bars on mean pixel AP, stated from the table's means: unsupervised
    SemiREST >= PatchCore + 5; boxes (Semi) >= Unsup + 5 and within 3 of Sup; Tag >= Unsup."""
    need = ("PatchCore", "Unsup", "Sup", "Semi", "Tag")
    if not all(k in means for k in need):
        return []
    # judged on the means as printed (0.1 point): a Tag model that kept its start scores the same
    # maps as Unsup, yet its separately computed AP can sit 1e-9 below it
    pc, u, su, se, t = (round(100 * means[k], 1) for k in need)
    ok = lambda b: "met" if b else "MISSED"
    return ["Bars on mean pixel AP: "
            f"Unsup at least PatchCore + 5: {ok(u - pc >= 5)} ({u - pc:+.1f}); "
            f"Semi at least Unsup + 5: {ok(se - u >= 5)} ({se - u:+.1f}); "
            f"Semi within 3 of Sup: {ok(su - se <= 3)} ({se - su:+.1f}); "
            f"Tag at least Unsup: {ok(t >= u)} ({t - u:+.1f})."
            + (f" Against PatchCore's own map (unsharpened, at parity with anomalib's; decision 0026) "
               f"Unsup is {u - round(100 * means[PLAIN_PATCHCORE], 1):+.1f}." if PLAIN_PATCHCORE in means else ""),
            ""]


def contrast_line(rows: list[dict], names: dict[str, str] | None = None) -> str:
    """Whether the labelled jobs' maps had decision 0028's pixel-contrast refinement: a result file
    from before it has no "contrast" entry, and its model scored the plain map. Says which
    protocols' files predate it (``names``: what to call each protocol, e.g. the economy's label
    kinds)."""
    before = [r for r in rows if "contrast" not in r]
    if not before:
        return ""
    per = Counter(r["protocol"] for r in before)
    total = Counter(r["protocol"] for r in rows)
    which = ", ".join(f"{(names or {}).get(p, p)} {per[p]} of {total[p]}" for p in sorted(per))
    text = (f" **{len(before)} of {len(rows)} result files predate decision 0028** ({which}; held-out "
            "masks, block cells and boxes choose the maps' pixel-contrast refinement): their models "
            "scored the plain map.")
    if set(per) <= {"tag", "unsup"}:
        return text + (" Tags hold no pixels: a tagged model chooses on the synthetic split, which kept "
                       "the plain map for every unsupervised model of the dev classes.")
    return text + " Rerun those jobs to score them under it."


def complete_seeds(rows: list[dict], classes: list[str]) -> tuple[list[int], str]:
    """The seeds whose labelled files are complete (every class has a file of every labelled
    protocol present), and a sentence naming the others, which stay out of the tables until a run
    completes them: a mean over some classes, or over one protocol's seeds and not another's, would
    not compare with the rest."""
    lab = [r for r in rows if r["protocol"] != "unsup"]
    protos = sorted({r["protocol"] for r in lab})
    have = {(r["category"], r["protocol"], r["seed"]) for r in lab}
    seeds = sorted({r["seed"] for r in lab})
    done = [sd for sd in seeds if all((c, p, sd) in have for c in classes for p in protos)]
    need = len(classes) * len(protos)
    left = [f"seed {sd} ({sum(1 for c in classes for p in protos if (c, p, sd) in have)} of {need} files)"
            for sd in seeds if sd not in done]
    if not left:
        return done, ""
    return done, (f" Incomplete and left out of these tables until a run completes it: {', '.join(left)}; "
                  "its files are in `docs/bench-results/`.")


def known_defects_line(rows: list[dict]) -> str:
    """How many known-defect blocks each labelled protocol kept, and, where the jobs scored the same
    models without them (bench/job.py ``semirest_without_known``), the mean pixel AP they added."""
    per: dict[str, list[int]] = {}
    gain: dict[str, list[float]] = {}
    for r in rows:
        kd = r.get("known_defects")
        if r["protocol"] in ("sup", "semi", "tag") and kd is not None:
            per.setdefault(r["protocol"], []).append(int(kd.get("entries", 0)))
            if "semirest_without_known" in r:
                gain.setdefault(r["protocol"], []).append(
                    r["semirest"]["pixel_ap"] - r["semirest_without_known"]["pixel_ap"])
    if not per:
        return ""
    names = {"sup": "Sup", "semi": "Semi", "tag": "Tag"}

    def one(p: str, v: list[int]) -> str:
        text = f"{names[p]}: {min(v)}-{max(v)} blocks per model" if min(v) != max(v) else \
            f"{names[p]}: {v[0]} blocks per model"
        if p in gain:
            text += (f", {100 * float(np.mean(gain[p])):+.1f} pixel AP from them "
                     f"(the same {len(gain[p])} models without them)")
        return text
    return "; " + "; ".join(one(p, v) for p, v in sorted(per.items()))


def pseudo_mask_line(rows: list[dict]) -> list[str]:
    """The boxes' pseudo-masks against the true masks of the same images (bench/job.py records it
    for semi runs since the model file keeps them), per class over its seeds; [] without any."""
    per: dict[str, list[dict]] = {}
    for r in rows:
        if r["protocol"] == "semi" and r.get("pseudo_masks", {}).get("images"):
            per.setdefault(r["category"], []).append(r["pseudo_masks"])
    if not per:
        return []
    cells = [f"{c} {np.mean([q['precision'] for q in v]):.2f} / {np.mean([q['recall'] for q in v]):.2f}"
             for c, v in sorted(per.items())]
    return ["Pseudo-masks of the boxes against the true masks' Eq. 14 blocks, over the blocks inside "
            "the boxes of the trained images (precision / recall): " + "; ".join(cells) + ".", ""]


def label_costs(rows: list[dict], means: dict[str, float], seeds: list[int]) -> dict:
    """What each kind of label bought on this benchmark, for the app's Train panel
    (resources/label_costs.json): mean pixel AP per protocol column, and where it came from."""
    unsup = [r for r in rows if r["protocol"] == "unsup"]
    lab = [r for r in rows if r["protocol"] != "unsup"]
    return {"source": "docs/benchmarks.md", "date": dt.date.today().isoformat(), "commit": _commit(),
            "data": "8 PIPED defect classes, 10 defective images labelled per class",
            "preset": (lab or unsup)[0].get("preset", "?"), "backbone": (unsup or lab)[0].get("backbone", "?"),
            "seeds": seeds, "pixel_ap": {k: round(100 * v, 1) for k, v in means.items()
                                                  if k != PLAIN_PATCHCORE}}


def write_report(results: Path, out: Path, args, costs_out: Path | None = None) -> None:
    from core.fileio import atomic_write_text
    from .mixed_sizes import PREFIX
    from .speed import speed_lines
    rows = _load(results)
    mixed = [r for r in rows if r["category"].startswith(PREFIX)]
    rows = [r for r in rows if not r["category"].startswith(PREFIX)]
    unsup = sorted([r for r in rows if r["protocol"] == "unsup"], key=lambda r: r["category"])
    by = _by_class_protocol(rows)
    classes = sorted({r["category"] for r in rows})
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python -m bench` (`./dev bench`) on {dt.date.today().isoformat()}, commit "
        f"`{_commit()}`, {platform.machine()} CPU, {getattr(args, 'threads', 2)} threads, device "
        f"`{getattr(args, 'device', 'cpu')}`, preset `{getattr(args, 'preset', 'cpu')}`, backbone "
        f"`{unsup[0]['backbone'] if unsup else '?'}` (offline ImageNet weights). Data: "
        "`../shared/data/piped` (8 PIPED classes, 128 x 128 paper images, 24 training normals, of "
        "which SemiREST holds 4 out for validation, 72 test images of which 48 have impurities). "
        "Metrics in %, scored as `../shared/tools/metrics.py` does: each map resized to its mask's "
        "own size, pixels of all test images pooled. PatchCore uses the same backbone features "
        "(ImageNet normalisation, zero-padded 3x3 aggregation: at parity with anomalib's, "
        "decision 0013), without position code, a bank of all 24 normals, and is computed in the "
        "same job. Never is a checkpoint, weight or threshold chosen on test images: the "
        "unsupervised training keeps its last state (decision 0014; the validation split of "
        "held-out normals and synthetic defects chooses the fusion weight and calibrates), and "
        "the labelled protocols choose on held-out labelled defects.",
        "",
        "## Unsupervised: SemiREST vs PatchCore",
        "",
    ]
    lines += [provenance(unsup), ""] + unsup_table(unsup)
    # the shared tools sit beside the shared data (../shared/{data/piped,tools}), wherever the
    # checkout is (a git worktree is not beside them)
    data = getattr(args, "data", None)
    ref_file = Path(data).parent.parent / "tools" / REFERENCE.name if data else REFERENCE
    ref = reference_table(unsup, reference_patchcore(ref_file if ref_file.exists() else REFERENCE))
    if ref:
        lines += ["", "### Pixel AP beside anomalib's PatchCore (same weights; "
                  "`../shared/tools/patchcore_dev_piped.json`, scored by the same rule)", ""] + ref
    side = methods_table(unsup)
    if side:
        lines += ["", "### Every method side by side (means over the classes; the same jobs)", ""] + side
    lines += ["", "Train s: the whole SemiREST training (features, coreset, synthesis, optimisation, "
              "calibration). Peak RSS: the job process's maximum resident memory (every method of "
              "the class together).", "", "## Inference time per image (median over the test images)", "",
              "Per stage, as `semirest eval` scores the test images (8 at a time).", ""]
    lines += [machine_line(unsup), ""] + speed_table(unsup)
    ratios = speed_lines(unsup)
    if ratios:
        lines += ["", "### Whole inference against the backbone alone (bench/speed.py)", "",
                  "One run per class: ms per image of the whole inference (image in, map and score "
                  "out) at batch 1 and 8, with and without bagging, and the backbone alone at the "
                  "same batch size, measured interleaved; the ratio is whole / backbone (issue 12's "
                  "targets: <= 2x with bagging, <= 1.3x without). The ratios are the robust figures "
                  "on a shared machine.", ""] + ratios
    from .precision import LOW, table as precision_table
    pt = precision_table(results / "precision")
    if pt:
        lines += ["", f"### {LOW} against float32 (bench/precision.py, `--precision {LOW}`)", ""] + pt
    from .quantize import table as int8_table
    q = int8_table(results / "quantize")
    if q:
        lines += ["", "### int8 export against float32 (bench/quantize.py, `semirest export --quantize int8`)",
                  ""] + q
    if mixed:
        lines += ["", "## Images of many sizes (unsupervised)", "",
                  "Real PIPED images and masks, each cropped to 45-100 % of each side, stretched to a "
                  "longest side of 96-320 px and an aspect ratio changed by 0.6-1.6, in grayscale "
                  "(bench/mixed_sizes.py, seed 0): every image its own size, as on real lines. Same "
                  "settings as above; the dry run (core/preflight.py) runs first when a set has 16 "
                  "normals or more. Train s is the whole fit; s per step the optimisation alone. "
                  + provenance(mixed), ""]
        lines += mixed_sizes_table(mixed, unsup)
    if any(p in {r["protocol"] for r in rows} for p in ("sup", "semi", "tag")):
        seeds, partial = complete_seeds(rows, classes)
        rows = [r for r in rows if r["protocol"] == "unsup" or r["seed"] in seeds]
        by = _by_class_protocol(rows)
        lines += ["", "## Labelled protocols (10 defective test images move to training; mean ± sd over "
                  f"seeds {', '.join(map(str, seeds))})", "",
                  "Every column of these tables is measured on the same test images: each seed's "
                  "remaining test split. PatchCore and Unsup are the unsupervised baselines evaluated "
                  "on that split (Unsup is the class's unsupervised model, the start of Semi and Tag); "
                  "Sup trains from scratch with block labels, Semi fine-tunes on pseudo-masks made "
                  "from one rotated box per defect component (decisions 0015 and 0022), Tag fine-tunes with "
                  "ResMixMatch on image tags; 3 of the 10 labelled images are held out to choose "
                  "checkpoints (core/eval/realval.py). The blocks the labels mark defective (Tag: each "
                  "tagged image's highest block, where the model tells it from the held-out normals) "
                  "then score test blocks by nearness (known defects, decision 0025"
                  + known_defects_line(rows) + "). "
                  + provenance([r for r in rows if r["protocol"] != "unsup"])
                  + contrast_line([r for r in rows if r["protocol"] != "unsup"]) + partial, ""]
        ap_means: dict[str, float] = {}
        for metric, name in METRICS:
            table, means = protocol_table(by, classes, metric)
            lines += [f"### {name}", ""] + table + [""]
            if metric == "pixel_ap":
                ap_means = means
                lines += bar_lines(means) + pseudo_mask_line(rows)
        if costs_out is not None:
            atomic_write_text(costs_out, json.dumps(label_costs(rows, ap_means, seeds), indent=1) + "\n")
    from .economy import LADDER, section
    lines += section(results, out, getattr(args, "ladder", None) or LADDER)
    from .next_label import table as next_label_table
    nl = next_label_table(results / "next_label")
    if nl:
        lines += ["", "## Which image to label next (bench/next_label.py)", ""] + nl
    from .checkpoints import table as checkpoints_table
    ck = checkpoints_table(results / "checkpoints")
    if ck:
        lines += ["", "## Does validation rank checkpoints as the test does? (bench/checkpoints.py)", ""] + ck
    notes = out.with_name("benchmarks-notes.md")
    if notes.exists():
        lines += ["", notes.read_text()]
    atomic_write_text(out, "\n".join(lines) + "\n")
