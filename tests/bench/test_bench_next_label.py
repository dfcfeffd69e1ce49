"""bench/next_label.py on a tiny config: the three strategies, labels with estimated seconds, one
JSON record per class and seed (the measurement itself runs on a GPU, not in the tests)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from bench import next_label
from core.data.datasets import load_mvtec


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
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({
        "features": {"image_size": 128},
        "swin": {"embed_dim": 32, "num_heads": 2, "depth": 2, "mu": 16, "step": 8},
        "train": {"steps": 6, "val_every": 3, "checkpoint_every": 3, "warmup_steps": 2},
        "synthesis": {"per_normal": 1.0}}))
    out = tmp_path / "r.json"
    assert next_label.main(["--data", str(demo_data.parent), "--category", demo_data.name, "--k", "2",
                            "--config", str(cfg), "--device", "cpu", "--workdir", str(tmp_path / "w"),
                            "--out", str(out)]) == 0
    (rec,) = json.loads(out.read_text())
    assert {r["strategy"] for r in rec["runs"]} == set(next_label.STRATEGIES)
    for r in rec["runs"]:
        assert r["k"] == 2 and 0 <= r["metrics"]["pixel_ap"] <= 1 and r["label_seconds"] >= 4.0
    assert 0 <= rec["unsup"]["pixel_ap"] <= 1 and rec["pool"] + rec["held_out"] == 7
