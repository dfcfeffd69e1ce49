"""DefectMaker (REB): the validation split's independent defect generator."""
from __future__ import annotations

import collections
import time

import cv2
import numpy as np
import pytest

from core.synthetic.defect_shapes import _squeeze_aspect
from core.synthetic.defectmaker import (DefectMaker, bezier_clump, bezier_rectangle, bezier_scar, blend,
                                        blur_kernel, noise_fill)
from core.synthetic.memseg import perlin_noise

# The stated ranges, written out (not imported) so that a changed constant fails here.
RECT_AREA = (0.02, 0.15)          # REB
RECT_MAX_ASPECT = 3.3             # REB
SCAR_WIDTH_PX = (1.0, 12.0)       # at 256 px
CLUMP_AREA = (0.001, 0.04)
NOISE_MEAN = (50.0, 200.0)        # REB
NOISE_HALF_WIDTH = (0.0, 50.0)    # REB
BLEND_MIN = 0.5                   # beta = 1 or U(0.5, 1)


def _image(h=128, w=128, seed=0):
    """A paper-like normal image: a mid-tone base with smooth mottling and fine grain."""
    rng = np.random.default_rng(seed)
    base = 140 + 20 * perlin_noise((h, w), (4, 4), rng)[..., None] + rng.normal(0, 6, (h, w, 1))
    return np.clip(base * np.array([1.0, 0.95, 0.8]), 0, 255).astype(np.uint8)


def _components(mask):
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return stats[1:, cv2.CC_STAT_AREA]


def _box_aspect(mask):
    """Aspect of the minimum-area rectangle around the mask's pixels (pixel extents: +1)."""
    pts = np.argwhere(mask)[:, ::-1].astype(np.float32)
    _, (w, h), _ = cv2.minAreaRect(pts)
    return (max(w, h) + 1) / (min(w, h) + 1)


def _thickness(mask):
    """Stroke width: twice the largest distance to the background."""
    dt = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)
    return 2.0 * float(dt.max())


def _calls(dm, img, seeds, fg=None):
    for s in seeds:
        out, mask = dm(img, np.random.default_rng(s), fg)
        yield out, mask, dict(dm.last_info)


# ---------------------------------------------------------------------------------------------
# The contract of a call
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(64, 64), (128, 128), (96, 160)])
def test_mask_never_empty_and_image_unchanged_outside(size):
    img = _image(*size)
    dm = DefectMaker()
    for out, mask, _ in _calls(dm, img, range(150)):
        assert out.dtype == np.uint8 and out.shape == img.shape
        assert mask.dtype == bool and mask.shape == size
        assert mask.any()
        assert np.array_equal(out[~mask], img[~mask])
        assert len(_components(mask)) == 1  # every shape is one region (no fg, no floor)


def test_defect_changes_the_masked_pixels():
    # On a textured image both fills must change most of the region they claim (catches a blend
    # that writes nothing, or a mask that is larger than the defect).
    img = _image(128, 128, seed=3)
    dm = DefectMaker()
    changed = [float((out[mask] != img[mask]).any(axis=-1).mean())
               for out, mask, _ in _calls(dm, img, range(100))]
    assert np.median(changed) > 0.8
    assert min(changed) > 0.2


def test_input_is_not_modified():
    img = _image()
    before = img.copy()
    DefectMaker()(img, np.random.default_rng(0))
    assert np.array_equal(img, before)


def test_deterministic_for_a_seed_and_varied_across_seeds():
    img = _image()
    dm = DefectMaker()
    a_out, a_mask = dm(img, np.random.default_rng(42))
    info = dict(dm.last_info)
    b_out, b_mask = dm(img, np.random.default_rng(42))
    assert np.array_equal(a_out, b_out) and np.array_equal(a_mask, b_mask)
    assert dm.last_info == info
    masks = {m.tobytes() for _, m, _ in _calls(dm, img, range(60))}
    assert len(masks) == 60
    for fn in (bezier_rectangle, bezier_scar, bezier_clump):
        assert np.array_equal(fn((128, 128), np.random.default_rng(5)),
                              fn((128, 128), np.random.default_rng(5)))
        shapes = {fn((128, 128), np.random.default_rng(s)).tobytes() for s in range(40)}
        areas = {int(fn((128, 128), np.random.default_rng(s)).sum()) for s in range(40)}
        assert len(shapes) == 40 and len(areas) > 25


