"""The project store: schema, label round trips, filters, training export, two connections."""
import sqlite3

import numpy as np
import pytest

from app.settings import ProjectSettings
from app.project.store import PROJECT_DB, Store, StoreError, decode_mask, encode_mask, file_sha1
from app.project.schema import SCHEMA_VERSION
from core.data.labels import BlockCells, RotatedBox, load_label

from gen_images import make_image


def add(store, path, split="train", copied=False):
    return store.add_image(path, copied=copied, width=64, height=48, split=split, sha1=file_sha1(path))


@pytest.fixture
def project(tmp_path):
    store = Store.create(tmp_path / "proj")
    ids = [add(store, make_image(tmp_path / "src" / f"{i}.png", seed=i)) for i in range(3)]
    yield store, ids
    store.close()


def test_create_sets_wal_fk_version_and_settings(tmp_path):
    s = Store.create(tmp_path / "p", ProjectSettings(image_size=512, block=16))
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert s.db.execute("PRAGMA synchronous").fetchone()[0] == 2   # FULL
    assert s.db.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    s.close()
    s = Store.open(tmp_path / "p")
    assert (s.settings().image_size, s.settings().block) == (512, 16)
    with pytest.raises(StoreError, match="already holds"):
        Store.create(tmp_path / "p")
    s.close()


def test_open_refuses_non_projects_and_newer_schema(tmp_path):
    with pytest.raises(StoreError, match="not a SemiREST Studio project"):
        Store.open(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / PROJECT_DB).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable project database"):
        Store.open(tmp_path / "bad")
    Store.create(tmp_path / "new").close()
    db = sqlite3.connect(tmp_path / "new" / PROJECT_DB)
    db.execute("UPDATE schema_version SET version = 999")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer SemiREST Studio"):
        Store.open(tmp_path / "new")


def test_label_round_trip_and_empty_labels_delete_rows(project):
    store, (a, b, c) = project
    box = RotatedBox(20, 10, 8, 4, 30)
    mask = np.zeros((48, 64), np.uint8)
    mask[5:9, 7:12] = 1
    r1 = store.save_boxes(a, [box])
    r2 = store.save_mask(a, mask)
    store.save_blocks(a, BlockCells(256, 8, [(1, 2), (3, 4)]))
    store.save_tag(a, "defective")
    assert r2 == r1 + 1 == store.image_rev(a) - 2
    rec = store.label_record(a)
    assert rec.boxes == [box] and rec.tag == "defective"
    assert rec.blocks.cells == [(1, 2), (3, 4)]
    assert np.array_equal(decode_mask(rec.mask_png), mask)
    assert store.label_counts(a) == {"boxes": 1, "mask": 20, "blocks": 2, "tag": 1}
    store.save_boxes(a, [])
    store.save_mask(a, np.zeros_like(mask))
    store.save_blocks(a, None)
    store.save_tag(a, None)
    assert store.label_counts(a) == {}
    assert store.image(a).status == "unlabelled"


def test_status_filters_and_split(project):
    store, (a, b, c) = project
    store.save_tag(a, "normal")
    store.save_boxes(b, [RotatedBox(10, 10, 5, 5)])
    store.set_split([c], "test")
    assert [r.id for r in store.images(status="normal")] == [a]
    assert [r.id for r in store.images(status="defective")] == [b]
    assert [r.id for r in store.images(status="unlabelled")] == [c]
    assert [r.id for r in store.images(split="test")] == [c]
    with pytest.raises(ValueError):
        store.set_split([a], "holdout")


def test_labels_for_training_and_label_files(project, tmp_path):
    store, (a, b, c) = project
    mask = np.zeros((48, 64), np.uint8)
    mask[10:20, 30:40] = 1
    store.save_mask(a, mask)
    store.save_tag(b, "normal")
    store.save_timing("s1", a, {"mask": 12.5}, 0, 1)
    labels = store.labels_for_training()
    assert [lab.image for lab in labels] == [store.image(a).abs_path, store.image(b).abs_path]
    assert labels[0].kind == "mask" and labels[0].mask.dtype == bool and labels[0].mask.sum() == 100
    assert labels[0].seconds == {"mask": 12.5}
    assert labels[1].kind == "tag" and labels[1].is_defective is False
    assert len(store.labels_for_training(labelled_only=False)) == 3
    files = store.write_label_files(tmp_path / "out")
    assert len(files) == 2
    back = load_label(files[0])
    assert back.image.resolve() == store.image(a).abs_path.resolve()
    assert np.array_equal(back.mask, mask.astype(bool))


def test_non_ascii_paths_and_copied_paths_are_relative(tmp_path):
    store = Store.create(tmp_path / "projekt-ü")
    src = make_image(tmp_path / "Bilder" / "Prüfteil_äöß_缺陷.png")
    i = add(store, src)
    copy = make_image(store.folder / "images" / "kopie_é.png")
    j = add(store, copy, copied=True)
    assert store.image(i).abs_path == src.resolve() and store.image(i).path == str(src.resolve())
    assert store.image(j).path == "images/kopie_é.png"
    assert store.find_image(src) == i
    store.close()


def test_two_connections_last_writer_wins_and_see_each_other(project):
    store, (a, b, c) = project
    other = Store.open(store.folder)
    v0 = store.data_version()
    other.save_boxes(a, [RotatedBox(5, 5, 4, 4)])
    assert store.data_version() != v0          # the first window notices the other's commit
    store.save_boxes(a, [RotatedBox(9, 9, 2, 2)])
    other.save_tag(a, "defective")             # a different kind is not clobbered
    rec = store.label_record(a)
    assert rec.boxes == [RotatedBox(9, 9, 2, 2)] and rec.tag == "defective"
    assert rec.writers == {"boxes": store.writer_id, "tag": other.writer_id}
    assert other.image_rev(a) == store.image_rev(a) == 3
    other.close()


def test_file_state_detects_changes(project):
    store, (a, b, c) = project
    row = store.image(a)
    assert store.file_state(row) == "ok"
    make_image(row.abs_path, seed=99)
    assert store.file_state(row) == "changed"
    row.abs_path.unlink()
    assert store.file_state(row) == "missing"


def test_remove_images_cascades(project):
    store, (a, b, c) = project
    store.save_tag(a, "normal")
    store.save_timing("s", a, {"tag": 1.0}, 0, 1)
    store.remove_images([a])
    assert store.image_count() == 2
    assert store.db.execute("SELECT count(*) FROM labels").fetchone()[0] == 0
    assert store.db.execute("SELECT count(*) FROM timing").fetchone()[0] == 0


def test_mask_codec_is_exact_and_small():
    rng = np.random.default_rng(0)
    m = (rng.random((300, 200)) > 0.7).astype(np.uint8)
    assert np.array_equal(decode_mask(encode_mask(m)), m)
    big = np.zeros((4000, 4000), np.uint8)
    big[1000:1500, 2000:2600] = 1
    assert len(encode_mask(big)) < 100_000
