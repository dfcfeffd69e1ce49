"""bench/precision.py: float32 and bfloat16 inference of a kept unsupervised model, scored on the
test split and timed interleaved (bench/speed.py); the report's table is made from the files."""
from __future__ import annotations

import json

import pytest

from tests.conftest import kept_unsup_model


def test_precision_bench_measures_both_and_the_report_shows_them(demo_data, tmp_path):
    from bench import precision
    from bench.report import write_report
    work = tmp_path / "work"
    kept_unsup_model(demo_data, work)
    name = demo_data.name
    res = tmp_path / "results"
    assert precision.main(["--data", str(demo_data.parent), "--workdir", str(work),
                           "--results", str(res / "precision")]) == 0
    r = json.loads((res / "precision" / f"{name}.json").read_text())
    rows = r["speed"]["rows"]
    # every batch x bagging x precision, each with its ratio to the same backbone time
    assert {(x["batch"], x["bagging"], x["precision"]) for x in rows} == {
        (b, bag, p) for b in (1, 8) for bag in (True, False) for p in ("float32", "bfloat16")}
    for x in rows:
        assert x["ms"] > 0 and x["ratio"] == pytest.approx(x["ms"] / x["backbone_ms"])
    assert 0 < r["max_abs_map_diff"] <= 0.05                   # bfloat16 moved the maps, a little
    assert abs(r["bfloat16"]["metrics"]["pixel_ap"] - r["float32"]["metrics"]["pixel_ap"]) <= 0.02
    out = tmp_path / "benchmarks.md"
    write_report(res, out, None)
    text = out.read_text()
    ap = f"{100 * r['float32']['metrics']['pixel_ap']:.1f} / {100 * r['bfloat16']['metrics']['pixel_ap']:.1f}"
    assert "bfloat16 against float32" in text and f"| {name} | 1 |" in text and ap in text
    assert precision.main(["--data", str(demo_data.parent), "--workdir", str(tmp_path / "empty"),
                           "--results", str(res / "p2")]) == 2
