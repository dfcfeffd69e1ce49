"""Annotation timing with a fake clock: idle exclusion, per-kind attribution, exports."""
import csv

import numpy as np
import pytest

from app.store import Store, file_sha1
from app.timing import AnnotationTimer
from app.timing_report import export_timing, summarize, timing_rows
from core.labels import RotatedBox

from gen_images import make_image


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t

    def tick(self, dt):
        self.t += dt


@pytest.fixture
def timer():
    clock = FakeClock()
    return AnnotationTimer(clock=clock, idle_threshold=10.0, wall_clock=clock), clock


def test_active_time_from_open_to_moving_on(timer):
    t, clock = timer
    t.start(1, "boxes")
    clock.tick(2); t.activity()
    clock.tick(3); t.activity()
    clock.tick(1)
    visit = t.stop()
    assert visit.image_id == 1 and visit.seconds == {"boxes": pytest.approx(6.0)}
    assert t.stop() is None


def test_idle_gaps_over_threshold_are_excluded_whole(timer):
    t, clock = timer
    t.start(1, "mask")
    clock.tick(4); t.activity()
    clock.tick(10.0); t.activity()         # exactly the threshold still counts
    clock.tick(10.5); t.activity()         # over it: idle, excluded whole
    clock.tick(60); t.activity()           # back after a minute away
    clock.tick(2)
    assert t.stop().seconds == {"mask": pytest.approx(16.0)}


def test_time_goes_to_the_tool_in_use(timer):
    t, clock = timer
    t.start(7, "tag")
    clock.tick(1); t.set_kind("boxes")     # 1 s of looking with the tag tool
    clock.tick(3); t.activity()            # 3 s drawing a box
    clock.tick(2); t.set_kind("mask")      # still box time until the switch
    clock.tick(5); t.activity()
    clock.tick(20); t.set_kind("blocks")   # idle, then a switch: nothing credited
    clock.tick(4)
    v = t.stop()
    assert v.seconds == {"tag": pytest.approx(1), "boxes": pytest.approx(5), "mask": pytest.approx(5),
                         "blocks": pytest.approx(4)}
    assert v.total == pytest.approx(15)


def test_start_closes_the_previous_visit_and_snapshot_is_a_copy(timer):
    t, clock = timer
    t.start(1, "boxes")
    clock.tick(3); t.activity()
    snap = t.snapshot()
    clock.tick(2); t.activity()
    assert snap.seconds == {"boxes": 3} and t.snapshot().seconds == {"boxes": 5}
    t.start(2, "tag")                      # moving on, without an explicit stop
    assert t.image_id == 2 and t.snapshot().seconds == {}
    with pytest.raises(ValueError):
        t.set_kind("scribble")


def test_threshold_setting_changes_the_rule(timer):
    t, clock = timer
    t.set_idle_threshold(30)
    t.start(1, "boxes")
    clock.tick(25); t.activity()
    assert t.stop().seconds == {"boxes": 25}


def test_timing_exports_csv_summary_and_plot(tmp_path):
    store = Store.create(tmp_path / "p")
    ids = [store.add_image(p, copied=False, width=64, height=48, split="train", sha1=file_sha1(p))
           for p in [make_image(tmp_path / f"{i}.png", seed=i) for i in range(3)]]
    store.save_boxes(ids[0], [RotatedBox(10, 10, 4, 4), RotatedBox(30, 20, 6, 3, 45)])
    mask = np.zeros((48, 64), np.uint8)
    mask[2:5, 2:5] = 1
    mask[20:30, 40:50] = 1
    store.save_mask(ids[1], mask)
    store.save_timing("v1", ids[0], {"boxes": 4.0, "tag": 1.0}, 0, 5)
    store.save_timing("v2", ids[0], {"boxes": 2.0}, 10, 12)      # a second visit adds up
    store.save_timing("v3", ids[1], {"mask": 30.0}, 20, 50)
    store.save_timing("v4", ids[2], {"boxes": 6.0}, 60, 66)
    rows = timing_rows(store)
    assert [(r.image_id, r.kind, r.seconds, r.shapes) for r in rows] == [
        (ids[0], "boxes", 6.0, 2), (ids[0], "tag", 1.0, 0), (ids[1], "mask", 30.0, 2),
        (ids[2], "boxes", 6.0, 0)]
    summary = {s.kind: s for s in summarize(rows)}
    assert summary["boxes"].images == 2 and summary["boxes"].mean_s == pytest.approx(6.0)
    assert summary["mask"].mean_s == pytest.approx(30.0)
    paths = export_timing(store, tmp_path / "out")
    with open(paths[0], newline="") as fh:
        table = list(csv.DictReader(fh))
    assert table[0]["kind"] == "boxes" and table[0]["shapes"] == "2" and float(table[0]["seconds"]) == 6
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[2].stat().st_size > 5000
    store.close()