def test_shapes_and_fills_are_drawn_uniformly():
    img = _image(64, 64)
    dm = DefectMaker()
    kinds = collections.Counter((i["shape"], i["fill"]) for _, _, i in _calls(dm, img, range(900)))
    assert set(kinds) == {(s, f) for s in ("rectangle", "scar", "clump")
                          for f in ("cut-paste", "noise")}
    assert all(100 <= n <= 200 for n in kinds.values()), kinds  # 150 expected each


# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(128, 128), (256, 256), (120, 200)])
def test_rectangle_area_and_aspect(size):
    areas, aspects = [], []
    for s in range(200):
        m = bezier_rectangle(size, np.random.default_rng(s))
        assert len(_components(m)) == 1
        areas.append(m.mean())
        aspects.append(_box_aspect(m))
    assert RECT_AREA[0] <= min(areas) and max(areas) <= RECT_AREA[1]
    assert min(areas) < 0.03 and max(areas) > 0.13          # the whole range is used
    assert max(aspects) <= RECT_MAX_ASPECT + 0.1             # + pixel rounding
    assert max(aspects) > 2.7 and min(aspects) < 1.3


def test_squeeze_caps_the_bounding_rectangle_aspect():
    # A 6:1 rectangle rotated by 30 degrees: the squeeze must bring it to <= 3.3 along its axis.
    t = np.radians(30)
    rot = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    pts = np.array([[-3.0, -0.5], [3.0, -0.5], [3.0, 0.5], [-3.0, 0.5]]) @ rot * 20
    out = _squeeze_aspect(pts, RECT_MAX_ASPECT)
    _, (w, h), _ = cv2.minAreaRect(out.astype(np.float32))
    assert max(w, h) / min(w, h) <= RECT_MAX_ASPECT
    assert max(w, h) / min(w, h) > 3.0                       # squeezed, not collapsed


@pytest.mark.parametrize("side", [128, 256, 512])
def test_scar_is_a_thin_to_medium_elongated_stroke(side):
    scale = side / 256
    widths, thin = [], 0
    for s in range(150):
        m = bezier_scar((side, side), np.random.default_rng(s))
        assert len(_components(m)) == 1
        w = _thickness(m)
        widths.append(w)
        thin += w <= 2.0
        pts = np.argwhere(m)[:, ::-1].astype(np.float32)
        _, (bw, bh), _ = cv2.minAreaRect(pts)
        assert max(bw, bh) + 1 >= 2.5 * w                     # elongated
        assert max(bw, bh) + 1 <= 0.7 * side                  # chord <= 45 % (+ bend)
    assert max(widths) <= SCAR_WIDTH_PX[1] * scale + 2.5
    assert max(widths) >= 0.6 * SCAR_WIDTH_PX[1] * scale      # medium ones too
    if side == 256:
        assert thin >= 15   # 1-px scratches are common at 256 px (2 * max distance of a 1-px line)
        assert np.mean(np.array(widths) <= 5) > 0.4           # 1-4 px widths dominate


@pytest.mark.parametrize("side", [128, 256, 1024])
def test_clump_area_spans_specks_to_medium_blobs(side):
    fracs = []
    for s in range(200 if side < 1024 else 40):
        m = bezier_clump((side, side), np.random.default_rng(s))
        assert len(_components(m)) == 1
        fracs.append(m.mean())
        hull = cv2.convexHull(np.argwhere(m).astype(np.int32))
        assert m.sum() >= 0.6 * cv2.contourArea(hull)        # a blob, not a spidery shape
    assert CLUMP_AREA[0] <= min(fracs) and max(fracs) <= CLUMP_AREA[1]
    if side == 256:
        assert min(fracs) * 256 * 256 < 3 * 64                # a few 8x8 blocks at 256 px
        assert max(fracs) > 0.025


