"""Annotation timing with a fake clock: browsing records nothing, time goes to the edited kind,
verdicts are "checked", idle exclusion; exports keep estimated seconds apart and are readable."""
import csv
import os
import stat

import numpy as np
import pytest

from app.project.store import Store, file_sha1
from app.labeling.timing import AnnotationTimer
from app.labeling.timing_report import export_timing, summarize, summary_png, timing_rows
from core.data.labels import RotatedBox

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


def test_browsing_records_nothing(timer):
    """Paging through images, whatever the tool, and looking around: no edit, no verdict, no time."""
    t, clock = timer
    for image_id in range(1, 12):                   # the tester's 11 normal images, Box tool active
        t.start(image_id)
        clock.tick(0.5); t.activity()               # hover, zoom, pan
        clock.tick(0.49)
        visit = t.stop()
        assert visit.image_id == image_id and visit.seconds == {} and visit.total == 0
        assert visit.verdict is None
    assert t.stop() is None


def test_time_goes_to_the_kind_edited_not_the_tool(timer):
    t, clock = timer
    t.start(1)
    clock.tick(2); t.activity()                     # looking (any tool: the timer does not know it)
    clock.tick(3); t.edited("mask")                 # a brush stroke ends: 5 s of mask time
    clock.tick(1)                                   # checking the stroke before moving on
    visit = t.stop()
    assert visit.seconds == {"mask": pytest.approx(6.0)}


def test_two_kinds_on_one_image_split_at_the_edit(timer):
    t, clock = timer
    t.start(7)
    clock.tick(3); t.activity()
    clock.tick(1); t.edited("boxes")                # 4 s up to the box
    clock.tick(2); t.activity()
    clock.tick(0.5); t.edited("mask")               # the 2.5 s after the box go to the stroke
    clock.tick(4); t.edited("boxes")                # back to boxes: 4 s more
    clock.tick(1)                                   # after the last edit: its kind (boxes)
    v = t.stop()
    assert v.seconds == {"boxes": pytest.approx(9.0), "mask": pytest.approx(2.5)}
    assert v.total == pytest.approx(11.5) and v.verdict is None


def test_a_verdict_records_checked_time_and_the_verdict(timer):
    t, clock = timer
    t.start(3)
    clock.tick(1.5); t.activity()
    clock.tick(0.5); t.verdict("normal")            # judged normal after 2 s
    clock.tick(0.3)
    v = t.stop()
    assert v.seconds == {"checked": pytest.approx(2.3)} and v.verdict == "normal"
    # A verdict after drawing: the drawing keeps its time, the judging after it is "checked",
    # and the last verdict of the visit is the one kept.
    t.start(4)
    clock.tick(6); t.edited("boxes")
    clock.tick(1); t.verdict("normal")
    clock.tick(2); t.verdict("defective")
    v = t.stop()
    assert v.seconds == {"boxes": pytest.approx(6), "checked": pytest.approx(3)} and v.verdict == "defective"
    with pytest.raises(ValueError):
        t.verdict(None)
    with pytest.raises(ValueError):
        t.edited("checked")                         # "checked" comes only from a verdict


def test_idle_gaps_over_threshold_are_excluded_whole(timer):
    t, clock = timer
    t.start(1)
    clock.tick(4); t.activity()
    clock.tick(10.0); t.activity()         # exactly the threshold still counts
    clock.tick(10.5); t.activity()         # over it: idle, excluded whole
    clock.tick(60); t.edited("mask")       # back after a minute away: the edit's event ends the gap
    clock.tick(2)
    clock.tick(20)                         # idle before moving on: excluded whole as well
    assert t.stop().seconds == {"mask": pytest.approx(14.0)}


def test_idle_gap_before_an_edit_is_excluded(timer):
    t, clock = timer
    t.start(1)
    clock.tick(3); t.edited("boxes")
    clock.tick(25); t.edited("blocks")     # 25 s without any event: nothing for blocks
    clock.tick(2)
    assert t.stop().seconds == {"boxes": pytest.approx(3.0), "blocks": pytest.approx(2.0)}


def test_start_closes_the_previous_visit_and_snapshot_is_what_stop_would_give(timer):
    t, clock = timer
    t.start(1)
    clock.tick(3); t.activity()
    assert t.snapshot().seconds == {}      # nothing edited yet: nothing to save
    clock.tick(1); t.edited("boxes")
    clock.tick(2); t.activity()
    snap = t.snapshot()
    clock.tick(2); t.activity()
    assert snap.seconds == {"boxes": 6} and t.snapshot().seconds == {"boxes": 8}
    t.start(2)                             # moving on, without an explicit stop
    assert t.image_id == 2 and t.snapshot().seconds == {}
    with pytest.raises(ValueError):
        t.edited("scribble")


def test_threshold_setting_changes_the_rule(timer):
    t, clock = timer
    t.set_idle_threshold(30)
    t.start(1)
    clock.tick(25); t.edited("boxes")
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


def _project(tmp_path, n=3):
    store = Store.create(tmp_path / "p")
    ids = [store.add_image(p, copied=False, width=64, height=48, split="train", sha1=file_sha1(p))
           for p in [make_image(tmp_path / f"{i}.png", seed=i) for i in range(n)]]
    return store, ids


