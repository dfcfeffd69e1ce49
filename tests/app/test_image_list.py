"""The image list: filters, search, keyboard navigation, thumbnails in the background, and
thousands of rows."""
from __future__ import annotations

import time

import pytest
from PySide6.QtCore import Qt

from app.project.store import Store, file_sha1
from app.labeling.thumbnails import ThumbnailLoader

from gen_images import make_image
from qt_drive import db, key, wait_image

pytestmark = pytest.mark.gui


def test_filters_search_and_split(qtbot, window):
    panel = window.image_list
    ids = [r.id for r in panel.model.rows]
    key(qtbot, window, Qt.Key.Key_1)                          # first image: normal
    panel.select(ids[1])
    wait_image(qtbot, window, ids[1])
    key(qtbot, window, Qt.Key.Key_2)                          # second: defective
    panel.status_filter.setCurrentIndex(panel.status_filter.findData("unlabelled"))
    assert [r.id for r in panel.model.rows] == [ids[2]]
    panel.status_filter.setCurrentIndex(panel.status_filter.findData("normal"))
    assert [r.id for r in panel.model.rows] == [ids[0]]
    panel.status_filter.setCurrentIndex(0)
    panel.select(ids[2])
    key(qtbot, window, Qt.Key.Key_3, Qt.KeyboardModifier.AltModifier)      # selected -> val split
    panel.split_filter.setCurrentIndex(panel.split_filter.findData("val"))
    assert [r.id for r in panel.model.rows] == [ids[2]]
    panel.split_filter.setCurrentIndex(0)
    panel.search.setText("img_001")
    assert [r.id for r in panel.model.rows] == [ids[1]] and "1 of 3" in panel.count.text()
    panel.search.clear()
    with db(window) as s:
        assert s.image(ids[2]).split == "val"


def test_keyboard_navigation_in_the_list_and_next_unlabelled(qtbot, window):
    panel = window.image_list
    ids = [r.id for r in panel.model.rows]
    panel.view.setFocus()
    qtbot.keyClick(panel.view, Qt.Key.Key_Down)
    wait_image(qtbot, window, ids[1])
    qtbot.keyClick(panel.view, Qt.Key.Key_Down)
    wait_image(qtbot, window, ids[2])
    qtbot.keyClick(panel.view, Qt.Key.Key_Up)
    wait_image(qtbot, window, ids[1])
    key(qtbot, window, Qt.Key.Key_1)                          # label it; U skips labelled ones
    panel.select(ids[0])
    wait_image(qtbot, window, ids[0])
    key(qtbot, window, Qt.Key.Key_U)
    wait_image(qtbot, window, ids[2])
    key(qtbot, window, Qt.Key.Key_D)                          # at the end: stays
    assert panel.current_id() == ids[2]


def test_thumbnails_arrive_in_the_background(qtbot, window):
    model = window.image_list.model
    first = model.rows[0].id
    qtbot.waitUntil(lambda: model.pixmap(first) is not None, timeout=5000)
    pm = model.pixmap(first)
    assert max(pm.width(), pm.height()) == 56              # scaled once to the list's icon size


def test_thumbnail_made_when_missing_and_thousands_of_rows(qtbot, tmp_path):
    src = make_image(tmp_path / "one.png", 300, 200)
    with Store.create(tmp_path / "p") as s:
        sha = file_sha1(src)
        with s.transaction():
            for i in range(3000):        # thousands of rows, no thumbnails stored
                s.db.execute("INSERT INTO images(path, copied, source, width, height, split, file_size,"
                             " mtime_ns, sha1, added_at) VALUES (?,0,?,300,200,'train',?,?,?,0)",
                             (f"{src}#{i}" if i else str(src), str(src), src.stat().st_size,
                              src.stat().st_mtime_ns, sha))
        t0 = time.perf_counter()
        rows = s.images()
        assert len(rows) == 3000 and time.perf_counter() - t0 < 1.0
    loader = ThumbnailLoader(tmp_path / "p")
    try:
        assert loader.get(1) is None                          # requested, not blocking
        qtbot.waitUntil(lambda: loader.get(1) is not None, timeout=5000)
        assert loader.get(1).width() == 96
        with Store.open(tmp_path / "p") as s:
            assert s.thumbnail(1) is not None                 # made once, stored for next time
        assert loader.get(2) is None
        qtbot.wait(300)
        assert loader.get(2) is None                          # a missing file: no thumbnail, no crash
    finally:
        loader.close()
