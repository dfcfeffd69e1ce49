"""bench/next_label.py on a tiny config: the three strategies, labels with estimated seconds, one
JSON record per class and seed (the measurement itself runs on a GPU, not in the tests)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench import next_label
from core.data.datasets import load_mvtec
from tests.conftest import tiny_yaml


def test_orders_are_permutations_of_the_pool(demo_data):
    pool = list(load_mvtec(demo_data, None).test)
    rng = np.random.default_rng(0)
    preds = [(float(rng.random()), rng.random((16, 16))) for _ in pool]
    o = next_label.orders(pool, preds, seed=0)
    assert set(o) == set(next_label.STRATEGIES)
    for name, order in o.items():
        assert sorted(order) == list(range(len(pool))), name
    assert o["top_score"][0] == int(np.argmax([p[0] for p in preds]))
    assert o["random"] == next_label.orders(pool, preds, seed=0)["random"] != next_label.orders(pool, preds, seed=1)["random"]


@pytest.mark.slow
def test_tiny_bench_run_writes_ap_and_seconds_per_strategy(demo_data, tmp_path):
    cfg = tiny_yaml(tmp_path / "tiny.yaml", steps=6, val_every=3)
    out, res, work = tmp_path / "r.json", tmp_path / "res", tmp_path / "w"
    common = ["--data", str(demo_data.parent), "--category", demo_data.name, "--k", "2", "--device", "cpu",
              "--threads", "1", "--workdir", str(work), "--results", str(res)]
    assert next_label.main(common + ["--config", str(cfg), "--out", str(out)]) == 0
    (rec,) = json.loads(out.read_text())
    assert {r["strategy"] for r in rec["runs"]} == set(next_label.STRATEGIES)
    for r in rec["runs"]:
        assert r["k"] == 2 and 0 <= r["metrics"]["pixel_ap"] <= 1 and r["label_seconds"] >= 4.0
    assert 0 <= rec["unsup"]["pixel_ap"] <= 1 and rec["pool"] + rec["held_out"] == 7
    assert json.loads((res / f"{demo_data.name}-mask-0.json").read_text()) == json.loads(json.dumps(rec))
    assert next_label.table(res)

    # --unsup-from takes the kept unsupervised model (named as the bench keeps them) instead of
    # training one: the same model, so the same baseline AP
    kept = work / f"{demo_data.name}-unsup-0.pt"
    stamp = kept.stat().st_mtime_ns
    assert next_label.main(common + ["--config", str(cfg), "--unsup-from", str(work)]) == 0
    again = json.loads((res / f"{demo_data.name}-mask-0.json").read_text())
    assert kept.stat().st_mtime_ns == stamp and again["unsup_model"] == str(kept)
    assert again["unsup"]["pixel_ap"] == rec["unsup"]["pixel_ap"]
    # a kept model trained with other settings is refused, not silently used
    other = tmp_path / "other.yaml"
    other.write_text(cfg.read_text().replace("embed_dim: 32", "embed_dim: 16"))
    with pytest.raises(SystemExit, match="other settings"):
        next_label.main(common + ["--config", str(other), "--unsup-from", str(work)])


def _record(cat, seed, base, aps):
    """A result record as run_class writes it; ``aps``: {(strategy, k): (pixel AP, seconds, defective)}."""
    return {"category": cat, "seed": seed, "kind": "mask", "pool": 10, "held_out": 10, "pool_defective": 6,
            "unsup": {"pixel_ap": base}, "swin": {"embed_dim": 192, "num_heads": 6, "depth": 4},
            "runs": [{"strategy": s, "k": k, "defective_picked": d, "label_seconds": sec,
                      "metrics": {"pixel_ap": ap}} for (s, k), (ap, sec, d) in aps.items()]}


def test_table_reports_gains_over_unsup_and_per_labelling_minute(tmp_path):
    assert next_label.table(tmp_path / "none") == []
    d = tmp_path / "next_label"
    d.mkdir()
    a = {("ranked", 2): (0.70, 120.0, 2), ("random", 2): (0.60, 60.0, 1), ("top_score", 2): (0.66, 60.0, 2)}
    b = {("ranked", 2): (0.50, 60.0, 2), ("random", 2): (0.40, 4.0, 0), ("top_score", 2): (0.44, 120.0, 2)}
    (d / "A-mask-0.json").write_text(json.dumps(_record("A", 0, 0.60, a)))
    (d / "B-mask-0.json").write_text(json.dumps(_record("B", 0, 0.40, b)))
    text = "\n".join(next_label.table(d))
    assert "| A | 0 | mask | 60.0 | 2, 120, 70.0 (+10.0) | 1, 60, 60.0 (+0.0) | 2, 60, 66.0 (+6.0) |" in text
    # ranked: gains +10 and +10 over 120 and 60 s -> mean +10.0 at 90 s, 6.67 points per minute
    assert "| ranked | +10.0, 90 s, +6.67 per min |" in text
    assert "| random | +0.0, 32 s, under a minute of labels |" in text
    assert "| top_score | +5.0, 90 s, +3.33 per min |" in text
    assert "2 class/seed run(s)" in text and "Swin: width 192, 6 heads." in text


def test_report_includes_the_next_label_section(tmp_path):
    from types import SimpleNamespace
    from bench.report import write_report
    d = tmp_path / "results"
    (d / "next_label").mkdir(parents=True)
    out = tmp_path / "benchmarks.md"
    write_report(d, out, SimpleNamespace())
    assert "Which image to label next" not in out.read_text()
    rec = _record("A", 0, 0.5, {(s, 2): (0.55, 30.0, 1) for s in next_label.STRATEGIES})
    (d / "next_label" / "A-mask-0.json").write_text(json.dumps(rec))
    write_report(d, out, SimpleNamespace())
    assert "## Which image to label next (bench/next_label.py)" in out.read_text()
