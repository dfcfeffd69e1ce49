"""Validation on real held-out defects when the model has it (issue 10): which stored number stands
for a model, the label-budget plot (value, filled / hollow marker, note), and the models panel's
change against the parent model only between metrics of the same source. No window, no training."""
from __future__ import annotations

from pathlib import Path

import pytest

from app.project.store import Store
from app.project.runs import SYNTHETIC_SOURCE, ModelRow
from app.training.models_panel import ModelsPanel, label_time_text, parent_delta
from app.viewer.budget import ESTIMATED_LABEL, Y_LABEL, budget_figure, budget_points, render_budget

REAL_AP = "real-defect block AP"


def model(ident: int, validation: dict, supervision: str = "boxes", seconds: float = 20.0,
          estimated: float = 0.0) -> ModelRow:
    return ModelRow(ident, None, Path(f"/runs/{ident:04d}/model.pt"), 1.7e9 + ident, supervision, "cpu",
                    "tf_efficientnet_lite0", "cpu", None, 3.0, 30, {supervision: 4}, {supervision: seconds},
                    validation, {"image_threshold": 0.5, "pixel_threshold": 0.5},
                    label_seconds_estimated={supervision: estimated} if estimated else {})


SYNTH = {"val_pixel_ap": 0.40, "step": 10, "history": [], "real_defect_images": []}
REAL = {"val_pixel_ap": 0.30, "val_real_ap": 0.85, "step": 10, "history": [],
        "real_defect_images": ["a.png", "b.png", "c.png"]}
TAGS = {"val_pixel_ap": 0.20, "val_real_image_auroc": 0.75, "real_defect_images": ["t.png"]}


def test_validation_metric_prefers_real_defects():
    assert model(1, SYNTH).validation_metric == (0.40, SYNTHETIC_SOURCE)
    assert model(2, REAL).validation_metric == (0.85, REAL_AP)
    assert model(3, TAGS).validation_metric == (0.75, "real-defect image AUROC")
    both = {**REAL, "val_real_image_auroc": 0.1}
    assert model(4, both).validation_metric == (0.85, REAL_AP)          # block AP before image AUROC
    assert model(5, {**REAL, "val_real_ap": float("nan")}).validation_metric == (0.30, SYNTHETIC_SOURCE)
    assert model(6, {"step": 0}).validation_metric is None
    assert model(2, REAL).validated_on_real and not model(1, SYNTH).validated_on_real
    assert model(2, REAL).validation_basis == "real-defect block AP, 3 held-out images"
    assert model(3, TAGS).validation_basis == "real-defect image AUROC, 1 held-out image"
    assert model(1, SYNTH).validation_basis == SYNTHETIC_SOURCE


def test_the_stored_real_metric_comes_back_from_the_project(tmp_path):
    with Store.create(tmp_path / "p") as s:
        run_dir = s.folder / "runs" / "0001"
        run_id = s.runs.add_run({"supervision": "boxes"}, ["-m", "core.cli"], run_dir, {"boxes": 6}, {"boxes": 30.0})
        model_id = s.runs.add_model(run_id, run_dir / "model.pt", "boxes", {"device": "cpu"}, "tf_efficientnet_lite0",
                               "cpu", REAL, {"map_scale": 1.0}, {"boxes": 6}, {"boxes": 30.0})
        m = s.runs.model(model_id)
    assert m.validation_metric == (0.85, REAL_AP) and m.real_defect_images == ["a.png", "b.png", "c.png"]
    assert m.val_pixel_ap == 0.30                                         # the synthetic one is kept too


def test_budget_points_plot_the_real_metric_when_held_out():
    pts = {p.model_id: p for p in budget_points([model(1, SYNTH, "unsupervised", 0.0), model(3, REAL, seconds=42.0),
                                                  model(4, TAGS, "tags", 8.0), model(5, {"step": 0})])}
    assert set(pts) == {1, 3, 4}                                          # no metric: no point
    assert (pts[3].seconds, pts[3].value, pts[3].real, pts[3].real_images) == (42.0, 0.85, True, 3)
    assert pts[3].label == "model 3 (real, 3 images)" and pts[3].source == REAL_AP
    assert (pts[1].value, pts[1].real, pts[1].real_images) == (0.40, False, 0)
    assert pts[1].label == "model 1 (synthetic)"
    assert pts[4].value == 0.75 and pts[4].real and pts[4].label == "model 4 (real, image AUROC, 1 image)"


def test_budget_figure_fills_real_markers_and_leaves_synthetic_hollow():
    fig = budget_figure([model(1, SYNTH), model(3, REAL, seconds=42.0)])   # same supervision, both kinds
    ax = fig.axes[0]
    assert ax.get_ylabel() == Y_LABEL
    by_label = {c.get_label(): c for c in ax.collections}
    real, synth = by_label["boxes (real)"], by_label["boxes (synthetic)"]
    assert real.get_offsets().tolist() == [[42.0, 0.85]] and synth.get_offsets().tolist() == [[20.0, 0.40]]
    assert real.get_facecolors()[0][3] > 0                                  # filled
    assert len(synth.get_facecolors()) == 0 or synth.get_facecolors()[0][3] == 0   # hollow
    assert real.get_edgecolors()[0].tolist() == synth.get_edgecolors()[0].tolist()  # one colour per supervision
    notes = sorted(t.get_text() for t in ax.texts)
    assert notes == ["model 1 (synthetic)", "model 3 (real, 3 images)"]


