"""The worker protocol read robustly, the run's live state, and the selection rule. No window."""
from __future__ import annotations

import json

import numpy as np
import pytest

from app.training.worker_protocol import LineSplitter, RunState, format_seconds, parse_event
from app.training.selection import RunSpec, TrainSetError, prepare_run, restrict, select_training_set
from core.data.labels import BlockCells, ImageLabel, RotatedBox


def ev(stage, done, total, message="", **metrics):
    return json.dumps({"event": "progress", "stage": stage, "done": done, "total": total,
                       "message": message, "metrics": metrics})


def test_lines_split_across_reads_and_noise_is_not_an_event():
    sp = LineSplitter()
    line = ev("train", 3, 10, "supervised", loss=0.5)
    assert sp.feed(line[:17].encode()) == []
    assert sp.feed((line[17:] + "\nnoise\r\n{\"half").encode()) == [line, "noise"]
    assert sp.flush() == ['{"half']
    assert sp.feed(b"\xff\xfebad bytes\n") == ["\ufffd\ufffdbad bytes"]
    assert parse_event(line)["done"] == 3
    for junk in ("noise", '{"half', "[1, 2]", '{"event": "other"}', '{"event": "progress", "done": "x"}', ""):
        assert parse_event(junk) is None


def test_run_state_follows_both_stages_on_one_axis():
    st = RunState()
    for line in (ev("log", 1, 1, "resumed from model.pt.ckpt at step 10"), ev("features", 4, 8, rate=2.0, eta_s=2.0),
                 ev("train", 11, 20, "supervised", loss=0.9, rate=1.5, eta_s=6.0),
                 ev("train", 20, 20, "supervised", loss=0.4, val_pixel_ap=0.3),
                 ev("train", 1, 10, "ResMixMatch", loss=0.7, l_x=0.2, l_u=0.1, rate=0.5, eta_s=18),
                 ev("train", 10, 10, "ResMixMatch", loss=0.5, l_x=0.1, l_u=float("nan"))):
        st.apply(parse_event(line))
    assert st.log[0].startswith("resumed") and st.curves["loss"] == [(11, 0.9), (20, 0.4), (21, 0.7), (30, 0.5)]
    assert st.curves["l_u"] == [(21, 0.1)]                       # NaN is not plotted
    assert st.stage_starts == [(10.0, "supervised"), (20.0, "ResMixMatch")]
    assert st.curves["val_pixel_ap"] == [(20, 0.3)]
    st.apply(parse_event(ev("train", 5, 10, "ResMixMatch", loss=0.6, rate=0.5, eta_s=10)))
    assert "train (ResMixMatch): 5 / 10, 0.50 steps/s, ETA 10 s" == st.describe()
    st.apply({"event": "error", "kind": "DeviceError", "message": "advice"})
    assert st.error == {"kind": "DeviceError", "message": "advice"}
    assert format_seconds(3725) == "1 h 02 min" and format_seconds(75) == "1 min 15 s"


def _label(**kw):
    return ImageLabel("x.png", 20, 10, seconds={"mask": 30.0, "boxes": 5.0, "tag": 1.0, "blocks": 8.0}, **kw)


def test_restrict_keeps_only_the_chosen_kind_and_its_seconds():
    mask = np.zeros((10, 20), bool)
    mask[2:4, 3:6] = True
    full = _label(mask=mask, boxes=[RotatedBox(5, 3, 4, 2)], tag="defective",
                  blocks=BlockCells(256, 8, [(1, 1)]))
    assert restrict(full, "all") is full
    assert restrict(full, "unsupervised") is None
    for sup, kind in (("masks", "mask"), ("boxes", "boxes"), ("blocks", "blocks"), ("tags", "tag")):
        lab = restrict(full, sup)
        assert lab.kind == kind and set(lab.seconds) == {kind}
    assert restrict(_label(boxes=[RotatedBox(5, 3, 4, 2)]), "masks") is None
    assert restrict(_label(tag="normal"), "tags") is None          # a normal tag is not a defect


