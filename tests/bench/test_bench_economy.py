"""The label economy benchmark (bench/economy.py): nested draws with one test set per class and
seed, estimated labelling seconds per kind, the report's verdict on the paper's boxes claim, and
one tiny end-to-end run through ``python -m bench --protocols economy``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench import economy
from core.data.datasets import Sample, load_mvtec
from core.data.geometry import BlockGrid
from core.data.labelcost import PRIOR
from core.data.labels import BLOCK_ANOMALOUS, block_cells_from_mask, block_labels_from_mask
from core.data.protocols import draw_anomalous, make_protocol

KINDS = ("sup", "blocks", "semi", "tag")


@pytest.fixture(scope="module")
def eco_data(tmp_path_factory) -> Path:
    from core.demo import make_dataset
    return make_dataset(tmp_path_factory.mktemp("eco"), n_train=8, n_good=3, n_bad=8)


def test_a_draw_of_n_is_the_first_n_of_a_larger_draw_and_stays_stratified():
    samples = [Sample(Path(f"{k}{i}.png"), k) for k, n in (("crack", 9), ("hole", 2), ("scratch", 6))
               for i in range(n)] + [Sample(Path(f"good{i}.png")) for i in range(5)]
    for seed in (0, 1, 2):
        pool = draw_anomalous(samples, 12, seed)
        for n in (2, 5, 10, 12):
            assert draw_anomalous(samples, n, seed) == pool[:n]
        assert {s.kind for s in pool[:3]} == {"crack", "hole", "scratch"}   # round robin over types
        assert len({s.path for s in pool}) == 12 and not any(s.kind == "good" for s in pool)
    assert draw_anomalous(samples, 12, 0) != draw_anomalous(samples, 12, 1)


def test_nested_draws_label_the_first_n_and_test_every_n_on_the_same_images(eco_data):
    ds = load_mvtec(eco_data, None)
    pool = draw_anomalous(ds.test, 4, seed=3)
    pool_paths = [s.path for s in pool]
    tests = set()
    for kind in KINDS:
        for n in (1, 2, 4):
            split = make_protocol(ds, kind, n, seed=3, pool=4, block_grid=(128, 8))
            assert [lab.image for lab in split.labels] == split.moved == pool_paths[:n]
            assert split.withheld == pool_paths[n:]
            assert not set(pool_paths) & {s.path for s in split.test}
            assert len(split.test) == len(ds.test) - 4
            tests.add(tuple(s.path for s in split.test))
    assert len(tests) == 1          # one test set for every kind and count of the seed
    # without a pool the old protocol is unchanged: only the labelled images leave the test set
    assert len(make_protocol(ds, "sup", 2, seed=3).test) == len(ds.test) - 2
    with pytest.raises(ValueError, match="pool"):
        make_protocol(ds, "sup", 4, seed=3, pool=2)


def test_each_kind_carries_its_estimated_seconds_and_masks_cost_more_than_blocks(eco_data):
    ds = load_mvtec(eco_data, None)
    totals = {}
    for kind, key in zip(KINDS, ("mask", "blocks", "boxes", "tag")):
        split = make_protocol(ds, kind, 4, seed=0, pool=4, block_grid=(128, 8))
        for lab in split.labels:
            assert list(lab.seconds) == [key] and lab.seconds == lab.seconds_estimated
            assert lab.seconds == PRIOR.estimate(lab)
        totals[kind] = sum(sum(lab.seconds.values()) for lab in split.labels)
    assert totals["tag"] == pytest.approx(4 * PRIOR.tag.seconds)
    # the same images: tracing outlines costs more than painting cells, which costs more than a key
    assert totals["sup"] > 2 * totals["blocks"] and totals["blocks"] > totals["tag"]
    assert totals["semi"] > totals["tag"]


def test_block_cells_are_the_cells_eq14_calls_anomalous_and_never_empty_for_a_defect():
    mask = np.zeros((64, 96), bool)
    mask[10:30, 20:50] = True
    cells = block_cells_from_mask(mask, 128, 8, 0.25)
    grid = BlockGrid.for_image(96, 64, 128, 8)
    want = block_labels_from_mask(mask, grid, 0.25, 0.08) == BLOCK_ANOMALOUS
    got = np.zeros_like(want)
    for r, c in cells.cells:
        got[r, c] = True
    assert want.any() and (got == want).all()
    speck = np.zeros((64, 96), bool)
    speck[5, 5] = True      # covers a few % of one cell: below eps+, still where the defect is
    assert len(block_cells_from_mask(speck, 128, 8, 0.25).cells) == 1
    assert block_cells_from_mask(np.zeros((64, 96), bool), 128, 8, 0.25).cells == []


def test_ladder_is_clipped_to_leave_half_the_defective_images_for_testing():
    assert economy.ladder_for(48) == [2, 5, 10, 20]
    assert economy.ladder_for(30) == [2, 5, 10]
    assert economy.ladder_for(8, (1, 2, 4, 5)) == [1, 2, 4]
    assert economy.ladder_for(3) == []
    rows = [_result("A", "sup", 2, 0, 0.5, 1.0, pool=5), _result("B", "sup", 2, 0, 0.5, 1.0, pool=20)]
    assert economy.summarise(rows)["clipped"] == {"A": (5, 48)}
    assert economy.summarise(rows, ladder=(2, 5))["clipped"] == {}      # a shorter ladder asked for


# ---- report --------------------------------------------------------------------------------
def _result(cat, proto, n, seed, ap, seconds, test_set="t0", unsup=None, pc=None, pool=20, n_def=48):
    m = lambda v: {"pixel_ap": v, "pro": v, "pixel_auroc": v, "image_auroc": v}
    r = {"category": cat, "protocol": proto, "seed": seed, "n_labelled": n, "pool": pool,
         "n_defective_test": n_def, "semirest": m(ap), "label_seconds_total": seconds, "test_set": test_set}
    if unsup is not None:
        r["unsup_on_split"], r["patchcore"] = m(unsup), m(pc)
    return r


def _write(results: Path, rows) -> None:
    (results / economy.SUBDIR).mkdir(parents=True, exist_ok=True)
    for r in rows:
        economy.job_file(results, r["category"], r["protocol"], r["n_labelled"], r["seed"]).write_text(json.dumps(r))


def _claim_rows(box_gain_share: float, box_seconds_share: float):
    """Two classes, one seed, n = 2 and 10: Unsup 0.50 / 0.60, masks gain 0.10 for 100 s per image."""
    rows = []
    for cat, u in (("A", 0.5), ("B", 0.6)):
        for n in (2, 10):
            rows.append(_result(cat, "sup", n, 0, u + 0.10, 100.0 * n, unsup=u if n == 2 else None, pc=u - 0.05))
            rows.append(_result(cat, "semi", n, 0, u + 0.10 * box_gain_share, 100.0 * n * box_seconds_share))
            rows.append(_result(cat, "tag", n, 0, u, 2.0 * n))
    return rows


def test_verdict_met_when_boxes_get_95_percent_of_the_gain_at_a_fifth_of_the_seconds():
    v = economy.verdicts(economy.summarise(_claim_rows(0.96, 0.19)))
    assert [(n, state) for n, state, _ in v] == [(2, "met"), (10, "met")]
    assert "boxes 96% of the mask gain at 0.19x its seconds" in v[0][2] and "2 runs" in v[0][2]


@pytest.mark.parametrize("gain, seconds", [(0.90, 0.10), (1.0, 0.25)])
def test_verdict_missed_on_either_condition(gain, seconds):
    v = economy.verdicts(economy.summarise(_claim_rows(gain, seconds)))
    assert {state for _, state, _ in v} == {"MISSED"}


def test_verdict_cannot_be_judged_when_masks_gain_nothing():
    rows = [_result("A", "sup", 2, 0, 0.49, 200.0, unsup=0.5, pc=0.4), _result("A", "semi", 2, 0, 0.55, 10.0),
            _result("A", "sup", 5, 0, 0.60, 500.0), _result("A", "semi", 5, 0, 0.60, 50.0),
            _result("A", "sup", 10, 0, 0.60, 900.0), _result("A", "semi", 10, 0, 0.51, 50.0)]
    v = economy.verdicts(economy.summarise(rows))
    n, state, why = v[0]
    assert n == 2 and state == "cannot be judged" and "masks gain nothing" in why
    assert economy.headline(v) == "met at n = 5; missed at n = 10; cannot be judged at n = 2"


def test_report_section_table_plot_and_warnings(tmp_path):
    from bench.report import write_report
    res = tmp_path / "results"
    res.mkdir()
    rows = _claim_rows(0.5, 0.1)
    rows.append(_result("B", "blocks", 2, 0, 0.65, 40.0, test_set="other"))   # stale: other test images
    rows.append(_result("C", "sup", 2, 0, 0.3, 80.0, unsup=0.3, pc=0.2, pool=5, n_def=10))   # clipped
    for r in rows[:-1]:
        r["swin"] = {"embed_dim": 192, "num_heads": 6}
    rows[-1]["swin"] = {"embed_dim": 96, "num_heads": 3}   # a job of another preset
    _write(res, rows)
    out = tmp_path / "docs" / "benchmarks.md"
    out.parent.mkdir()
    write_report(res, out, None)
    text = out.read_text()
    assert "## Label economy" in text
    assert "Over 3 classes (A, B, C) and seeds 0" in text
    assert "Swin: width 96, 3 heads; width 192, 6 heads (MIXED SIZES" in text
    # masks, n=2: A 0.60, B 0.70, C 0.30 -> mean 53.3; gain over each run's own Unsup: +6.7
    assert "| masks | 2 | 3 | 53.3 | +6.7 | 160 | 80.0 |" in text
    assert "| boxes | 10 | 2 | 60.0 | +5.0 | 100 | 10.0 |" in text
    assert "| Unsup | 0 | 3 | 46.7 | - | 0 | 0 |" in text          # (0.5 + 0.6 + 0.3) / 3
    assert "**missed at n = 2, 10** (3 classes x 1 seeds)" in text
    assert "- n = 2: MISSED: boxes 50% of the mask gain at 0.10x its seconds (2 runs;" in text
    assert "C: 10 defective test images, pool 5" in text
    assert "**Warning:**" in text and "B seed 0" in text
    assert "**Uneven:**" in text        # boxes have 2 runs, masks 3
    png = out.with_name("economy.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "![Pixel AP against labelling seconds](economy.png)" in text


def test_table_shows_what_known_defects_add_where_jobs_recorded_it():
    rows = _claim_rows(0.96, 0.19)
    assert "known defects" not in economy.table(economy.summarise(rows))[0]     # older result files
    m = lambda v: {"pixel_ap": v, "pro": v, "pixel_auroc": v, "image_auroc": v}
    for r in rows:
        if r["protocol"] == "sup" and r["n_labelled"] == 2:       # A 0.60 vs 0.58, B 0.70 vs 0.69
            r["semirest_without_known"] = m(r["semirest"]["pixel_ap"] - (0.02 if r["category"] == "A" else 0.01))
    t = economy.table(economy.summarise(rows))
    assert t[0].count("|") == t[1].count("|") == 9 and "of which known defects" in t[0]
    assert "| masks | 2 | 2 | 65.0 | +10.0 | +1.5 (2) | 200 | 100.0 |" in t
    assert "| masks | 10 | 2 | 65.0 | +10.0 | - | 1000 | 100.0 |" in t
    assert "| Unsup | 0 | 2 | 55.0 | - | - | 0 | 0 |" in t


def test_report_without_economy_results_has_no_section(tmp_path):
    assert economy.section(tmp_path, tmp_path / "benchmarks.md") == []
    assert not (tmp_path / "economy.png").exists()


# ---- end to end -----------------------------------------------------------------------------
@pytest.mark.slow
def test_tiny_economy_run_end_to_end(eco_data, tmp_path, capsys):
    from bench.__main__ import main
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({
        "features": {"image_size": 128},
        "swin": {"embed_dim": 32, "num_heads": 2, "depth": 2, "mu": 16, "step": 8},
        "train": {"steps": 6, "val_every": 3, "checkpoint_every": 3, "warmup_steps": 2},
        "semi": {"steps": 4, "rampup_steps": 2},
        "synthesis": {"per_normal": 1.0}}))
    res, work, out = tmp_path / "res", tmp_path / "work", tmp_path / "docs" / "benchmarks.md"
    argv = ["--data", str(eco_data.parent), "--classes", eco_data.name, "--mixed-sizes", "--protocol", "economy",
            "--ladder", "1", "2", "--economy-kinds", "sup", "semi", "--seeds", "0", "--config", str(cfg),
            "--threads", "1", "--jobs", "2", "--results", str(res), "--workdir", str(work), "--out", str(out),
            "--label-costs", ""]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "demo unsup seed 0 started" in printed      # no unsupervised model yet: trained first
    rows = economy.load(res)
    assert sorted((r["protocol"], r["n_labelled"]) for r in rows) == [("semi", 1), ("semi", 2), ("sup", 1), ("sup", 2)]
    ds = load_mvtec(eco_data, None)
    assert {r["test_set"] for r in rows} != {None} and len({r["test_set"] for r in rows}) == 1
    assert all(r["n_test"] == len(ds.test) - 2 and r["pool"] == 2 for r in rows)
    by = {(r["protocol"], r["n_labelled"]): r for r in rows}
    # the first job of the class and seed scores the baselines on the common test set, only it
    assert "unsup_on_split" in by[("sup", 1)] and "patchcore" in by[("sup", 1)]
    assert sum("unsup_on_split" in r for r in rows) == 1
    assert by[("sup", 1)]["moved"] == by[("sup", 2)]["moved"][:1] == by[("semi", 1)]["moved"]
    for r in rows:
        assert r["label_seconds_total"] == pytest.approx(sum(r["label_seconds"].values()))
        # the same model scored again without its known defects, wherever it kept some (decision 0025)
        assert ("semirest_without_known" in r) == bool(r["known_defects"]["entries"])
    assert all(0 <= r["semirest_without_known"]["pixel_ap"] <= 1 for r in rows if r["protocol"] == "sup")
    # test pixel AP at every candidate beta of the pixel-contrast refinement (a diagnostic; the
    # model chose on validation): the chosen beta's is what the job scored, beta 0's the plain map's
    for r in rows:
        c = r["contrast"]
        assert c["choice"] == "validation" and set(c["test_pixel_ap"]) == set(c["val_pixel_ap"])
        assert c["test_pixel_ap"][str(float(c["beta"]))] == pytest.approx(r["semirest"]["pixel_ap"], abs=1e-9)
        if "semirest_unrefined" in r:
            assert c["test_pixel_ap"]["0.0"] == pytest.approx(r["semirest_unrefined"]["pixel_ap"], abs=1e-9)
    # every result file names the commit it was measured at, and the report says it
    from bench.report import code_state
    state = code_state()            # None outside a git checkout: then the files claim nothing
    assert [r["code"] for r in rows] == [None] * 4 if state is None else \
        {r["code"]["commit"] for r in rows} == {state["commit"]}
    assert by[("sup", 2)]["label_seconds_total"] > by[("sup", 1)]["label_seconds_total"] > 0
    assert by[("sup", 2)]["label_seconds_total"] > by[("semi", 2)]["label_seconds_total"]
    text = out.read_text()
    assert "## Label economy" in text and "| masks | 2 | 1 |" in text and out.with_name("economy.png").exists()
    assert "**Uneven:**" not in text and "**Warning:**" not in text
    assert "Measured at commit: " + ("unknown for" if state is None else f"`{state['commit']}") in text
    # a rerun skips every finished job
    assert main(argv) == 0
    assert "started" not in capsys.readouterr().out


def test_economy_jobs_score_the_baselines_once_per_class_and_seed(eco_data, tmp_path):
    from argparse import Namespace
    from bench.__main__ import economy_jobs
    args = Namespace(ladder=[1, 2, 20], economy_kinds=["sup", "semi"], seeds=[0, 1], fresh=False,
                     results=str(tmp_path))
    jobs = economy_jobs(args, eco_data.parent, [eco_data.name])
    # 8 defective test images: 20 is clipped away, the pool is 2 for every job
    assert [(j[2], j[3], j[4]) for j in jobs] == [
        ("sup", 0, (1, 2, True)), ("sup", 0, (2, 2, False)), ("semi", 0, (1, 2, False)), ("semi", 0, (2, 2, False)),
        ("sup", 1, (1, 2, True)), ("sup", 1, (2, 2, False)), ("semi", 1, (1, 2, False)), ("semi", 1, (2, 2, False))]
    # a finished job of seed 0 scored them: a rerun with other kinds does not score them again
    _write(tmp_path, [_result(eco_data.name, "sup", 1, 0, 0.5, 1.0, unsup=0.4, pc=0.3, pool=2)])
    args.economy_kinds = ["tag"]
    assert [j[4][2] for j in economy_jobs(args, eco_data.parent, [eco_data.name])] == [False, False, True, False]
    args.fresh = True
    assert [j[4][2] for j in economy_jobs(args, eco_data.parent, [eco_data.name])] == [True, False, True, False]
