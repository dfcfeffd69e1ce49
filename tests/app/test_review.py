"""Reviewing a trained model in the window (real images, a tiny model trained once per module):
thresholds and counts, persistence per model, the review key, a box on a miss, inspection of a
new folder, the CSV report, retraining with corrections, the label budget, and a screenshot."""
from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from app.main_window import MainWindow
from app.project.store import Store
from app.viewer.scoring import score_images
from core.device import DeviceInfo

from qt_drive import open_main_window, drag, key, line, wait_image, widget_point
from train_helpers import copy_project, piped_project, tiny_yaml, train_in_project

pytestmark = pytest.mark.gui
CPU = [DeviceInfo("cpu", "Test CPU", None, None)]


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory, piped):
    """A project with one tiny model whose scores cover every image (built once)."""
    base = tmp_path_factory.mktemp("reviewed")
    folder = piped_project(base / "proj", piped / "PA_BDP01_TL")
    config = tiny_yaml(base / "tiny.yaml")
    model_id = train_in_project(folder, config)
    with Store.open(folder) as s:
        ids = [r.id for r in s.images()]
    score_images(folder, model_id, ids, "cpu")
    return folder, model_id, config


def open_window(qtbot, folder, tmp_path) -> MainWindow:
    return open_main_window(qtbot, folder, tmp_path, CPU)


@pytest.fixture
def window(qtbot, reviewed, tmp_path):
    folder = copy_project(reviewed[0], tmp_path / "proj")
    w = open_window(qtbot, folder, tmp_path)
    yield w
    w.close()


def test_threshold_slider_changes_counts_and_histogram_and_persists(qtbot, window, reviewed, tmp_path):
    review, panel = window.docks.review, window.docks.review_panel
    assert review.model is not None and review.model.id == reviewed[1]
    scores = sorted(review.scores.values())
    assert len(scores) == window.store.image_count() == 14
    mid = round((scores[6] + scores[7]) / 2, 3)
    panel.image_thr.slider.setValue(round(mid * 1000))           # the user drags the slider
    assert panel.histogram.threshold == pytest.approx(mid)
    x_mid = panel.histogram.line_x()
    flagged = sum(s >= mid for s in scores)
    assert review.flagged_count() == flagged and f"<b>{flagged} of 14</b>" in panel.counts.text()
    panel.image_thr.slider.setValue(0)
    assert review.flagged_count() == 14 and "<b>14 of 14</b>" in panel.counts.text()
    assert panel.histogram.line_x() < x_mid                      # the line moved with the slider
    lst = window.image_list
    lst.score_filter.setCurrentIndex(lst.score_filter.findData("ok"))
    assert lst.model.rowCount() == 0                              # nothing passes a zero threshold
    panel.image_thr.spin.setValue(mid)
    panel.pixel_thr.spin.setValue(0.123)
    assert lst.model.rowCount() == 14 - flagged                   # the filter follows the threshold
    window.close()                                                # thresholds are saved with the model
    with Store.open(window.store.folder if window.store else tmp_path / "proj") as s:
        m = s.runs.model(reviewed[1])
    assert (m.image_threshold, m.pixel_threshold) == (pytest.approx(mid), pytest.approx(0.123))
    again = open_window(qtbot, tmp_path / "proj", tmp_path)
    assert again.docks.review_panel.image_thr.value() == pytest.approx(mid)
    assert again.docks.review_panel.pixel_thr.value() == pytest.approx(0.123)
    again.close()