def test_selection_rule_and_its_refusals(tmp_path):
    from app.project.store import Store
    from gen_images import make_folder
    paths = make_folder(tmp_path / "src", 6, 32, 32)
    with Store.create(tmp_path / "p") as s:
        ids = [s.add_image(p, copied=False, width=32, height=32, split=sp, sha1=str(i))
               for i, (p, sp) in enumerate(zip(paths, ["train", "train", "train", "test", "inspect", "inspect"]))]
        s.save_boxes(ids[2], [RotatedBox(10, 10, 6, 4)])          # defective train image: not a normal
        s.save_boxes(ids[3], [RotatedBox(10, 10, 6, 4)])          # test split: ground truth, never trained
        s.save_tag(ids[4], "normal")                                # a corrected false alarm
        s.save_boxes(ids[5], [RotatedBox(8, 8, 4, 4)])             # a boxed miss
        ts = select_training_set(s, "boxes")
        assert [p.name for p in ts.normals] == [paths[0].name, paths[1].name, paths[4].name]
        assert sorted(l.image.name for l in ts.labels) == [paths[2].name, paths[5].name]
        assert ts.labels_used == {"boxes": 2, "normal": 1}
        with pytest.raises(TrainSetError, match="block labels"):
            select_training_set(s, "blocks")
        cmd = prepare_run(tmp_path / "p" / "runs" / "0001", RunSpec(supervision="boxes", device="cuda:1",
                                                                    steps=7), ts)
        assert cmd[cmd.index("--device") + 1] == "cuda:1" and cmd[cmd.index("--steps") + 1] == "7"
        assert cmd[cmd.index("--labels") + 1] == "labels" and len(list((tmp_path / "p" / "runs" / "0001" /
                                                                        "labels").glob("*.json"))) == 2
        s.set_split(ids[:2], "test")
        with pytest.raises(TrainSetError, match="at least 2 normal images"):
            select_training_set(s, "unsupervised")


def test_training_set_keeps_the_estimated_seconds_apart_and_the_model_gets_them(tmp_path):
    from types import SimpleNamespace

    from app.project.store import Store
    from app.training.selection import register_model
    from gen_images import make_folder
    paths = make_folder(tmp_path / "src", 5, 32, 32)
    with Store.create(tmp_path / "p") as s:
        ids = [s.add_image(p, copied=False, width=32, height=32, split=sp, sha1=str(i))
               for i, (p, sp) in enumerate(zip(paths, ["train", "train", "train", "train", "inspect"]))]
        s.save_boxes(ids[2], [RotatedBox(10, 10, 6, 4)])
        s.save_boxes(ids[3], [RotatedBox(10, 10, 6, 4)])
        s.save_tag(ids[4], "normal")
        s.save_timing("m2", ids[2], {"boxes": 4.0, "checked": 1.0}, 0, 5)                    # measured
        s.save_timing("e2", ids[2], {"boxes": 10.0, "checked": 2.0}, 0, 12, estimated=True)  # seeded
        s.save_timing("m3", ids[3], {"boxes": 6.0}, 0, 6)                                      # measured only
        s.save_timing("e4", ids[4], {"checked": 3.0}, 0, 3, estimated=True)
        assert s.seconds_by_kind(ids[2], estimated_only=True) == {"boxes": 10.0, "checked": 2.0}
        assert s.seconds_by_kind(ids[3], estimated_only=True) == {}
        ts = select_training_set(s, "boxes")           # only the boxes' seconds, as restrict() keeps
        assert ts.label_seconds == {"boxes": 20.0, "normal": 3.0}
        assert ts.label_seconds_estimated == {"boxes": 10.0, "normal": 3.0}
        ts_all = select_training_set(s, "all")         # every kind of the image, checked included
        assert ts_all.label_seconds == {"boxes": 23.0, "normal": 3.0}
        assert ts_all.label_seconds_estimated == {"boxes": 12.0, "normal": 3.0}
        run_dir = tmp_path / "p" / "runs" / "0001"
        run_id = s.runs.add_run({"supervision": "boxes"}, [], run_dir, ts.labels_used, ts.label_seconds,
                           label_seconds_estimated=ts.label_seconds_estimated)
        from core.config import OutputConfig
        out = OutputConfig(eval_size=64, upsample="bilinear", sharpness=0.5)
        bundle = SimpleNamespace(calibration={}, config=SimpleNamespace(output=out, preset="cpu", method="patchcore"),
                                 training={"device": "cpu"}, backbone="tf_efficientnet_lite0",
                                 validation={"val_pixel_ap": 0.5})
        m = s.runs.model(register_model(s, run_id, bundle))
        assert m.method == "patchcore"                   # recorded for the label budget
        assert m.label_seconds_estimated == {"boxes": 10.0, "normal": 3.0}
        assert m.label_seconds_estimated_total == 13.0 and m.label_seconds_total == 23.0
        # what the viewer needs to remake the smoothed map from a block map (app/viewer/maps.py)
        assert m.calibration["display"] == {"eval_size": 64, "gaussian_sigma": 4.0, "upsample": "bilinear",
                                            "sharpness": 0.5, "contrast": 0.0, "contrast_radius": 2.0}


