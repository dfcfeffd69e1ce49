"""core/progress.py: a long stage states its estimated time once, measured on its first steps."""
from __future__ import annotations

from core import progress
from core.progress import Reporter, duration_text


def _run(monkeypatch, seconds_per_step: float, total: int, stage: str = "train") -> list:
    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    events = []
    r = Reporter(events.append)
    for step in range(1, total + 1):
        clock[0] = 5.0 + seconds_per_step * step        # step 1 also holds a 5 s warm-up
        r(stage, step, total, "supervised", loss=0.1)
    return events


def test_a_long_training_states_its_estimate_once(monkeypatch):
    events = _run(monkeypatch, 2.0, 100)
    logs = [e for e in events if e.stage == "log"]
    assert len(logs) == 1
    assert logs[0].message == ("estimate: train (supervised) takes 2 s per step here, about 3 min for "
                               "the 96 steps left (plus validation)")
    assert abs(logs[0].metrics["eta_s"] - 192.0) < 1e-9
    assert [e.done for e in events if e.stage == "train"] == list(range(1, 101))   # no event lost
    assert events[-1].metrics["eta_s"] == 0.0


def test_a_short_stage_gets_no_estimate_line(monkeypatch):
    assert not [e for e in _run(monkeypatch, 0.1, 50) if e.stage == "log"]


def test_duration_text():
    assert [duration_text(s) for s in (40, 700, 3 * 3600, 80 * 3600)] == ["40 s", "12 min", "3.0 h", "3.3 days"]