def test_review_key_box_on_a_miss_inspection_report_and_retrain(qtbot, window, reviewed, tmp_path,
                                                                 piped_category):
    review, folder = window.docks.review, window.store.folder
    parts = tmp_path / "new_parts"
    parts.mkdir()
    for p in sorted((piped_category / "test" / "good").glob("*.png"))[10:12]:
        shutil.copy(p, parts / f"good_{p.name}")
    for p in sorted((piped_category / "test" / "impurity").glob("*.png"))[10:12]:
        shutil.copy(p, parts / f"bad_{p.name}")
    with qtbot.waitSignal(review.jobEnded, timeout=120_000) as ended:
        review.inspect_folder(parts)
    assert ended.args == ["inspect", "finished"]
    lst = window.image_list
    assert lst.split_filter.currentData() == "inspect" and lst.model.rowCount() == 4
    listed = [review.scores[i] for i in lst.visible_ids()]
    assert listed == sorted(listed, reverse=True)                 # worst first
    window.docks.review_panel.image_thr.set_value(0.0)            # review every part
    review._image_threshold(0.0)
    lst.select_row(0)
    first = lst.current_id()
    wait_image(qtbot, window, first)
    key(qtbot, window, Qt.Key.Key_N)                              # false alarm: normal, next flagged
    with Store.open(folder) as s:
        assert s.label_record(first).tag == "normal"
    second = lst.current_id()
    assert second != first
    wait_image(qtbot, window, second)
    c = window.canvas
    key(qtbot, window, Qt.Key.Key_R)                              # a miss: box it right there
    drag(qtbot, c, line(widget_point(c, 40, 40), widget_point(c, 70, 60)))
    with Store.open(folder) as s:
        assert len(s.label_record(second).boxes) == 1
    # The report: one row per listed part, overlays beside it.
    with qtbot.waitSignal(review.jobEnded, timeout=60_000):
        review.export(tmp_path / "report")
    rows = list(csv.DictReader(open(tmp_path / "report" / f"report_model{reviewed[1]}.csv")))
    assert len(rows) == 4 and {r["flagged"] for r in rows} == {"1"}
    assert all((tmp_path / "report" / r["overlay"]).is_file() for r in rows)
    # Retrain with corrections: a second run from the first model, with the new labels.
    with qtbot.waitSignal(window.docks.training.modelReady, timeout=240_000) as ready:
        window.actions["retrain"].trigger()
    with Store.open(folder) as s:
        new = s.runs.model(ready.args[0])
        run = s.runs.run(new.run_id)
        first_path, second_path = s.image(first).abs_path, s.image(second).abs_path
    assert run.parent_model == reviewed[1] and "--init" in run.command
    assert (run.run_dir / run.command[run.command.index("--init") + 1]).resolve() == \
        (folder / "runs" / "0001" / "model.pt").resolve()
    normals = [(run.run_dir / ln).resolve() for ln in (run.run_dir / "normals.txt").read_text().split()]
    assert first_path.resolve() in normals                        # the corrected false alarm
    labelled = [json.loads(p.read_text()) for p in (run.run_dir / "labels").glob("*.json")]
    assert any(Path(d["image"]).name == second_path.name and len(d["boxes"]) == 1 for d in labelled)
    assert run.labels_used == {"boxes": 3, "normal": 1}
    text = window.docks.models_panel.model_row_texts(new.id)["vs. parent"]
    assert f"model {reviewed[1]}" in text                         # new metrics beside the old


def test_label_budget_plot(qtbot, window, reviewed):
    dlg = window.docks.show_budget()
    qtbot.addWidget(dlg)
    assert len(dlg.points) == 1
    (pt,) = dlg.points
    assert pt.seconds == pytest.approx(10.0) and 0 <= pt.value <= 1 and pt.supervision == "all"
    assert not pt.real and pt.label == f"model {pt.model_id} (synthetic)"   # 2 boxes: none held out
    assert len(dlg.png) > 5000 and not dlg.plot.pixmap().isNull()
    dlg.close()


