"""Schema 2: runs, models, predictions, the 'inspect' split; a version-1 project migrates in place.
Schema 4: the estimated part of a run's and a model's label seconds; older rows read {}."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from app.project.store import Store
from app.project.schema import SCHEMA_VERSION, current_version

from gen_images import make_image
from store_helpers import old_project_db


def _v1_project(folder, img):
    """A project as issue 3 wrote it: schema version 1, one image with a tag, timing, thumbnail."""
    db = old_project_db(folder, 1, wal=True)
    db.execute("INSERT INTO images(path, copied, source, width, height, split, file_size, mtime_ns, sha1, "
               "added_at) VALUES (?, 0, ?, 64, 48, 'test', ?, ?, 'x', 0)",
               (str(img), str(img), img.stat().st_size, img.stat().st_mtime_ns))
    db.execute("INSERT INTO labels VALUES (1, 'tag', '\"normal\"', NULL, 1, 0, 'w')")
    db.execute("INSERT INTO timing VALUES ('s1', 1, 'tag', 2.5, 0, 1)")
    db.execute("INSERT INTO thumbnails VALUES (1, x'00')")
    db.execute("COMMIT")
    db.close()


def test_version_1_project_migrates_keeping_everything(tmp_path):
    img = make_image(tmp_path / "a.png")
    _v1_project(tmp_path / "p", img)
    with Store.open(tmp_path / "p") as s:
        assert current_version(s.db) == SCHEMA_VERSION == 4
        assert s.integrity_check() == "ok"
        assert s.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        (row,) = s.images()
        assert row.split == "test" and row.status == "normal"
        assert s.seconds_by_kind(row.id) == {"tag": 2.5} and s.thumbnail(row.id) == b"\x00"
        s.set_split([row.id], "inspect")                       # the new split is allowed
        assert s.image(row.id).split == "inspect"
        with pytest.raises(sqlite3.IntegrityError):
            s.db.execute("UPDATE images SET split = 'nonsense'")
        s.remove_images([row.id])                              # cascades still reach the rebuilt table
        assert s.db.execute("SELECT count(*) FROM labels").fetchone()[0] == 0
        assert s.db.execute("SELECT count(*) FROM timing").fetchone()[0] == 0


def test_runs_models_thresholds_predictions(tmp_path):
    img = make_image(tmp_path / "a.png")
    with Store.create(tmp_path / "p") as s:
        image_id = s.add_image(img, copied=False, width=64, height=48, split="inspect", sha1="x")
        run_dir = s.folder / "runs" / "0001"
        run_id = s.runs.add_run({"supervision": "boxes"}, ["-m", "core.cli"], run_dir, {"boxes": 2}, {"boxes": 9.5})
        s.runs.update_run(run_id, status="running", pid=None, started=1.0)
        run = s.runs.run(run_id)
        assert run.status == "running" and run.run_dir == run_dir and run.labels_used == {"boxes": 2}
        with pytest.raises(ValueError):
            s.runs.update_run(run_id, status="exploded")
        assert s.runs.mark_orphaned_runs() == [run_id]              # no live worker: failed, resumable
        assert s.runs.run(run_id).status == "failed" and "Resume" in s.runs.run(run_id).error
        model_id = s.runs.add_model(run_id, run_dir / "model.pt", "boxes", {"device": "cpu", "seconds": 12.0},
                               "tf_efficientnet_lite0", "cpu", {"val_pixel_ap": 0.4, "history": []},
                               {"map_scale": 0.8, "image_threshold": 0.3, "pixel_threshold": 0.2},
                               {"boxes": 2}, {"boxes": 9.5})
        m = s.runs.model(model_id)
        assert (m.image_threshold, m.pixel_threshold, m.map_scale, m.val_pixel_ap) == (0.3, 0.2, 0.8, 0.4)
        s.runs.set_thresholds(model_id, image=0.55)
        assert s.runs.model(model_id).image_threshold == 0.55 and s.runs.model(model_id).pixel_threshold == 0.2
        block = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
        s.runs.save_predictions(model_id, [(image_id, 0.7, block)])
        score, back = s.runs.prediction(model_id, image_id)
        assert score == 0.7 and back.shape == (3, 4) and np.allclose(back, block, atol=1e-3)
        assert s.runs.scores(model_id) == {image_id: 0.7}
        assert s.runs.model_of_run(run_id).id == model_id


def test_version_3_runs_and_models_migrate_and_read_as_all_measured(tmp_path):
    folder = tmp_path / "p"
    db = old_project_db(folder, 3)
    db.execute("INSERT INTO runs(status, settings, command, run_dir, labels_used, label_seconds, created) "
               "VALUES ('finished', '{}', '[]', 'runs/0001', '{\"boxes\": 2}', '{\"boxes\": 9.5}', 1)")
    db.execute("INSERT INTO models(run_id, path, created, supervision, labels_used, label_seconds, validation, "
               "calibration) VALUES (1, 'runs/0001/model.pt', 2, 'boxes', '{\"boxes\": 2}', '{\"boxes\": 9.5}', "
               "'{\"val_pixel_ap\": 0.4}', '{}')")
    db.execute("COMMIT")
    db.close()
    with Store.open(folder) as s:
        assert current_version(s.db) == SCHEMA_VERSION == 4 and s.integrity_check() == "ok"
        run, m = s.runs.run(1), s.runs.model(1)
        assert run.label_seconds == {"boxes": 9.5} and run.label_seconds_estimated == {}
        assert m.label_seconds == {"boxes": 9.5} and m.label_seconds_estimated == {}
        assert m.label_seconds_estimated_total == 0.0 and m.label_seconds_estimated_fraction == 0.0
        # new rows keep the estimated part apart
        run_dir = s.folder / "runs" / "0002"
        run_id = s.runs.add_run({"supervision": "boxes"}, ["-m", "core.cli"], run_dir, {"boxes": 2}, {"boxes": 40.0},
                           label_seconds_estimated={"boxes": 30.0})
        assert s.runs.run(run_id).label_seconds_estimated_total == 30.0
        model_id = s.runs.add_model(run_id, run_dir / "model.pt", "boxes", {}, "tf_efficientnet_lite0", "cpu",
                               {"val_pixel_ap": 0.5}, {}, {"boxes": 2}, {"boxes": 40.0}, {"boxes": 30.0})
        m = s.runs.model(model_id)
        assert m.label_seconds_estimated == {"boxes": 30.0} and m.label_seconds_estimated_fraction == 0.75
