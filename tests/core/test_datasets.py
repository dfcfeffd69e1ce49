"""MVTec-layout loading and the train / validation split (method.md component 19)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.data.datasets import load_mvtec, load_sample_mask, prepare_image, read_images, split_train_val
from core.data.images import write_mask, write_png
from core.errors import DatasetError, ImageReadError


def _img(path: Path, h=16, w=16, value=100):
    write_png(path, np.full((h, w, 3), value, np.uint8))


@pytest.fixture
def tree(tmp_path):
    """<tmp>/mvtec/widget: 3 train normals, test/good (1), test/crack (2 with masks)."""
    root = tmp_path / "mvtec" / "widget"
    for i in range(3):
        _img(root / "train" / "good" / f"{i:03d}.png")
    _img(root / "test" / "good" / "000.png")
    for i in range(2):
        _img(root / "test" / "crack" / f"{i:03d}.png")
        m = np.zeros((16, 16), bool)
        m[2:4, 3:5] = True
        write_mask(root / "ground_truth" / "crack" / f"{i:03d}_mask.png", m)
    (root / "train" / "good" / "readme.txt").write_text("not an image", encoding="utf-8")
    return root


def test_load_mvtec(tree):
    cat = load_mvtec(tree.parent, "widget")
    assert cat.name == "widget" and cat.root == tree
    assert [p.name for p in cat.train] == ["000.png", "001.png", "002.png"]     # sorted, images only
    assert [s.name for s in cat.test] == ["crack/000.png", "crack/001.png", "good/000.png"]
    assert cat.defect_kinds == ["crack"]
    crack = cat.test[0]
    assert crack.is_anomalous and crack.mask_path == tree / "ground_truth" / "crack" / "000_mask.png"
    good = cat.test[2]
    assert not good.is_anomalous and good.mask_path is None
    assert load_sample_mask(crack, (16, 16)).sum() == 4
    assert not load_sample_mask(good, (16, 16)).any()
    # The category folder itself works too.
    assert len(load_mvtec(tree).train) == 3


def test_missing_category(tree):
    with pytest.raises(DatasetError, match="category folder not found") as ei:
        load_mvtec(tree.parent, "gadget")
    assert ei.value.path == tree.parent / "gadget" and "gadget" in str(ei.value)


def test_missing_train_good(tmp_path):
    root = tmp_path / "cat"
    (root / "train").mkdir(parents=True)
    with pytest.raises(DatasetError, match="missing") as ei:
        load_mvtec(root)
    assert ei.value.path == root / "train" / "good"
    assert str(Path("train") / "good") in str(ei.value)


def test_empty_train_good(tmp_path):
    root = tmp_path / "cat"
    (root / "train" / "good").mkdir(parents=True)
    (root / "train" / "good" / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(DatasetError, match="holds no images") as ei:
        load_mvtec(root)
    assert str(root / "train" / "good") in str(ei.value)


def test_defect_image_without_mask(tree):
    _img(tree / "test" / "crack" / "002.png")
    with pytest.raises(DatasetError, match="missing: the ground-truth mask") as ei:
        load_mvtec(tree)
    msg = str(ei.value)
    assert "002_mask.png" in msg and str(tree / "test" / "crack" / "002.png") in msg


def test_no_test_images(tmp_path):
    root = tmp_path / "cat"
    _img(root / "train" / "good" / "0.png")
    with pytest.raises(DatasetError, match="holds no test images"):
        load_mvtec(root)
    assert load_mvtec(root, need_test=False).test == []


def test_mask_of_wrong_size(tree):
    write_mask(tree / "ground_truth" / "crack" / "001_mask.png", np.zeros((8, 16), bool))
    sample = load_mvtec(tree).test[1]
    with pytest.raises(ImageReadError, match="mask is 16x8 px but its image is 16x16 px") as ei:
        load_sample_mask(sample, (16, 16))
    assert "001_mask.png" in str(ei.value)


def test_read_images_lists_every_bad_file(tmp_path):
    good = tmp_path / "ok.png"
    _img(good)
    bad1, bad2 = tmp_path / "a.png", tmp_path / "b.png"
    bad1.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty") as ei:
        read_images([good, bad1])
    assert ei.value.path == bad1
    with pytest.raises(ImageReadError, match="2 images cannot be read") as ei:
        read_images([bad1, good, bad2])
    assert "a.png" in str(ei.value) and "b.png" in str(ei.value)
    assert len(read_images([good, good])) == 2


def test_prepare_image_sizes():
    # 100 x 50 at 64: scale 0.64 -> 64 x 32, height rounded up to 64.
    assert prepare_image(np.zeros((50, 100, 3), np.uint8), 64).shape == (64, 64, 3)
    # 300 x 1000 (w x h) at 512: 153.6 -> 192 wide, 512 tall.
    assert prepare_image(np.zeros((1000, 300, 3), np.uint8), 512).shape == (512, 192, 3)
    img = np.full((128, 64, 3), 7, np.uint8)
    assert prepare_image(img, 128) is img                  # already the input size


# ---------------------------------------------------------------------------------------------
# split_train_val
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,fraction,min_val,n_val", [
    (20, 0.15, 2, 3),     # round(3.0) = 3
    (10, 0.15, 2, 2),     # round(1.5) = 2 (and the minimum is 2)
    (40, 0.15, 2, 6),     # round(6.0) = 6
    (5, 0.15, 2, 2),      # the minimum: round(0.75) = 1 < 2
    (3, 0.15, 2, 1),      # at most n - 2 = 1, so the bank keeps 2 images
    (2, 0.15, 2, 0),      # too few to hold any out
    (1, 0.5, 2, 0),
    (10, 0.0, 0, 0),
])
def test_split_sizes(n, fraction, min_val, n_val):
    paths = [Path(f"{i:03d}.png") for i in range(n)]
    train, val = split_train_val(paths, fraction, min_val, seed=0)
    assert len(val) == n_val and len(train) == n - n_val
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(paths)
    assert train == sorted(train) and val == sorted(val)          # original order kept


def test_split_deterministic_per_seed():
    paths = [Path(f"{i:03d}.png") for i in range(30)]
    a = split_train_val(paths, 0.2, 2, seed=5)
    assert a == split_train_val(paths, 0.2, 2, seed=5)
    assert len(a[1]) == 6
    others = [split_train_val(paths, 0.2, 2, seed=s)[1] for s in (6, 7, 8)]
    assert any(o != a[1] for o in others)
