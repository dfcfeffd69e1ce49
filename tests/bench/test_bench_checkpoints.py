"""bench/checkpoints.py: every validated state of a training is kept aside and scored on the test
split; rank agreement, the cost of choosing on validation, and the report's section."""
from __future__ import annotations

import json
import math

import pytest

from bench import checkpoints
from tests.conftest import tiny_yaml


def test_rank_agreement_is_one_minus_one_or_undefined():
    up = checkpoints.rank_agreement([0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.65, 0.9])
    assert up["spearman"] == pytest.approx(1.0) and up["kendall"] == pytest.approx(1.0)
    down = checkpoints.rank_agreement([0.1, 0.2, 0.3, 0.4], [0.9, 0.6, 0.5, 0.1])
    assert down["spearman"] == pytest.approx(-1.0) and down["kendall"] == pytest.approx(-1.0)
    # a constant list ranks nothing; two points are too few
    assert math.isnan(checkpoints.rank_agreement([0.1, 0.2, 0.3], [0.5, 0.5, 0.5])["spearman"])
    assert math.isnan(checkpoints.rank_agreement([0.1, 0.2], [0.5, 0.6])["kendall"])


def _points(vals, tests):
    return [{"step": 10 * (i + 1), "val": v, "swin": {"pixel_ap": t}, "shipped": {"pixel_ap": t + 0.1}}
            for i, (v, t) in enumerate(zip(vals, tests))]


def test_summary_of_validation_pick_kept_state_and_hindsight():
    pts = _points([0.2, 0.5, 0.4, 0.3], [0.30, 0.40, 0.60, 0.50])
    s = checkpoints.summarise(pts, kept_step=40, variant="swin")
    assert s["val_pick"] == 0.40 and s["val_pick_step"] == 20          # the best validation metric
    assert s["kept"] == 0.50 and s["kept_step"] == 40 and s["last"] == 0.50
    assert s["best"] == 0.60 and s["best_step"] == 30 and s["mean"] == pytest.approx(0.45)
    assert checkpoints.summarise(pts, 40, "shipped")["val_pick"] == pytest.approx(0.50)


def test_table_and_report_section(tmp_path):
    from types import SimpleNamespace
    from bench.report import write_report
    results = tmp_path / "results"
    d = results / checkpoints.SUBDIR
    d.mkdir(parents=True)
    out = tmp_path / "benchmarks.md"
    write_report(results, out, SimpleNamespace())
    assert "Does validation rank checkpoints" not in out.read_text()
    pts = _points([0.2, 0.5, 0.4, 0.3], [0.30, 0.40, 0.60, 0.50])
    rec = {"category": "A", "kept_step": 40, "points": pts,
           "swin": {"embed_dim": 192, "num_heads": 6}}
    (d / "A.json").write_text(json.dumps(rec))
    text = "\n".join(checkpoints.table(d))
    # validation picks step 20 (40.0); kept the last (50.0); best 60.0 at step 30
    assert "| A | swin | +0.40 | +0.33 | 40.0 (20) | 50.0 (40) | 60.0 (30) | -20.0 | -10.0 |" in text
    assert "| **mean** (1 classes) | shipped | +0.40 | +0.33 | 50.0 | 60.0 | 70.0 | -20.0 | -10.0 |" in text
    write_report(results, out, SimpleNamespace())
    assert "## Does validation rank checkpoints as the test does? (bench/checkpoints.py)" in out.read_text()


@pytest.mark.slow
def test_tiny_run_scores_every_validated_state(demo_data, tmp_path):
    cfg = tiny_yaml(tmp_path / "tiny.yaml", steps=6, val_every=2)
    res = tmp_path / "res"
    assert checkpoints.main(["--data", str(demo_data.parent), "--category", demo_data.name, "--device", "cpu",
                             "--threads", "1", "--config", str(cfg), "--workdir", str(tmp_path / "w"),
                             "--results", str(res)]) == 0
    rec = json.loads((res / f"{demo_data.name}.json").read_text())
    # the preflight dry run's validations are not counted: steps 2, 4 and 6 of the training
    assert [p["step"] for p in rec["points"]] == [2, 4, 6]
    assert rec["kept_step"] == 6                  # train.checkpoint: last (decision 0014)
    kept = next(p for p in rec["points"] if p["step"] == rec["kept_step"])
    # the kept state, scored with the model's own calibration, is the model's own test result
    assert kept["shipped"]["pixel_ap"] == pytest.approx(rec["model_pixel_ap"], abs=1e-9)
    for p in rec["points"]:
        assert 0 <= p["swin"]["pixel_ap"] <= 1 and 0 <= p["val"] <= 1
    assert not list((tmp_path / "w").glob("*.pt"))        # the model file is not kept
    assert checkpoints.table(res)