def test_sizes_scale_with_the_image():
    # Same draws at 128 and 512 px: same area fraction, 4x the scar width.
    for fn in (bezier_rectangle, bezier_clump):
        for s in range(10):
            a = fn((128, 128), np.random.default_rng(s)).mean()
            b = fn((512, 512), np.random.default_rng(s)).mean()
            assert abs(a - b) <= 0.15 * b
    ratios = [_thickness(bezier_scar((512, 512), np.random.default_rng(s))) /
              _thickness(bezier_scar((128, 128), np.random.default_rng(s))) for s in range(30)]
    assert 2.5 < np.median(ratios) < 5.0


# ---------------------------------------------------------------------------------------------
# Fills
# ---------------------------------------------------------------------------------------------
def test_noise_fill_mean_and_range():
    means = []
    for s in range(200):
        fill, mean = noise_fill((48, 40), np.random.default_rng(s), scale=1.0)
        assert fill.shape == (48, 40, 3)
        assert NOISE_MEAN[0] <= mean <= NOISE_MEAN[1]
        assert fill.min() >= mean - NOISE_HALF_WIDTH[1] and fill.max() <= mean + NOISE_HALF_WIDTH[1]
        assert abs(float(fill.mean()) - mean) < 6.0
        assert np.ptp(fill.reshape(-1, 3).mean(axis=0)) < 12.0  # gray: channels share the mean
        means.append(mean)
    assert min(means) < 60 and max(means) > 190
    # The grain varies (1-4 px, stretched): neighbour correlation along x from ~0 to high.
    corr = []
    for s in range(60):
        f = noise_fill((64, 64), np.random.default_rng(s))[0][..., 0]
        if f.std() > 3:
            corr.append(np.corrcoef(f[:, :-1].ravel(), f[:, 1:].ravel())[0, 1])
    assert min(corr) < 0.2 and max(corr) > 0.7


def test_noise_defect_has_the_stated_mean():
    img = _image(128, 128)
    dm = DefectMaker()
    checked = 0
    for out, mask, info in _calls(dm, img, range(300)):
        if info["fill"] == "noise" and info["beta"] == 1.0 and info["blur_ksize"] == 0:
            assert NOISE_MEAN[0] <= info["noise_mean"] <= NOISE_MEAN[1]
            if mask.sum() >= 200:
                assert abs(float(out[mask].mean()) - info["noise_mean"]) < 5.0
                checked += 1
    assert checked >= 5


def test_cut_paste_takes_displaced_content_from_the_same_image():
    img = _image(128, 128, seed=9)
    dm = DefectMaker()
    seen = checked = 0
    for out, mask, info in _calls(dm, img, range(200)):
        if info["fill"] != "cut-paste":
            continue
        seen += 1
        y0, x0, h, w = info["box"]
        dy, dx = info["source_offset"]
        assert abs(dy) * 2 >= h or abs(dx) * 2 >= w           # really from elsewhere
        assert 0 <= y0 + dy and y0 + dy + h <= 128 and 0 <= x0 + dx and x0 + dx + w <= 128
        if info["beta"] == 1.0 and info["blur_ksize"] == 0 and mask.sum() > 50:
            # the pasted pixels are the source's pixels, colour-jittered by at most ~10 %
            src = img[y0 + dy:y0 + dy + h, x0 + dx:x0 + dx + w][mask[y0:y0 + h, x0:x0 + w]]
            diff = np.abs(out[mask].astype(float).mean(0) - src.astype(float).mean(0))
            assert diff.max() < 40
            luma = np.array([0.299, 0.587, 0.114])
            assert np.corrcoef(out[mask] @ luma, src @ luma)[0, 1] > 0.8
            checked += 1
    assert seen > 60 and checked >= 5