def test_patchcore_run_spec_is_normal_images_only(tmp_path):
    with pytest.raises(TrainSetError, match="normal images only"):
        RunSpec(supervision="boxes", method="patchcore").validate()
    with pytest.raises(TrainSetError, match="unknown method"):
        RunSpec(method="nope").validate()
    from app.training.selection import TrainingSet
    ts = TrainingSet(normals=[tmp_path / "a.png", tmp_path / "b.png"])
    cmd = prepare_run(tmp_path / "run", RunSpec(supervision="unsupervised", method="patchcore"), ts)
    assert cmd[cmd.index("--method") + 1] == "patchcore"
    assert "--method" not in prepare_run(tmp_path / "run2", RunSpec(supervision="unsupervised"), ts)


@pytest.mark.gui
def test_train_panel_offers_each_method_and_greys_out_labels_for_patchcore(qtbot):
    from app.training.panel import TrainPanel
    from core.methods import METHODS
    panel = TrainPanel()
    qtbot.addWidget(panel)
    assert [panel.method.itemData(i) for i in range(panel.method.count())] == list(METHODS)
    panel.supervision.setCurrentIndex(panel.supervision.findData("boxes"))
    assert panel.supervision.isEnabled() and "SemiREST" in panel.method_hint.text()
    panel.method.setCurrentIndex(panel.method.findData("patchcore"))
    assert not panel.supervision.isEnabled() and not panel.steps.isEnabled()
    assert panel.supervision.currentData() == "unsupervised"          # shows what will be used
    assert "cannot learn from labelled defects" in panel.method_hint.text()
    assert "normal images only" in panel.method_hint.text()      # the registry's reason
    spec = panel.spec()
    assert (spec.method, spec.supervision) == ("patchcore", "unsupervised")
    spec.validate()
    panel.method.setCurrentIndex(panel.method.findData("semirest"))
    assert panel.supervision.isEnabled() and panel.spec().supervision == "boxes"


@pytest.mark.gui
def test_train_panel_passes_the_training_precision_to_the_worker(qtbot, tmp_path):
    """Precision (decision 0024) reaches the worker's command line for SemiREST (auto, the default,
    is the config's own); it is greyed out for a method without a Swin; an unknown one is refused."""
    from app.training.panel import TrainPanel
    from app.training.selection import TrainingSet
    from core.deploy.precision import TRAIN_PRECISIONS
    panel = TrainPanel()
    qtbot.addWidget(panel)
    assert [panel.precision.itemData(i) for i in range(panel.precision.count())] == list(TRAIN_PRECISIONS)
    assert panel.spec().precision == "auto"
    panel.precision.setCurrentIndex(panel.precision.findData("bfloat16"))
    spec = panel.spec().validate()
    ts = TrainingSet(normals=[tmp_path / "a.png", tmp_path / "b.png"])
    cmd = prepare_run(tmp_path / "run", spec, ts)
    assert cmd[cmd.index("--precision") + 1] == "bfloat16"
    assert "--precision" not in prepare_run(tmp_path / "run2", RunSpec(supervision="unsupervised"), ts)
    panel.method.setCurrentIndex(panel.method.findData("patchcore"))
    assert not panel.precision.isEnabled() and panel.spec().precision == "auto"
    with pytest.raises(TrainSetError, match="unknown precision"):
        RunSpec(precision="int4").validate()


@pytest.mark.gui
def test_bench_hint_quotes_patchcore_when_it_is_the_method(qtbot):
    from app.training.panel import TrainPanel
    costs = {"pixel_ap": {"PatchCore": 62.4, "Unsup": 67.1, "Sup": 70.0, "Semi": 66.3, "Tag": 66.8},
             "seeds": [0], "data": "d", "preset": "cpu", "backbone": "b"}
    panel = TrainPanel(label_costs=costs)
    qtbot.addWidget(panel)
    panel.method.setCurrentIndex(panel.method.findData("patchcore"))
    assert panel.bench_hint.text().startswith("Mean pixel AP 62.4 % vs 67.1 % for SemiREST without labels")
    panel.method.setCurrentIndex(panel.method.findData("semirest"))
    panel.supervision.setCurrentIndex(panel.supervision.findData("boxes"))
    assert "66.3 % vs 67.1 % unsupervised" in panel.bench_hint.text() and "worse than none" in panel.bench_hint.text()
