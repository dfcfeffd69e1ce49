"""bench/report.py: the protocol tables and the bar check are computed from result files."""
from __future__ import annotations

import json

import pytest

from bench.report import bar_lines, protocol_table, write_report


def _row(cat, proto, seed, ap, unsup_ap=None, pc_ap=None):
    m = lambda v: {"pixel_ap": v, "pro": v, "pixel_auroc": v, "image_auroc": v}
    r = {"category": cat, "protocol": proto, "seed": seed, "semirest": m(ap), "backbone": "x",
         "train_s": 1.0, "peak_rss_mb": 1.0, "semirest_ms": {"total": 1.0}}
    if unsup_ap is not None:
        r["unsup_on_split"] = m(unsup_ap)
        r["patchcore"] = m(pc_ap)
    return r


def _by(rows):
    by = {}
    for r in rows:
        by.setdefault((r["category"], r["protocol"]), []).append(r)
    return by


def test_protocol_table_means_spread_and_same_split_baselines():
    rows = []
    for cat, base in (("A", 0.0), ("B", 0.2)):
        # the unsupervised job on the full test set must not be used when a split value exists
        rows.append(_row(cat, "unsup", 0, 0.99, None))
        for seed in (0, 1):
            rows.append(_row(cat, "sup", seed, 0.6 + base + 0.1 * seed, unsup_ap=0.4 + base, pc_ap=0.5 + base))
            rows.append(_row(cat, "semi", seed, 0.45 + base))
            rows.append(_row(cat, "tag", seed, 0.3 + base))
    table, means = protocol_table(_by(rows), ["A", "B"], "pixel_ap")
    assert means["Unsup"] == pytest.approx(0.5)        # (0.4 + 0.6) / 2, not the 0.99 of the full set
    assert means["PatchCore"] == pytest.approx(0.6)
    assert means["Sup"] == pytest.approx(0.75)         # A: 0.65, B: 0.85
    assert table[2] == "| A | 50.0 ± 0.0 | 40.0 ± 0.0 | 65.0 ± 5.0 | 45.0 ± 0.0 | 30.0 ± 0.0 |"
    # per-seed class means 0.7 and 0.8: sd 5.0 over the two seeds
    assert "**75.0** (sd 5.0 over 2 seeds)" in table[-1]
    bars = bar_lines(means)[0]
    assert "Unsup at least PatchCore + 5: MISSED (-10.0)" in bars
    assert "Semi at least Unsup + 5: MISSED (+5.0)" not in bars and "Semi at least Unsup + 5: met (+5.0)" in bars
    assert "Semi within 3 of Sup: MISSED (-20.0)" in bars
    assert "Tag at least Unsup: MISSED (-10.0)" in bars
    # a Tag that kept its start: the same AP up to float noise is judged as printed, met
    same = bar_lines({**means, "Tag": means["Unsup"] - 1e-9})[0]
    assert "Tag at least Unsup: met (+0.0)" in same
    assert "Tag at least Unsup: MISSED (-0.1)" in bar_lines({**means, "Tag": means["Unsup"] - 0.001})[0]


