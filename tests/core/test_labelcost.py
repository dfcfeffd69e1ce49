"""The label cost model (core/data/labelcost.py): estimates from geometry, calibration on measured
seconds, estimated seconds in label files and in the evaluation protocols."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from core.data.datasets import load_mvtec
from core.data.formats import export_labels, import_labels
from core.demo import make_dataset
from core.errors import LabelError
from core.data.labelcost import (PRIOR, LabelGeometry, calibrate, fill_estimates, label_geometry, measured_in)
from core.data.labels import BlockCells, ImageLabel, RotatedBox, load_label, save_label
from core.data.protocols import make_protocol
from formats_helpers import make_image


def _disc_mask(size: int, radius: float, centres) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    for cx, cy in centres:
        cv2.circle(m, (int(cx * size), int(cy * size)), int(radius * size), 1, -1)
    return m.astype(bool)


def _cost(label: ImageLabel, kind: str) -> float:
    return PRIOR.estimate(label)[kind]


def test_priors_give_the_papers_per_image_means_for_a_typical_defect(tmp_path):
    # Fig. 6: boxes about 5 s, blocks about 17 s, pixel masks 32 s or more per image
    img = tmp_path / "a.png"
    box = ImageLabel(img, 1024, 1024, boxes=[RotatedBox(50, 50, 30, 10, 20)])
    assert _cost(box, "boxes") == pytest.approx(5.0)
    blocks = ImageLabel(img, 1024, 1024, blocks=BlockCells(256, 8, [(r, c) for r in range(4) for c in range(5)]))
    g = label_geometry(blocks)[0]
    assert (g.cells, g.runs) == (20, 4)
    assert 14 <= _cost(blocks, "blocks") <= 20
    # one defect region about 400 display px around (a disc of radius ~64 px on a 1024 px image)
    mask = ImageLabel(img, 1024, 1024, mask=_disc_mask(1024, 64 / 1024, [(0.5, 0.5)]))
    assert _cost(mask, "mask") >= 30
    assert PRIOR.estimate(ImageLabel(img, tag="defective")) == {"tag": 2.0}


def test_mask_cost_follows_outline_at_display_size_and_components(tmp_path):
    img = tmp_path / "a.png"
    one_small = ImageLabel(img, mask=_disc_mask(256, 0.05, [(0.5, 0.5)]))
    one_big = ImageLabel(img, mask=_disc_mask(256, 0.2, [(0.5, 0.5)]))
    three = ImageLabel(img, mask=_disc_mask(256, 0.05, [(0.2, 0.2), (0.5, 0.5), (0.8, 0.8)]))
    assert label_geometry(three)[0].components == 3
    assert _cost(one_small, "mask") < _cost(one_big, "mask") < 1e9
    assert _cost(three, "mask") > _cost(one_small, "mask") + 2 * PRIOR.mask.per_component_s
    # the same defect on a 4x larger sensor is the same drawing on screen: about the same cost
    same_big_sensor = ImageLabel(img, mask=_disc_mask(1024, 0.05, [(0.5, 0.5)]))
    assert _cost(same_big_sensor, "mask") == pytest.approx(_cost(one_small, "mask"), rel=0.1)
    # a hole is traced too
    ring = _disc_mask(256, 0.2, [(0.5, 0.5)]) & ~_disc_mask(256, 0.1, [(0.5, 0.5)])
    assert _cost(ImageLabel(img, mask=ring), "mask") > _cost(one_big, "mask")


def test_calibration_scales_a_kind_only_with_enough_measured_images():
    g = LabelGeometry("boxes", boxes=1)
    four = [(g, 10.0)] * 4
    assert calibrate(four).seconds(g) == pytest.approx(PRIOR.seconds(g))
    assert calibrate(four).basis["boxes"] == "Fig. 6 prior"
    five = four + [(LabelGeometry("boxes", boxes=2), 18.0)]   # 2x the prior each
    m = calibrate(five)
    assert m.seconds(g) == pytest.approx(2 * PRIOR.seconds(g))
    assert m.seconds(LabelGeometry("boxes", boxes=3)) == pytest.approx(2 * PRIOR.seconds(LabelGeometry("boxes", boxes=3)))
    assert m.basis["boxes"].startswith("calibrated on 5 measured images")
    # other kinds keep their priors; one outlier does not move a median
    assert m.seconds(LabelGeometry("tag")) == PRIOR.seconds(LabelGeometry("tag"))
    robust = calibrate(five + [(g, 500.0)])
    assert robust.seconds(g) == pytest.approx(2 * PRIOR.seconds(g))


def test_fill_estimates_keeps_given_seconds_and_calibrates_on_measured_ones(tmp_path):
    img = tmp_path / "a.png"
    box = [RotatedBox(20, 20, 8, 8, 0)]
    measured = [ImageLabel(img, 64, 64, boxes=box, seconds={"boxes": 15.0}) for _ in range(5)]
    bare = ImageLabel(img, 64, 64, boxes=box + box)
    tagged = ImageLabel(img, 64, 64, tag="defective", seconds={"checked": 3.0})
    model = fill_estimates(measured + [bare, tagged])
    assert [m.seconds for m in measured] == [{"boxes": 15.0}] * 5 and not measured[0].seconds_estimated
    assert bare.seconds["boxes"] == pytest.approx(3 * PRIOR.seconds(LabelGeometry("boxes", boxes=2)))
    assert bare.seconds_estimated == bare.seconds
    assert tagged.seconds == {"checked": 3.0} and tagged.seconds_estimated == {}   # the verdict's time
    assert "calibrated on 5" in model.describe()
    # estimated seconds never calibrate: only the measured part counts
    assert measured_in([bare]) == []


def test_label_json_carries_estimated_seconds_apart_and_old_files_still_load(tmp_path):
    img = make_image(tmp_path / "a.png")
    lab = ImageLabel(img, 64, 48, boxes=[RotatedBox(20, 20, 8, 8, 0)], tag="defective",
                     seconds={"boxes": 9.0, "checked": 1.5}, seconds_estimated={"boxes": 5.0})
    p = save_label(lab, tmp_path / "a.json")
    d = json.loads(p.read_text())
    assert d["seconds"] == {"boxes": 9.0, "checked": 1.5} and d["seconds_estimated"] == {"boxes": 5.0}
    assert load_label(p).seconds_estimated == {"boxes": 5.0}
    del d["seconds_estimated"]                                  # a file from before: all measured
    p.write_text(json.dumps(d))
    assert load_label(p).seconds_estimated == {}
    assert "seconds_estimated" not in save_label(load_label(p), tmp_path / "b.json").read_text()
    d["seconds_estimated"] = {"boxes": 12.0}
    p.write_text(json.dumps(d))
    with pytest.raises(LabelError) as e:
        load_label(p)
    assert str(e.value) == (f"{p}: field 'seconds_estimated.boxes' is 12 s, more than the 9 s the label's "
                            f"'seconds.boxes' says it took in all")


@pytest.mark.parametrize("fmt", ["semirest", "coco", "labelme"])
def test_formats_round_trip_estimated_seconds(tmp_path, fmt):
    img = make_image(tmp_path / "images" / "a.png")
    lab = ImageLabel(img, 64, 48, boxes=[RotatedBox(20, 20, 8, 8, 0)],
                     seconds={"boxes": 9.0}, seconds_estimated={"boxes": 5.0})
    export_labels([lab], fmt, tmp_path / "out")
    back = import_labels(tmp_path / "out", fmt)
    assert back[0].seconds == {"boxes": 9.0} and back[0].seconds_estimated == {"boxes": 5.0}


def test_protocol_labels_carry_estimated_seconds_by_their_geometry(tmp_path):
    ds = load_mvtec(make_dataset(tmp_path, n_train=2, n_good=1, n_bad=4), None)
    for protocol, kind in (("sup", "mask"), ("semi", "boxes"), ("tag", "tag")):
        split = make_protocol(ds, protocol, 3, seed=0)
        for lab in split.labels:
            assert set(lab.seconds) == {kind} and lab.seconds[kind] > 0
            assert lab.seconds_estimated == lab.seconds
            assert lab.seconds[kind] == PRIOR.estimate(lab)[kind]
        if kind == "boxes":   # more boxes, more seconds
            n = [len(lab.boxes) for lab in split.labels]
            s = [lab.seconds["boxes"] for lab in split.labels]
            assert s == [PRIOR.seconds(LabelGeometry("boxes", boxes=k)) for k in n]