def test_estimated_seconds_are_kept_apart_in_rows_summary_and_csv(tmp_path):
    store, ids = _project(tmp_path)
    store.save_boxes(ids[0], [RotatedBox(10, 10, 4, 4)])
    store.save_timing("m1", ids[0], {"boxes": 2.0}, 0, 2)                     # measured
    store.save_timing("e1", ids[0], {"boxes": 5.0}, 0, 5, estimated=True)     # seeded, same image
    store.save_timing("e2", ids[1], {"boxes": 5.0}, 0, 5, estimated=True)
    store.save_timing("c1", ids[2], {"checked": 1.0}, 0, 1, verdict="defective")
    store.save_timing("c2", ids[2], {"checked": 0.5}, 3, 4, verdict="normal")  # the later verdict wins
    rows = timing_rows(store)
    assert [(r.image_id, r.kind, r.source, r.seconds, r.verdict) for r in rows] == [
        (ids[0], "boxes", "measured", 2.0, None), (ids[0], "boxes", "estimated", 5.0, None),
        (ids[1], "boxes", "estimated", 5.0, None), (ids[2], "checked", "measured", 1.5, "normal")]
    summary = {(s.kind, s.source): s for s in summarize(rows)}
    assert set(summary) == {("boxes", "measured"), ("boxes", "estimated"), ("checked", "measured")}
    assert summary["boxes", "measured"].images == 1 and summary["boxes", "measured"].mean_s == pytest.approx(2.0)
    assert summary["boxes", "estimated"].images == 2 and summary["boxes", "estimated"].mean_s == pytest.approx(5.0)
    paths = export_timing(store, tmp_path / "out")
    with open(paths[0], newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [(t["kind"], t["source"], t["verdict"]) for t in table] == [
        ("boxes", "measured", ""), ("boxes", "estimated", ""), ("boxes", "estimated", ""),
        ("checked", "measured", "normal")]
    with open(paths[1], newline="") as fh:
        sums = {(t["kind"], t["source"]): t for t in csv.DictReader(fh)}
    assert set(sums) == set(summary)
    assert float(sums["boxes", "measured"]["mean_s"]) == 2.0 and sums["boxes", "estimated"]["images"] == "2"
    store.close()


def test_the_plot_draws_estimated_bars_apart_with_a_legend(tmp_path):
    from app.labeling.timing_report import KindSummary, summary_figure
    summary = [KindSummary("boxes", 3, 2.0, 2.0, 0.5, 6.0, "measured"),
               KindSummary("boxes", 3, 5.0, 5.0, 0.0, 15.0, "estimated"),
               KindSummary("mask", 1, 30.0, 30.0, 0.0, 30.0, "estimated")]
    ax = summary_figure(summary).axes[0]
    bars = [p for p in ax.patches if p.get_height() > 0]
    by_height = {round(b.get_height(), 3): b for b in bars}
    assert set(by_height) == {2.0, 5.0, 30.0}
    assert not by_height[2.0].get_hatch() and by_height[5.0].get_hatch() and by_height[30.0].get_hatch()
    assert by_height[2.0].get_x() != by_height[5.0].get_x()          # side by side, not stacked
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "measured" and legend[1].startswith("estimated")
    assert summary_png(summary)[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_seeded_seconds_are_estimated(tmp_path):
    from app import demo
    folder = demo.build_demo_project(tmp_path / "demo")
    with Store.open(folder) as s:
        rows = timing_rows(s)
        # every defect label (5 trained on, 5 test ground truths) and no normal tag; nothing measured
        assert len(rows) == 10 and all(r.estimated for r in rows)
        assert {r.kind for r in rows} == {"boxes", "mask", "checked"}
        assert {s.source for s in summarize(rows)} == {"estimated"}


def test_a_version_2_project_keeps_its_timing_and_marks_the_demo_seeds_estimated(tmp_path):
    import sqlite3
    from app.project.schema import SCHEMA_VERSION, current_version
    from store_helpers import old_project_db
    img = make_image(tmp_path / "a.png")
    folder = tmp_path / "old"
    db = old_project_db(folder, 2)
    db.execute("INSERT INTO images(path, copied, source, width, height, split, file_size, mtime_ns, sha1, "
               "added_at) VALUES (?, 0, ?, 64, 48, 'train', ?, ?, 'x', 0)",
               (str(img), str(img), img.stat().st_size, img.stat().st_mtime_ns))
    db.execute("INSERT INTO timing VALUES ('0123abcd', 1, 'boxes', 3.5, 100, 104)")   # a measured visit
    db.execute("INSERT INTO timing VALUES ('demo-x', 1, 'tag', 2.0, 0, 2)")           # the old demo's seed
    db.execute("COMMIT")
    db.close()
    with Store.open(folder) as s:
        assert current_version(s.db) == SCHEMA_VERSION == 4
        assert s.timing_totals() == [(1, "boxes", False, 3.5, None), (1, "tag", True, 2.0, None)]
        with pytest.raises(sqlite3.IntegrityError):
            s.db.execute("INSERT INTO timing VALUES ('z', 1, 'boxes', 1, 0, 1, 0, 'normal')")  # verdict: checked only


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_exported_files_get_the_umask_mode_not_0600(tmp_path, umask, mode):
    store, ids = _project(tmp_path, 1)
    store.save_timing("v", ids[0], {"boxes": 1.0}, 0, 1)
    old = os.umask(umask)
    try:
        paths = export_timing(store, tmp_path / "out")
    finally:
        os.umask(old)
    store.close()
    assert len(paths) == 3
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == mode, p
    if umask == 0o022:
        assert all(p.stat().st_mode & stat.S_IROTH for p in paths)     # others on the line PC can read


def test_tag_supervision_counts_the_verdict_time():
    """A defective tag is a verdict, timed as "checked": the tags-only label budget includes it."""
    from app.training.selection import restrict
    from core.data.labels import ImageLabel
    lab = ImageLabel("x.png", tag="defective", boxes=[RotatedBox(10, 10, 4, 4)],
                     seconds={"checked": 2.0, "boxes": 3.0})
    assert restrict(lab, "tags").seconds == {"checked": 2.0}
    assert restrict(lab, "boxes").seconds == {"boxes": 3.0}