def test_write_report_from_result_files(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    rows = [_row("A", "unsup", 0, 0.5, None), _row("A", "sup", 0, 0.7, 0.5, 0.6),
            _row("A", "semi", 0, 0.69), _row("A", "tag", 0, 0.55)]
    rows[0]["patchcore"] = rows[1]["patchcore"]
    rows[0]["patchcore_ms"] = {"total": 1.0}
    for r in rows:
        (res / f"{r['category']}-{r['protocol']}-{r['seed']}.json").write_text(json.dumps(r))
    out = tmp_path / "benchmarks.md"
    write_report(res, out, None, costs_out=tmp_path / "label_costs.json")
    text = out.read_text()
    costs = json.loads((tmp_path / "label_costs.json").read_text())
    assert costs["pixel_ap"] == {"PatchCore": 60.0, "Unsup": 50.0, "Sup": 70.0, "Semi": 69.0, "Tag": 55.0}
    assert costs["seeds"] == [0]
    assert "Semi within 3 of Sup: met (-1.0)" in text and "Semi at least Unsup + 5: met (+19.0)" in text
    assert "Tag at least Unsup: met (+5.0)" in text
    # a result from before decision 0026: its PatchCore map was the unsharpened one
    assert "Against PatchCore's own map (unsharpened, at parity with anomalib's; decision 0026) Unsup is -10.0." in text
    # a result that has both: the bar takes our (sharpened) PatchCore, the line the unsharpened one
    rows[1]["patchcore_unsharpened"] = {k: 0.4 for k in rows[1]["patchcore"]}
    (res / "A-sup-0.json").write_text(json.dumps(rows[1]))
    write_report(res, out, None, costs_out=tmp_path / "label_costs.json")
    text = out.read_text()
    assert "Unsup at least PatchCore + 5: MISSED (-10.0)" in text and "Unsup is +10.0." in text
    assert "PatchCore (unsharpened)" not in json.loads((tmp_path / "label_costs.json").read_text())["pixel_ap"]


def test_reference_table_puts_anomalib_beside_ours(tmp_path):
    from bench.report import reference_patchcore, reference_table
    rows = [_row("A", "unsup", 0, 0.70), _row("B", "unsup", 0, 0.50)]
    rows[0]["patchcore"] = {"pixel_ap": 0.60}
    rows[1]["patchcore"] = {"pixel_ap": 0.40}
    rows[1]["patchcore_unsharpened"] = {"pixel_ap": 0.36}     # A: a result from before decision 0026
    ref = {"A": {"pixel_ap": 0.61}, "B": {"pixel_ap": 0.43}}
    t = reference_table(rows, ref)
    assert t[2] == "| A | 70.0 | 60.0 | 60.0 | 61.0 | -1.0 | +10.0 | +9.0 |"
    assert t[3] == "| B | 50.0 | 40.0 | 36.0 | 43.0 | -7.0 | +10.0 | +7.0 |"
    assert t[-1] == "| **mean** | **60.0** | **50.0** | **48.0** | **52.0** | **-4.0** | **+10.0** | **+8.0** |"
    assert reference_table(rows, {}) == []
    assert reference_patchcore(tmp_path / "absent.json") == {}
    (tmp_path / "bad.json").write_text("{")
    assert reference_patchcore(tmp_path / "bad.json") == {}


def test_report_has_the_speed_ratios_of_jobs_that_measured_them(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    r = _row("A", "unsup", 0, 0.5, None)
    r["speed"] = {"rows": [
        {"batch": b, "bagging": bag, "ms": ms, "backbone_ms": bb, "ratio": ms / bb, "stages_ms": {}}
        for b, bb in ((1, 20.0), (8, 25.0)) for bag, ms in ((True, 50.0), (False, 30.0))]}
    (res / "A-unsup-0.json").write_text(json.dumps(r))
    (res / "B-unsup-0.json").write_text(json.dumps(_row("B", "unsup", 0, 0.5, None)))  # no speed
    out = tmp_path / "benchmarks.md"
    write_report(res, out, None)
    text = out.read_text()
    assert "| A | 1 | 20.0 | 50.0 | 2.50x | 30.0 | 1.50x |" in text
    assert "| A | 8 | 25.0 | 50.0 | 2.00x | 30.0 | 1.20x |" in text
    assert "| B | 1 |" not in text


def test_methods_table_puts_every_method_of_the_jobs_side_by_side():
    from bench.report import methods_table
    m = lambda v: {"pixel_ap": v, "pro": v, "pixel_auroc": v, "image_auroc": v}
    rows = [{**_row(c, "unsup", 0, ap), "patchcore": m(pc), "patchcore_fit_s": 2.0,
             "patchcore_ms": {"backbone": 3.0, "search": 1.0}, "patchcore_peak_mb": mb,
             "semirest_peak_mb": None}
            for c, ap, pc, mb in (("A", .6, .5, 300.0), ("B", .8, .4, 420.0))]
    out = methods_table(rows)
    semi, pc = (next(x for x in out if x.startswith(f"| {t} |")) for t in ("SemiREST", "PatchCore"))
    assert semi.split(" | ")[1] == "70.0" and pc.split(" | ")[1] == "45.0"
    assert pc.rstrip(" |").endswith("| 2 | 4.0 | 420 | 2")     # fit s, ms per image, peak MB, classes
    assert semi.rstrip(" |").endswith("| - | 2")                 # peak not measured: said, not 0
    assert methods_table([_row("A", "unsup", 0, .6)]) == []     # one method: nothing to compare


def test_phase_peak_sees_the_memory_of_its_own_phase_only():
    """bench/memory.py: the peak of a phase that allocates 200 MB is about 200 MB above that of a
    later phase that allocates nothing (the kernel's mark is reset between them)."""
    import numpy as np
    from bench.memory import PhasePeak
    with PhasePeak() as big:
        x = np.ones(200 * 2**20 // 8)
        x += 1
    del x
    with PhasePeak() as small:
        np.ones(10)
    if big.mb is None:
        pytest.skip("this kernel cannot reset its peak-RSS mark (/proc/self/clear_refs)")
    assert big.mb - small.mb > 150

def test_swin_line_says_the_sizes_and_flags_mixed_presets():
    from bench.report import swin_line
    a, b, c = _row("A", "sup", 0, 0.5), _row("B", "sup", 0, 0.5), _row("C", "sup", 0, 0.5)
    a["swin"] = b["swin"] = {"embed_dim": 192, "num_heads": 6, "depth": 4, "mu": 16, "step": 8}
    assert swin_line([a, b]) == "Swin: width 192, 6 heads."
    assert "not recorded in 1 of 3 result files" in swin_line([a, b, c])
    c["swin"] = {"embed_dim": 96, "num_heads": 3, "depth": 4, "mu": 16, "step": 8}
    line = swin_line([a, c])
    assert "width 96, 3 heads; width 192, 6 heads" in line and "MIXED SIZES" in line


def test_code_line_names_each_commit_and_the_files_without_one():
    from bench.report import code_line, provenance
    a, b, c, d = (_row(k, "sup", 0, 0.5) for k in "ABCD")
    a["code"] = b["code"] = {"commit": "abc1234", "modified": False}
    c["code"] = {"commit": "def5678", "modified": True}
    assert code_line([a, b]) == "Measured at commit: `abc1234` (2 files)."
    line = code_line([a, b, c, d])
    assert "`abc1234` (2 files)" in line and "`def5678 with uncommitted changes to core/ or bench/` (1 file)" in line
    assert "not recorded in 1 of 4 result files (measured before" in line and "outside" not in line
    d["code"] = None                                 # written by a copy outside git
    line = code_line([a, b, c, d])
    assert "unknown for 1 of 4 result files (measured outside a git checkout)" in line
    assert "not recorded" not in line
    assert provenance([a]).startswith("Swin: ") and provenance([a]).endswith(code_line([a]))


def test_code_state_reads_the_commit_and_flags_edits_to_the_methods_code(tmp_path):
    import subprocess
    from bench.report import code_state
    assert code_state(tmp_path) is None              # not a git checkout: nothing is claimed
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "m.py").write_text("x = 1\n")
    (tmp_path / "notes.md").write_text("a\n")
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "c"], check=True)
    head = subprocess.check_output(git[:3] + ["rev-parse", "--short", "HEAD"], text=True).strip()
    assert code_state(tmp_path) == {"commit": head, "modified": False}
    (tmp_path / "notes.md").write_text("b\n")       # docs do not change what was measured
    assert code_state(tmp_path)["modified"] is False
    (tmp_path / "core" / "m.py").write_text("x = 2\n")
    assert code_state(tmp_path) == {"commit": head, "modified": True}


