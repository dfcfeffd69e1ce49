"""bench/quantize.py: float32 and int8 exports of a kept unsupervised model, timed interleaved and
scored on the test split; the report's table is made from the result files."""
from __future__ import annotations

import json

import pytest

from tests.conftest import kept_unsup_model

pytest.importorskip("onnxruntime")


def test_quantize_bench_measures_both_exports_and_the_report_shows_them(demo_data, tmp_path):
    from bench import quantize
    from bench.report import write_report
    work = tmp_path / "work"
    kept_unsup_model(demo_data, work)
    res = tmp_path / "results"
    assert quantize.main(["--data", str(demo_data.parent), "--workdir", str(work),
                          "--results", str(res / "quantize")]) == 0
    r = json.loads((res / "quantize" / f"{demo_data.name}.json").read_text())
    assert r["none"]["ms"] > 0 and r["int8"]["ms"] > 0 and r["speedup"] == pytest.approx(
        r["none"]["ms"] / r["int8"]["ms"])
    assert 0 < r["max_abs_map_diff"] <= 0.01                      # int8 moved the maps, a little
    for k in ("none", "int8"):
        assert 0 <= r[k]["metrics"]["pixel_ap"] <= 1 and r[k]["mb"] > 0
    assert abs(r["int8"]["metrics"]["pixel_ap"] - r["none"]["metrics"]["pixel_ap"]) <= 0.02
    out = tmp_path / "benchmarks.md"
    write_report(res, out, None)
    text = out.read_text()
    assert "int8 export" in text and f"| {demo_data.name} | {r['none']['ms']:.1f} | {r['int8']['ms']:.1f} |" in text
    # nothing to measure: a clear message, not a traceback
    assert quantize.main(["--data", str(demo_data.parent), "--workdir", str(tmp_path / "empty"),
                          "--results", str(res / "q2")]) == 2
