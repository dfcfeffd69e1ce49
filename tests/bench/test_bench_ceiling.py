"""bench/ceiling.py: the pixel AP a perfect block classifier reaches through the inference path's
post-processing."""
from __future__ import annotations

import numpy as np

from bench.ceiling import class_ceiling, main, oracle_maps
from core.config import preset
from core.eval.metrics import pooled_pixel_ap


def _cfg(sigma: float):
    # 128 px images at a 128 px input: one block is 8 x 8 image pixels
    return preset("cpu").updated({"features": {"image_size": 128}, "output": {"gaussian_sigma": sigma,
                                                                              "eval_size": 128}})


def test_defects_that_fill_whole_blocks_reach_100_and_a_speck_does_not():
    cfg = _cfg(0.0)
    whole = np.zeros((128, 128), bool)
    whole[16:32, 40:48] = True                      # two whole blocks
    clean = np.zeros((128, 128), bool)
    maps = oracle_maps([whole, clean], cfg)
    for name in ("fractions", "Eq. 14 blocks"):
        assert pooled_pixel_ap(maps[name], [whole, clean]) == 1.0
    speck = np.zeros((128, 128), bool)
    speck[20:22, 20:22] = True                      # 4 of the 64 pixels of one block
    maps = oracle_maps([speck, clean], cfg)
    # the block is the highest score, but its 60 clean pixels share it: precision 4 / 64
    assert abs(pooled_pixel_ap(maps["fractions"], [speck, clean]) - 4 / 64) < 1e-6
    # under eps+ of the block: Eq. 14 labels it not anomalous, so the oracle finds nothing above the rest
    assert pooled_pixel_ap(maps["Eq. 14 blocks"], [speck, clean]) < 0.01


def test_smoothing_costs_the_block_oracle_on_small_defects():
    m = np.zeros((128, 128), bool)
    m[64:72, 64:72] = True                          # one whole block
    sharp = pooled_pixel_ap(oracle_maps([m], _cfg(0.0))["fractions"], [m])
    smooth = pooled_pixel_ap(oracle_maps([m], _cfg(4.0))["fractions"], [m])
    assert sharp == 1.0 and smooth < sharp


def test_real_class_ceiling_is_high_but_below_100(piped, capsys):
    cfg = preset("cpu")
    r = class_ceiling(piped, "PA_BDP01_TL", cfg)
    assert 80 < r["Eq. 14 blocks"] <= r["fractions"] < 100
    assert main(["--data", str(piped), "--classes", "PA_BDP01_TL"]) == 0
    out = capsys.readouterr().out
    assert f"| PA_BDP01_TL | {r['fractions']:.1f} | {r['Eq. 14 blocks']:.1f} |" in out