def test_pseudo_mask_line_averages_each_class_over_its_seeds():
    from bench.report import pseudo_mask_line
    rows = [_row("A", "sup", 0, 0.7, 0.5, 0.6), _row("A", "semi", 0, 0.6), _row("A", "semi", 1, 0.6),
            _row("B", "semi", 0, 0.6)]
    assert pseudo_mask_line(rows) == []          # older result files have no record
    rows[1]["pseudo_masks"] = {"images": 7, "precision": 0.8, "recall": 0.4}
    rows[2]["pseudo_masks"] = {"images": 7, "precision": 0.6, "recall": 0.6}
    rows[3]["pseudo_masks"] = {"images": 0, "precision": 0.0, "recall": 0.0}    # nothing scored
    (line, _) = pseudo_mask_line(rows)
    assert "A 0.70 / 0.50." in line and "B " not in line


def test_pseudo_mask_quality_scores_the_recorded_blocks_against_the_true_masks(tmp_path):
    """bench/job.py: the model file's pseudo-mask record against Eq. 14's blocks of the true mask of
    the same image, matched by name and box region (names repeat across defect types)."""
    import numpy as np
    from bench.job import pseudo_mask_quality
    from core.config import preset
    from core.data.images import write_png
    from core.data.labels import ImageLabel, boxes_from_mask
    from core.learning.pseudomask import _rows
    from core.methods.semirest import labelled_items
    cfg = preset("cpu")
    size = cfg.features.image_size
    mask = np.zeros((size, size), bool)
    mask[64:72, 40:120] = True                   # a thin horizontal defect: 10 blocks of one row
    img = tmp_path / "crack" / "000.png"
    write_png(img, np.full((size, size, 3), 128, np.uint8))
    box = ImageLabel(img, width=size, height=size, boxes=boxes_from_mask(mask))
    full = ImageLabel(img, width=size, height=size, mask=mask)
    (b,) = labelled_items([box], cfg)
    boxed = b.targets == -1
    truth = np.zeros_like(boxed)
    truth[8, 5:15] = True
    assert (truth & ~boxed).sum() == 0
    guess = np.zeros_like(boxed)
    guess[8, 5:10] = True                        # half of the defect
    guess[9, 5] = boxed[9, 5]                    # and a normal block if the box holds one
    rec = [{"name": "000.png", "boxed": _rows(boxed), "defective": _rows(guess)},
           {"name": "000.png", "boxed": _rows(np.zeros_like(boxed)), "defective": _rows(guess)}]  # another image
    q = pseudo_mask_quality(rec, [box], [full], cfg)
    fp = int(guess[9, 5])
    assert q["images"] == 1 and q["positives"] == 5 + fp
    assert q["precision"] == pytest.approx(5 / (5 + fp)) and q["recall"] == pytest.approx(0.5)