def test_viewer_screenshot_with_heatmap(qtbot, window, reviewed, tmp_path):
    """A defective test image with its heatmap and ground-truth mask, saved for a reviewer."""
    with Store.open(window.store.folder) as s:
        target = next(r.id for r in s.images("test") if r.status == "defective")
    window.image_list.select(target)
    wait_image(qtbot, window, target)
    window.docks.dock["review"].raise_()
    c = window.canvas
    qtbot.waitUntil(lambda: c.heat is not None)
    assert c.heat.smooth and c.heat.image.width() == 256          # the smoothed map at eval size
    qtbot.wait(100)
    path = tmp_path / "viewer.png"
    assert window.grab().save(str(path))
    print(f"\nviewer screenshot: {path}")
    if os.environ.get("SEMIREST_SCREENSHOT_DIR"):
        keep = Path(os.environ["SEMIREST_SCREENSHOT_DIR"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, keep / "viewer.png")
    with_heat = c.grab().toImage()
    key(qtbot, window, Qt.Key.Key_V)                              # block grid view
    block = window.store.runs.prediction(reviewed[1], target)[1]
    assert not c.heat.smooth and (c.heat.image.height(), c.heat.image.width()) == block.shape   # one cell per block
    key(qtbot, window, Qt.Key.Key_H)                              # heatmap off
    assert c.heat is None
    assert c.grab().toImage() != with_heat
    assert "Score" in window.docks.review_panel.image_info.text() or \
        window.docks.review_panel.image_info.text() == "heatmap hidden (H)"
    img = QImage(str(path))
    assert (img.width(), img.height()) == (1400, 860)


def _show_a_defective_test_image(qtbot, window):
    """Show the first defective test image with the review panel up: (canvas, review panel)."""
    with Store.open(window.store.folder) as s:
        target = next(r.id for r in s.images("test") if r.status == "defective")
    window.image_list.select(target)
    wait_image(qtbot, window, target)
    window.docks.dock["review"].raise_()
    return window.canvas, window.docks.review_panel


def test_pixel_contrast_sharpens_the_shown_map_and_keeps_the_verdict(qtbot, window, reviewed):
    """The review panel's Pixel contrast (decision 0028) remakes the heatmap from the stored block
    map and the image: the map and the share over the pixel threshold change, the score and the
    verdict do not; "As trained" brings the model's own map back."""
    import numpy as np
    c, panel = _show_a_defective_test_image(qtbot, window)
    qtbot.waitUntil(lambda: c.heat is not None)
    assert panel.contrast.currentData() is None                  # the model's own map to start with
    before, info = c.heat._keep.copy(), panel.image_info.text()
    panel.contrast.setCurrentIndex(panel.contrast.findData(1.0))
    qtbot.waitUntil(lambda: not np.array_equal(c.heat._keep, before))
    after = panel.image_info.text()
    assert after.split("—")[0] == info.split("—")[0]               # "Score <b>x</b>": the same score
    assert ("not flagged" in after) == ("not flagged" in info)
    # the refinement read the image's grey levels as the core does (core.eval.anomaly_map.grey_levels
    # of the decoded RGB), converted once for the loaded image rather than on every redraw
    from core.data.images import read_image
    from core.eval.anomaly_map import grey_levels
    assert c.image.grey() is c.image.grey()
    assert np.array_equal(c.image.grey(), grey_levels(read_image(c.image.path)))
    panel.contrast.setCurrentIndex(panel.contrast.findData(None))
    qtbot.waitUntil(lambda: np.array_equal(c.heat._keep, before))


def test_recolouring_reuses_the_shown_map_and_a_new_contrast_remakes_it(qtbot, window, reviewed, monkeypatch):
    """Dragging the opacity slider redraws the layer without remaking the smoothed, refined map
    (a median filter per redraw); choosing another Pixel contrast remakes it."""
    import numpy as np
    import app.viewer.controller as controller
    made = []
    real = controller.smoothed_map
    monkeypatch.setattr(controller, "smoothed_map", lambda *a, **k: made.append(1) or real(*a, **k))
    c, panel = _show_a_defective_test_image(qtbot, window)
    panel.contrast.setCurrentIndex(panel.contrast.findData(1.0))
    qtbot.waitUntil(lambda: c.heat is not None)
    n, before = len(made), c.heat._keep.copy()
    for v in (20, 90, 45):
        panel.opacity.setValue(v)
    assert not np.array_equal(c.heat._keep[..., 3], before[..., 3])   # the alpha follows the slider
    assert len(made) == n                                             # from the same map
    panel.contrast.setCurrentIndex(panel.contrast.findData(0.1))
    assert len(made) == n + 1


def test_a_model_written_after_the_window_closed_is_recovered(qtbot, reviewed, tmp_path):
    """The worker finished while the project was closing: the next open records its model."""
    folder = copy_project(reviewed[0], tmp_path / "proj")
    with Store.open(folder) as s:
        run_id = s.runs.model(reviewed[1]).run_id
        s.db.execute("DELETE FROM models")
        s.runs.update_run(run_id, status="running", pid=None)
    w = open_window(qtbot, folder, tmp_path)
    with Store.open(folder) as s:
        (m,) = s.runs.models()
        assert m.run_id == run_id and s.runs.run(run_id).status == "finished"
    assert w.docks.models_panel.model_row_texts(m.id)["Supervision"] == "all"
    w.close()


def test_next_to_label_on_a_trained_model(qtbot, window, reviewed):
    """The ranking on a real model's scores and block maps: unlabelled images first, J goes to
    the first of them, and a label given moves it out of the ranking."""
    lst = window.image_list
    assert lst.model.review_model is not None and lst.model.scores
    lst.order.setCurrentIndex(lst.order.findData("next"))
    rows = lst.model.rows
    status = [r.status for r in rows]
    n_unlab = status.count("unlabelled")
    assert n_unlab >= 2 and status[:n_unlab] == ["unlabelled"] * n_unlab
    top = rows[0].id
    labelled = next(r.id for r in rows if r.status != "unlabelled")
    lst.select(labelled)
    wait_image(qtbot, window, labelled)
    window.canvas.setFocus()
    key(qtbot, window, Qt.Key.Key_J)
    wait_image(qtbot, window, top)
    key(qtbot, window, Qt.Key.Key_1)
    qtbot.waitUntil(lambda: window.store.image(top).status == "normal")
    key(qtbot, window, Qt.Key.Key_J)
    qtbot.waitUntil(lambda: getattr(window.canvas.document, "image_id", top) != top)
    assert window.store.image(window.canvas.document.image_id).status == "unlabelled"
