"""The Train panel says what each kind of label bought on the benchmark, and warns plainly when
the selected labels did worse than none (resources/label_costs.json, written by python -m bench)."""
from __future__ import annotations

import json

from app import resources
from app.training.panel import TrainPanel

COSTS = {"data": "8 PIPED classes", "preset": "cpu", "backbone": "tf_efficientnet_lite0", "seeds": [0, 1, 2],
         "pixel_ap": {"PatchCore": 54.2, "Unsup": 44.9, "Sup": 61.4, "Semi": 45.6, "Tag": 32.7}}


def _select(panel, key):
    panel.supervision.setCurrentIndex(panel.supervision.findData(key))
    return panel.bench_hint.text()


def test_hint_follows_the_selected_supervision(qtbot):
    panel = TrainPanel(label_costs=COSTS)
    qtbot.addWidget(panel)
    tags = _select(panel, "tags")
    assert "32.7" in tags and "44.9" in tags and "61.4" in tags and "worse than none" in tags
    assert "3 seeds" in tags and "cpu" in tags
    boxes = _select(panel, "boxes")
    assert "45.6" in boxes and "worse than none" not in boxes
    masks = _select(panel, "masks")
    assert masks.startswith("Mean pixel AP 61.4 % vs 44.9 % unsupervised") and "worse" not in masks
    assert _select(panel, "unsupervised").startswith("Mean pixel AP 44.9 % (")
    _select(panel, "all")          # a mix has no single benchmark column: say nothing
    assert panel.bench_hint.text() == "" and panel.bench_hint.isHidden()


def test_no_benchmark_file_means_no_hint(qtbot):
    panel = TrainPanel(label_costs=None)
    qtbot.addWidget(panel)
    assert _select(panel, "tags") == "" and panel.bench_hint.isHidden()


def test_label_costs_reader(tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "ROOT", tmp_path)
    assert resources.label_costs() is None                      # missing
    (tmp_path / "label_costs.json").write_text("{not json", encoding="utf-8")
    assert resources.label_costs() is None                      # corrupt
    (tmp_path / "label_costs.json").write_text(json.dumps(COSTS), encoding="utf-8")
    assert resources.label_costs()["pixel_ap"]["Tag"] == 32.7


def test_shipped_label_costs_match_the_benchmark_report():
    # the file the app reads is the one the benchmark wrote beside docs/benchmarks.md
    costs = resources.label_costs()
    assert costs is not None
    report = (resources.ROOT.parent / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    ap_table = report.split("### AP")[1].split("### PRO")[0]
    mean_row = [line for line in ap_table.splitlines() if line.startswith("| **mean**")][0]
    for col in ("PatchCore", "Unsup", "Sup", "Semi", "Tag"):
        assert f"**{costs['pixel_ap'][col]:.1f}**" in mean_row


def test_too_few_labels_to_hold_out_are_called_unchecked(qtbot):
    """Below train.real_val_min_labelled nothing is held out (core/eval/realval.py): the panel says
    so for the selected labels, with or without a benchmark file, and stops saying it at the bar."""
    from core.config import TrainConfig
    least = TrainConfig.real_val_min_labelled
    for costs in (COSTS, None):
        panel = TrainPanel(label_costs=costs)
        qtbot.addWidget(panel)
        panel.set_label_counts({"masks": 0, "blocks": 0, "boxes": 2, "tags": least, "all": 2 + least})
        boxes = _select(panel, "boxes")
        assert "2 labelled images: none can be held out" in boxes
        assert not panel.bench_hint.isHidden()
        assert "none can be held out" not in _select(panel, "tags")        # enough to hold some out
        assert "none can be held out" not in _select(panel, "masks")       # no masks: nothing to warn of
        assert "none can be held out" not in _select(panel, "unsupervised")
        _select(panel, "boxes")
        panel.set_label_counts({"masks": 0, "blocks": 0, "boxes": least, "tags": 0, "all": least})
        assert "none can be held out" not in panel.bench_hint.text()       # the count changed under it
        panel.set_label_counts({"masks": 0, "blocks": 0, "boxes": 1, "tags": 0, "all": 1})
        assert "1 labelled image: none can be held out to check that it helps" in panel.bench_hint.text()
        panel.method.setCurrentIndex(panel.method.findData("patchcore"))   # learns nothing from labels
        assert "none can be held out" not in panel.bench_hint.text()
        panel.method.setCurrentIndex(panel.method.findData("semirest"))
        panel.set_label_counts({"masks": 0, "blocks": 0, "boxes": 0, "tags": 2, "all": 2})
        assert "2 tagged images: none can be held out" in _select(panel, "tags")    # decision 0023
        assert "training will not use them" in panel.bench_hint.text()
        assert "known defect" in panel.bench_hint.text()                  # decision 0025