def test_known_defects_line_gives_each_protocols_range_where_recorded():
    from bench.report import known_defects_line
    rows = [_row("A", "sup", 0, 0.7, 0.5, 0.6), _row("A", "semi", 0, 0.6), _row("A", "tag", 0, 0.6),
            _row("B", "tag", 0, 0.6), _row("A", "unsup", 0, 0.5)]
    assert known_defects_line(rows) == ""          # older result files have no record
    rows[1]["known_defects"] = {"weight": 1.0, "entries": 85}
    rows[2]["known_defects"] = {"weight": 1.0, "entries": 5}
    rows[3]["known_defects"] = {"weight": 1.0, "entries": 10}
    rows[4]["known_defects"] = {"weight": 0.0, "entries": 0}       # not a labelled protocol
    assert known_defects_line(rows) == "; Semi: 85 blocks per model; Tag: 5-10 blocks per model"
    # jobs that scored the same models without them: the mean AP they added, per protocol
    rows[2]["semirest_without_known"] = {"pixel_ap": 0.58}
    rows[3]["semirest_without_known"] = {"pixel_ap": 0.57}
    assert known_defects_line(rows) == ("; Semi: 85 blocks per model; Tag: 5-10 blocks per model, "
                                        "+2.5 pixel AP from them (the same 2 models without them)")


