"""Which image to label next, in the real window: the "Next to label" sort order and the J key,
on a project whose model scores are set by hand (so the expected order is known); the ranking on
a tiny trained model is in test_review.py."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from app.project.importer import import_folder
from app.main_window import MainWindow
from app.project.store import Store

from gen_images import make_folder
from qt_drive import key, open_main_window, wait_image

pytestmark = pytest.mark.gui
SCORES = [0.05, 0.95, 0.5, 0.1, 0.2, 0.9, 0.3]     # image 3 (index 2) sits on the threshold 0.5


@pytest.fixture
def scored(tmp_path):
    """7 images of 64 x 48 px, image 1 tagged normal, a model row whose scores are SCORES."""
    src = make_folder(tmp_path / "src", len(SCORES), 64, 48)
    with Store.create(tmp_path / "proj") as s:
        ids = import_folder(s, src[0].parent, copy=False, split="train").added
        s.save_tag(ids[0], "normal")
        mid = s.runs.add_model(None, tmp_path / "model.pt", "all", {}, "tiny", "cpu", {},
                          {"image_threshold": 0.5, "pixel_threshold": 0.5, "map_scale": 1.0},
                          {}, {})
        maps = []
        for sc in SCORES:
            m = np.zeros((6, 8), np.float32)
            m[2, 3] = sc
            maps.append(m)
        s.runs.save_predictions(mid, zip(ids, SCORES, maps))
    return tmp_path / "proj", ids


def _shown(w) -> int | None:
    """The image on the canvas (None while the next one loads)."""
    return getattr(w.canvas.document, "image_id", None)


def _open(qtbot, folder, tmp_path) -> MainWindow:
    return open_main_window(qtbot, folder, tmp_path, devices=None)


def test_next_to_label_order_and_key(qtbot, scored, tmp_path):
    folder, ids = scored
    w = _open(qtbot, folder, tmp_path)
    lst = w.image_list
    assert w.docks.review.model is not None and lst.model.review_model.id == w.docks.review.model.id
    order = lst.order.findData("next")
    assert lst.order.itemText(order) == "Next to label"
    lst.order.setCurrentIndex(order)
    listed = lst.visible_ids()
    assert sorted(listed) == sorted(ids)                        # every image, once
    assert listed[-1] == ids[0]                                 # the labelled one after the unlabelled
    # first: the score on the threshold and the highest score (no defect labelled yet: novel);
    # the confidently normal 0.1 comes after them
    assert set(listed[:2]) == {ids[1], ids[2]} and listed.index(ids[3]) > 2
    top = listed[0]
    # J from elsewhere jumps to the top-ranked unlabelled image
    lst.select(ids[0])
    wait_image(qtbot, w, ids[0])
    w.canvas.setFocus()
    key(qtbot, w, Qt.Key.Key_J)
    wait_image(qtbot, w, top)
    # labelled, it drops out: J goes on to another unlabelled image, never a labelled one
    key(qtbot, w, Qt.Key.Key_2)                                 # tag defective
    qtbot.waitUntil(lambda: w.store.image(top).status == "defective")
    seen = {top}
    for _ in range(4):
        key(qtbot, w, Qt.Key.Key_J)
        qtbot.waitUntil(lambda: _shown(w) not in seen | {None})
        cur = _shown(w)
        assert w.store.image(cur).status == "unlabelled"
        seen.add(cur)
        key(qtbot, w, Qt.Key.Key_1)                             # tag normal
        qtbot.waitUntil(lambda: w.store.image(cur).status == "normal")
    key(qtbot, w, Qt.Key.Key_J)                                 # one unlabelled image left
    qtbot.waitUntil(lambda: _shown(w) not in seen | {None})
    last = _shown(w)
    key(qtbot, w, Qt.Key.Key_1)
    qtbot.waitUntil(lambda: w.store.image(last).status == "normal")
    key(qtbot, w, Qt.Key.Key_J)                                 # none left: stays, and says so
    qtbot.waitUntil(lambda: "No other unlabelled image" in w.statusBar().currentMessage())
    assert _shown(w) == last
    w.close()


def test_next_to_label_without_a_model_spreads_over_the_images(qtbot, tmp_path):
    src = make_folder(tmp_path / "src", 4, 64, 48)
    with Store.create(tmp_path / "proj") as s:
        ids = import_folder(s, src[0].parent, copy=False, split="train").added
    w = _open(qtbot, tmp_path / "proj", tmp_path)
    assert w.docks.review.model is None
    first = _shown(w)
    key(qtbot, w, Qt.Key.Key_J)
    qtbot.waitUntil(lambda: _shown(w) not in (first, None))
    assert _shown(w) in ids
    w.close()