# ---------------------------------------------------------------------------------------------
# Blending and blur
# ---------------------------------------------------------------------------------------------
def test_blend_factor_and_blur_stay_inside_the_mask():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    fill = rng.uniform(0, 255, (40, 50, 3)).astype(np.float32)
    mask = np.zeros((40, 50), bool)
    mask[10:25, 5:30] = True
    mask[0:4, 46:50] = True  # touches the border: blur there must also stay inside
    full = blend(img, fill, mask, 1.0)
    assert np.array_equal(full[mask], np.clip(np.floor(fill[mask] + 0.5), 0, 255).astype(np.uint8))
    half = blend(img, fill, mask, 0.5)
    expect = np.floor(0.5 * img[mask] + 0.5 * fill[mask] + 0.5)
    assert np.abs(half[mask].astype(float) - expect).max() <= 1
    assert np.array_equal(blend(img, fill, mask, 0.0), img)
    for out in (full, half):
        assert np.array_equal(out[~mask], img[~mask])
    for k in (3, 5):
        blurred = blend(img, fill, mask, 1.0, ksize=k)
        assert np.array_equal(blurred[~mask], img[~mask])
        assert not np.array_equal(blurred[mask], full[mask])
        # inside: the Gaussian blur of the full-image composite, restricted to the mask
        comp = img.astype(np.float32)
        comp[mask] = fill[mask]
        ref = np.clip(cv2.GaussianBlur(comp, (k, k), 0) + 0.5, 0, 255).astype(np.uint8)
        assert np.abs(blurred[mask].astype(int) - ref[mask].astype(int)).max() <= 1
    with pytest.raises(ValueError, match="beta"):
        blend(img, fill, mask, 1.5)
    with pytest.raises(ValueError, match="ksize"):
        blend(img, fill, mask, 1.0, ksize=4)


def test_blend_factor_and_blur_choices():
    img = _image(64, 64)
    dm = DefectMaker()
    infos = [i for _, _, i in _calls(dm, img, range(600))]
    betas = np.array([i["beta"] for i in infos])
    opaque = betas == 1.0
    assert 0.42 < opaque.mean() < 0.58
    assert betas[~opaque].min() >= BLEND_MIN and betas[~opaque].max() < 1.0
    assert betas[~opaque].min() < 0.55 and betas[~opaque].max() > 0.95
    blurred = np.array([i["blur_ksize"] > 0 for i in infos])
    assert 0.42 < blurred.mean() < 0.58
    for i in infos:
        assert i["blur_ksize"] in (0, blur_kernel(i["shape"], (64, 64)))


def test_blur_kernel_follows_reb_and_scales():
    assert blur_kernel("rectangle", (256, 256)) == 5
    assert blur_kernel("scar", (256, 256)) == 3 and blur_kernel("clump", (256, 256)) == 3
    assert blur_kernel("rectangle", (128, 128)) == 3                 # never below 3
    assert blur_kernel("rectangle", (1024, 1024)) == 17
    assert blur_kernel("scar", (1024, 1024)) == 9


def test_translucent_defect_is_a_mix():
    # beta < 1 without blur: every changed pixel lies between the image and an opaque paste.
    img = _image(128, 128)
    dm = DefectMaker()
    n = 0
    for s in range(200):
        out, mask = dm(img, np.random.default_rng(s))
        i = dm.last_info
        if i["fill"] == "noise" and i["beta"] < 0.75 and i["blur_ksize"] == 0:
            # with beta <= 0.75 the defect keeps >= 25 % of the image: correlated with it
            a = img[mask].astype(float).ravel()
            b = out[mask].astype(float).ravel()
            if a.std() > 3 and mask.sum() > 100:
                assert np.corrcoef(a, b)[0, 1] > 0.1
                n += 1
    assert n >= 3