def test_machine_is_recorded_and_a_table_says_when_timings_come_from_several():
    from bench.report import machine, machine_line
    m = machine()
    assert m["cpu"] and m["cores"] >= 1 and m["torch"]
    assert set(m["flags"]) <= set(("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8"))
    one = machine_line([{"machine": m}, {"machine": m}])
    assert f"{m['cpu']}, {m['cores']} logical cores" in one and "(2 files)." in one and "SEVERAL" not in one
    other = {**m, "onnxruntime": "0.0.1"}
    both = machine_line([{"machine": m}, {"machine": other}, {}])
    assert "SEVERAL MACHINES" in both and "ONNX Runtime 0.0.1" in both
    assert "not recorded in 1 of 3 result files" in both


def test_contrast_line_says_which_labelled_files_predate_decision_0028():
    from bench.report import contrast_line
    new = {"protocol": "semi", "contrast": {"beta": 0.1, "choice": "validation", "on": "held-out boxes"}}
    old = {"protocol": "sup"}
    assert contrast_line([new, new]) == ""
    line = contrast_line([new, old, old])
    assert "2 of 3 result files predate decision 0028" in line and "Rerun those jobs" in line
    assert "(sup 2 of 2;" in line
    # only tags (no pixels to choose on) left from before: the line says why they would not change
    tag = contrast_line([new, {"protocol": "tag"}, {"protocol": "tag", "contrast": {"beta": 0.0}}])
    assert "1 of 3 result files" in tag and "(tag 1 of 2;" in tag and "Tags hold no pixels" in tag
    assert "Rerun those jobs" not in tag
    assert "(masks 2 of 2;" in contrast_line([new, old, old], {"sup": "masks"})


def test_a_seed_enters_the_labelled_tables_only_when_every_class_and_protocol_has_it():
    from bench.report import complete_seeds
    rows = [{"category": c, "protocol": p, "seed": sd} for c in ("A", "B") for p in ("sup", "semi", "tag")
            for sd in (0, 1)]
    rows += [{"category": "A", "protocol": "unsup", "seed": 0}]
    assert complete_seeds(rows, ["A", "B"]) == ([0, 1], "")
    rows += [{"category": "A", "protocol": "sup", "seed": 2}, {"category": "B", "protocol": "tag", "seed": 2}]
    seeds, line = complete_seeds(rows, ["A", "B"])
    assert seeds == [0, 1] and "seed 2 (2 of 6 files)" in line


def test_a_side_run_reports_beside_its_results_not_over_the_committed_report(tmp_path, monkeypatch):
    """`python -m bench --results R` without --out writes R/benchmarks.md and no label costs: the
    committed docs/benchmarks.md and resources/label_costs.json stay as they are."""
    import bench.__main__ as bm
    from bench import report
    written = []
    monkeypatch.setattr(report, "write_report",
                        lambda results, out, args, costs_out=None: written.append((results, out, costs_out)))
    (tmp_path / "data").mkdir()
    res = tmp_path / "res"
    assert bm.main(["--data", str(tmp_path / "data"), "--results", str(res), "--report-only"]) == 0
    assert written == [(res, res / "benchmarks.md", None)]
    # named explicitly, the outputs are used as given
    out = tmp_path / "elsewhere.md"
    assert bm.main(["--data", str(tmp_path / "data"), "--results", str(res), "--report-only", "--out", str(out)]) == 0
    assert written[-1] == (res, out, None)