@pytest.mark.parametrize("models", [[model(1, SYNTH), model(3, REAL), model(4, TAGS, "tags")], []])
def test_render_budget_gives_png_bytes(models):
    png = render_budget(models)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_models_panel_shows_the_source_and_no_delta_across_sources(qtbot):
    panel = ModelsPanel()
    qtbot.addWidget(panel)
    synth, real, real2 = model(1, SYNTH), model(2, REAL), model(3, {**REAL, "val_real_ap": 0.90})
    panel.set_models([synth, real, real2], {1: None, 2: 1, 3: 2}, active=None)
    row = panel.model_row_texts(2)
    assert row["Validation"] == "0.850" and row["Validated on"] == "real-defect block AP, 3 held-out images"
    assert row["vs. parent"] == "sources differ (model 1: synthetic pixel AP 0.400)"
    assert "+" not in row["vs. parent"] and "0.450" not in row["vs. parent"]   # no 0.85 - 0.40
    assert panel.model_row_texts(3)["vs. parent"] == "+0.050 (model 2: 0.850)"  # same source: a difference
    first = panel.model_row_texts(1)
    assert (first["Validation"], first["Validated on"], first["vs. parent"]) == ("0.400", SYNTHETIC_SOURCE, "")
    assert parent_delta(synth, real).startswith("sources differ (model 2: real-defect block AP 0.850")


def test_a_model_with_estimated_label_seconds_is_marked_on_the_budget():
    """Seeded or imported seconds (docs/decisions/0003) are not a measured cost: the point says so."""
    est, part, measured = model(3, REAL, seconds=50.0, estimated=50.0), model(4, SYNTH, seconds=40.0, estimated=32.0), \
        model(5, REAL, seconds=30.0)
    pts = {p.model_id: p for p in budget_points([est, part, measured])}
    assert pts[3].estimated_fraction == 1.0 and pts[3].label == "model 3 (real, 3 images) (est. 100%)"
    assert pts[4].estimated_fraction == pytest.approx(0.8) and pts[4].label == "model 4 (synthetic) (est. 80%)"
    assert pts[5].estimated_fraction == 0.0 and not pts[5].estimated
    assert pts[5].label == "model 5 (real, 3 images)"                     # wholly measured: not marked
    ax = budget_figure([est, part, measured]).axes[0]
    ring = {c.get_label(): c for c in ax.collections}[ESTIMATED_LABEL]
    assert sorted(ring.get_offsets().tolist()) == [[40.0, 0.40], [50.0, 0.85]]   # not around model 5
    assert ring.get_linestyle()[0][1] is not None                          # dashed
    assert "ringed: label seconds partly estimated" in [t.get_text() for t in ax.get_legend().get_texts()]
    plain = budget_figure([measured]).axes[0]
    assert ESTIMATED_LABEL not in {c.get_label() for c in plain.collections}


def test_models_panel_label_time_says_how_much_was_estimated(qtbot):
    part, measured = model(1, SYNTH, seconds=37.0, estimated=30.0), model(2, SYNTH, seconds=37.0)
    assert label_time_text(part) == "37 s (30 s est.)" and label_time_text(measured) == "37 s"
    panel = ModelsPanel()
    qtbot.addWidget(panel)
    panel.set_models([part, measured], {}, active=None)
    assert panel.model_row_texts(1)["Label time"] == "37 s (30 s est.)"
    assert panel.model_row_texts(2)["Label time"] == "37 s"


def test_models_without_labels_are_lines_and_labelled_ones_start_from_their_start_model():
    """Issue 13: the unsupervised model and PatchCore are horizontal lines; a labelled model that
    started from one shows that start's value on the same held-out defects at 0 s."""
    unsup = model(1, SYNTH, "unsupervised", 0.0)
    pc = model(2, {"val_pixel_ap": 0.33}, "unsupervised", 0.0)
    pc.calibration["method"] = "patchcore"
    semi = model(3, {**REAL, "history": [{"step": 0, "seconds": 0.0, "val_real_ap": 0.70, "val_pixel_ap": 0.3},
                                         {"step": 50, "val_real_ap": 0.85}]}, "boxes", 42.0)
    sup = model(4, REAL, "masks", 90.0)                  # trained from scratch: no start
    assert (unsup.method, pc.method) == ("semirest", "patchcore")
    assert semi.start_validation == 0.70 and sup.start_validation is None and unsup.start_validation is None
    ax = budget_figure([unsup, pc, semi, sup]).axes[0]
    hlines = {ln.get_label(): ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_linestyle() == "--"}
    assert hlines == {"model 1: SemiREST, no labels (synthetic)": 0.40,
                      "model 2: PatchCore, no labels (synthetic)": 0.33}
    scattered = sorted(xy for c in ax.collections for xy in map(tuple, c.get_offsets().tolist()))
    assert (0.0, 0.40) not in scattered and (0.0, 0.33) not in scattered     # lines, not points
    assert (0.0, 0.70) in scattered and (42.0, 0.85) in scattered            # the start's x, the model
    dotted = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert [list(zip(ln.get_xdata(), ln.get_ydata())) for ln in dotted] == [[(0, 0.70), (42.0, 0.85)]]
    only = budget_figure([unsup]).axes[0]
    assert any("no labelled models yet" in t.get_text() for t in only.texts)