# ---------------------------------------------------------------------------------------------
# Foreground and the size floor
# ---------------------------------------------------------------------------------------------
def test_foreground_is_respected():
    img = _image(128, 128)
    fg = np.zeros((128, 128), bool)
    cv2.circle(fg.view(np.uint8), (80, 70), 40, 1, -1)
    dm = DefectMaker()
    inside = 0
    for out, mask, info in _calls(dm, img, range(150), fg):
        assert mask.any() and not (mask & ~fg).any()
        assert np.array_equal(out[~mask], img[~mask])
        if info["fill"] == "cut-paste":  # source also on the object, for a fg this large
            y0, x0, h, w = info["box"]
            dy, dx = info["source_offset"]
            src = np.zeros_like(mask)
            src[y0 + dy:y0 + dy + h, x0 + dx:x0 + dx + w] = mask[y0:y0 + h, x0:x0 + w]
            inside += not (src & ~fg).any()
    assert inside > 40
    # A foreground given as 0/255 uint8 works the same
    out, mask = dm(img, np.random.default_rng(1), fg.astype(np.uint8) * 255)
    assert not (mask & ~fg).any()


def test_size_floor_on_a_fragmented_foreground():
    img = _image(128, 128)
    fg = np.zeros((128, 128), bool)
    fg[::16, :] = fg[:, ::16] = False
    for y in range(0, 128, 32):  # 12 x 12 squares (144 px) on a 32 px lattice
        for x in range(0, 128, 32):
            fg[y + 4:y + 16, x + 4:x + 16] = True
    dm = DefectMaker(min_component_px=60)
    for out, mask, _ in _calls(dm, img, range(40), fg):
        assert mask.any() and not (mask & ~fg).any()
        assert _components(mask).min() >= 60
        assert np.array_equal(out[~mask], img[~mask])


def test_size_floor_without_foreground():
    img = _image(256, 256)
    dm = DefectMaker(min_component_px=63)  # synthesis' floor at 256 px
    for _, mask, _ in _calls(dm, img, range(100)):
        assert _components(mask).min() >= 63


def test_tiny_foreground_falls_back_to_a_valid_blob():
    img = _image(64, 64)
    fg = np.zeros((64, 64), np.uint8)
    cv2.line(fg, (4, 4), (60, 60), 1, 2)  # a thin diagonal object of ~160 px
    fg = fg.astype(bool)
    floor = int(0.9 * fg.sum())  # no shape covers 90 % of it: the fallback disc must
    dm = DefectMaker(min_component_px=floor)
    for s in range(3):
        out, mask = dm(img, np.random.default_rng(s), fg)
        assert dm.last_info["fallback"] is True
        assert mask.sum() >= floor and not (mask & ~fg).any()
        assert np.array_equal(out[~mask], img[~mask])
    dm(img, np.random.default_rng(0))
    assert dm.last_info["fallback"] is False


def test_errors_are_clear():
    img = _image(64, 64)
    dm = DefectMaker()
    with pytest.raises(ValueError, match="empty"):
        dm(img, np.random.default_rng(0), np.zeros((64, 64), bool))
    fg = np.zeros((64, 64), bool)
    fg[5:10, 5:10] = True  # 25 px
    with pytest.raises(ValueError, match="no connected region of at least 30 px"):
        DefectMaker(min_component_px=30)(img, np.random.default_rng(0), fg)
    with pytest.raises(ValueError, match="shape"):
        dm(img, np.random.default_rng(0), np.ones((32, 64), bool))
    with pytest.raises(ValueError, match="uint8 RGB"):
        dm(img.astype(np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8 RGB"):
        dm(img[..., 0], np.random.default_rng(0))
    with pytest.raises(ValueError, match="at least 16x16"):
        dm(img[:8], np.random.default_rng(0))
    with pytest.raises(ValueError, match="exceeds"):
        DefectMaker(min_component_px=64 * 64 + 1)(img, np.random.default_rng(0))
    with pytest.raises(ValueError, match=">= 0"):
        DefectMaker(min_component_px=-1)
    with pytest.raises(ValueError, match="int"):
        DefectMaker(min_component_px=2.5)
    with pytest.raises(ValueError, match="16x16"):
        bezier_scar((10, 10), np.random.default_rng(0))


def test_fast_at_256():
    img = _image(256, 256)
    dm = DefectMaker()
    rng = np.random.default_rng(11)
    dm(img, rng)
    t0 = time.process_time()  # CPU time: robust to other jobs on the machine
    for _ in range(100):
        dm(img, rng)
    assert (time.process_time() - t0) / 100 < 0.01
