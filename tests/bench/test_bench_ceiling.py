"""bench/ceiling.py: the pixel AP a perfect block classifier reaches through the inference path's
post-processing."""
from __future__ import annotations

import numpy as np

from bench.ceiling import class_ceiling, error_sites, main, oracle_maps
from core.config import preset
from core.eval.metrics import pooled_pixel_ap
from tests.conftest import kept_unsup_model


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


def test_error_sites_tell_a_halo_from_a_false_alarm():
    defective = np.zeros((10, 10), bool)
    defective[4:6, 4:6] = True                      # 4 defective pixels
    m = np.zeros((10, 10), np.float32)
    m[4, 4] = m[4, 5] = m[5, 4] = 1.0               # 3 of them found
    m[4, 6] = 1.0                                   # a halo pixel, 1 px from the defect
    m[0, 0] = 1.0                                   # a false alarm far from it
    normal = np.zeros((10, 10), np.float32)
    normal[9, 9] = 2.0                              # the highest pixel of all, on a normal image
    e = error_sites([m, normal], [defective, np.zeros((10, 10), bool)], (1.0, 8.0))
    # break-even: the 4 highest pixels set the threshold (1.0), ties flagged too
    assert e["on_normal"] == 1 and e["on_defective"] == 2
    assert e["within"][1.0] == 0.5 and e["within"][8.0] == 1.0


def test_models_report_their_own_pixel_ap_and_error_sites(demo_data, tmp_path, capsys):
    """End to end on a tiny kept model: the model's pixel AP in the table is what `semirest eval`
    measures, and every flagged clean pixel is counted once, on a normal or a defective image."""
    from core import api
    from bench.ceiling import model_errors, sharpened_aps
    work = tmp_path / "runs"
    model = kept_unsup_model(demo_data, work)
    ap, e, side = model_errors(model, demo_data.parent, demo_data.name)
    want = 100 * api.evaluate(model, demo_data.parent, demo_data.name, device="cpu").metrics["pixel_ap"]
    assert abs(ap - want) < 1e-6
    assert side > 0 and e["on_normal"] >= 0 and e["on_defective"] >= 0
    # the model's own sharpness gives the evaluation's AP; another one scores a different map
    from core.deploy.modelfile import ModelBundle
    g = ModelBundle.load(model).config.output.sharpness
    aps = sharpened_aps(model, demo_data.parent, demo_data.name, [g, g + 1.0])
    assert abs(aps[g] - want) < 1e-6 and 0 <= aps[g + 1.0] <= 100
    assert main(["--data", str(demo_data.parent), "--classes", demo_data.name, "--models", str(work)]) == 0
    out = capsys.readouterr().out
    assert f"| {demo_data.name} | {ap:.1f} | {e['on_normal']} | {e['on_defective']} |" in out


def test_contrast_table_scores_what_eval_scores_with_that_beta(demo_data, tmp_path, capsys):
    """`--contrast B ...`: at each beta, the model's pixel AP is what `semirest eval --contrast B`
    measures (decision 0028), and the table prints one row per kept model."""
    from core import api
    from bench.ceiling import contrast_aps, run_model
    work = tmp_path / "runs"
    model = kept_unsup_model(demo_data, work)
    aps = contrast_aps(run_model(model, demo_data.parent, demo_data.name, "cpu"), [0.0, 0.3])
    for beta in (0.0, 0.3):
        want = api.evaluate(model, demo_data.parent, demo_data.name, device="cpu", contrast=beta).metrics["pixel_ap"]
        assert abs(aps[beta] - 100 * want) < 1e-6
    assert main(["--data", str(demo_data.parent), "--classes", demo_data.name, "--models", str(work),
                 "--contrast", "0", "0.3"]) == 0
    out = capsys.readouterr().out
    assert f"| {demo_data.name} | SemiREST | {aps[0.0]:.1f} | {aps[0.3]:.1f} |" in out
