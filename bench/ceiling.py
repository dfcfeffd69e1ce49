"""How far a block map can go: the test pixel AP of a perfect block classifier.

    python -m bench.ceiling [--data ../shared/data/piped] [--preset cpu] [--classes C ...]
    python -m bench.ceiling --models DIR [--classes C ...]   # + where each model's errors lie
    python -m bench.ceiling --models DIR --sharpen 0 0.5 1 2  # + maps sharpened at local maxima

SemiREST scores 8 x 8-pixel blocks of the model input, and the map is those blocks upsampled and
smoothed (component 18). Small specks then share a block with clean pixels, so even a model that
knows every block's truth cannot reach a pixel AP of 100. This script measures that bound on the
test images, with the inference path's own post-processing (core/deploy/inference.py:
``output_map`` at the evaluation size, then bilinear to the mask's size) and the same pooled
pixel AP, for two oracles:

- *fractions*: each block scored with the share of its input pixels that are defective (a
  perfect regressor of defect area per block);
- *Eq. 14 blocks*: 1 where that share is above ``train.eps_pos_real`` (what block labels made from
  real masks mark anomalous), else 0: the best a model trained on such labels can say.

No model is trained: it reads only the test masks, so it costs seconds. It tells whether a method's
distance to 100 is the block grid's or the model's.

With ``--models DIR`` (the bench's kept models, ``DIR/<class>-unsup-0.pt``) it also says where each
model's errors lie, at the break-even threshold (as many pixels flagged as there are defective
pixels): how many flagged clean pixels are on normal test images and how many on defective ones,
and how many of the latter lie within 1 and 2 blocks of a defect (a halo around what was found)
rather than elsewhere. Analysis only: nothing is chosen from it.

With ``--contrast B ...`` it scores the same models with their maps refined by the test image's
pixel contrast (``output.contrast`` = B, core/eval/anomaly_map.refine_by_contrast; decision 0028):
analysis on test images, as for the sharpening below.

With ``--sharpen G ...`` it scores the kept SemiREST and PatchCore models (``<class>-unsup-0.pt``,
``<class>-patchcore.pt``) with each block map sharpened at its local maxima before the usual
post-processing: ``b * (b / max3x3(b)) ** G``, i.e. ``output.sharpness`` = G
(core/eval/anomaly_map.sharpen; G = 0: the paper's map; models since decision 0026 use 1). A block
below its strongest neighbour, the halo around a found defect, is lowered; a local maximum, and the
blocks along a fibre that score alike, keep their score. Analysis on test images, which is how
decision 0026 was found; nothing is chosen from it at run time.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "piped"


def maps_at_mask_size(blocks: list[np.ndarray], masks: list[np.ndarray], output,
                      sharpness: float | None = None, images: list[np.ndarray] | None = None,
                      contrast: float | None = None) -> list[np.ndarray]:
    """Block maps -> maps at their masks' sizes, as inference makes them (core/deploy/inference.py:
    ``output_map`` at the evaluation size, refined by pixel contrast when ``output.contrast`` is on,
    then bilinear to the mask's size). ``sharpness``, ``contrast``: instead of the model's;
    ``images``: the test images (uint8 RGB), needed when the contrast refinement is on."""
    from core.eval.anomaly_map import image_map
    out = output if sharpness is None else replace(output, sharpness=sharpness)
    out = out if contrast is None else replace(out, contrast=contrast)
    images = images if images is not None else [None] * len(blocks)
    return [image_map(block, k.shape, out, k.shape, img)[0]
            for block, k, img in zip(blocks, masks, images, strict=True)]


def oracle_maps(masks: list[np.ndarray], cfg) -> dict[str, list[np.ndarray]]:
    """Each oracle's maps at the masks' own sizes, post-processed as inference does."""
    from core.data.geometry import BlockGrid
    from core.data.labels import mask_coverage
    # the share of each block's input pixels that are defective, as block labels see it
    fracs = [mask_coverage(m, BlockGrid.for_image(m.shape[1], m.shape[0], cfg.features.image_size,
                                                  multiple=cfg.features.size_multiple)) for m in masks]
    eq14 = [(f > cfg.train.eps_pos_real).astype(np.float32) for f in fracs]
    return {"fractions": maps_at_mask_size(fracs, masks, cfg.output),
            "Eq. 14 blocks": maps_at_mask_size(eq14, masks, cfg.output)}


def class_ceiling(root: Path, category: str, cfg) -> dict[str, float]:
    from core.data.datasets import load_mvtec, load_sample_mask
    from core.data.images import image_size
    from core.eval.metrics import pooled_pixel_ap
    ds = load_mvtec(root, category)
    masks = []
    for s in ds.test:
        w, h = image_size(s.path)
        masks.append(load_sample_mask(s, (h, w)))
    return {k: 100 * pooled_pixel_ap(v, masks) for k, v in oracle_maps(masks, cfg).items()}


def error_sites(maps: list[np.ndarray], masks: list[np.ndarray], radii: tuple[float, ...]) -> dict:
    """At the break-even threshold (as many pixels flagged as are defective): the flagged clean
    pixels on normal images, on defective images, and the share of the latter within each radius
    (pixels, Euclidean) of a defect pixel."""
    flat = np.concatenate([m.ravel() for m in maps])
    n_bad = int(sum(int(k.sum()) for k in masks))
    if n_bad == 0:
        raise ValueError("no defective pixel in the masks: no break-even threshold")
    thr = np.partition(flat, len(flat) - n_bad)[len(flat) - n_bad]
    on_normal, near = 0, []
    for m, k in zip(maps, masks):
        fp = (m >= thr) & ~k
        if not k.any():
            on_normal += int(fp.sum())
            continue
        # distance of every pixel to the nearest defect pixel (the zeros of the input)
        dist = cv2.distanceTransform((~k).astype(np.uint8), cv2.DIST_L2, 5)
        near.append(dist[fp])
    d = np.concatenate(near) if near else np.zeros(0)
    return {"on_normal": on_normal, "on_defective": int(len(d)),
            "within": {r: float((d <= r).mean()) if len(d) else float("nan") for r in radii}}


@dataclass
class ModelRun:
    """One model's block maps of a class's test split with the masks, computed once and then
    post-processed as many ways as the analysis needs."""
    config: object                  # the model's Config
    blocks: list[np.ndarray]
    masks: list[np.ndarray]
    images: list[np.ndarray] | None = None   # the test images (uint8 RGB), for the contrast refinement


def run_model(model: Path, root: Path, category: str, device: str = "auto", samples=None) -> ModelRun:
    """Block maps of every test image (batched as ``semirest eval`` batches them); ``samples``: these
    instead of the class's whole test split (a labelled protocol's remaining test images)."""
    from core.api import PREDICT_BATCH
    from core.data.datasets import load_mvtec, load_sample_mask
    from core.data.images import read_image
    from core.deploy.inference import Predictor
    from core.deploy.modelfile import ModelBundle
    from core.device import resolve_device
    bundle = ModelBundle.load(model)
    pred = Predictor(bundle, resolve_device(device))
    samples = load_mvtec(root, category).test if samples is None else list(samples)
    blocks, masks, images = [], [], []
    for start in range(0, len(samples), PREDICT_BATCH):
        part = samples[start:start + PREDICT_BATCH]
        imgs = [read_image(s.path) for s in part]
        masks += [load_sample_mask(s, img.shape[:2]) for s, img in zip(part, imgs)]
        blocks += pred.block_maps(imgs)
        images += imgs
    return ModelRun(bundle.config, blocks, masks, images)


def model_errors(model: Path | ModelRun, root: Path | None = None, category: str | None = None,
                 device: str = "auto") -> tuple[float, dict, float]:
    """(test pixel AP, :func:`error_sites` at 1 and 2 blocks, block side in mask pixels) of a model
    file (or its :class:`ModelRun`) on a class's test split, maps as ``semirest eval`` makes them.
    The block side is the first test image's (a PIPED class has one image size)."""
    from core.data.geometry import BlockGrid
    from core.eval.metrics import pooled_pixel_ap
    run = model if isinstance(model, ModelRun) else run_model(model, root, category, device)
    maps = maps_at_mask_size(run.blocks, run.masks, run.config.output, images=run.images)
    h, w = run.masks[0].shape
    f = run.config.features
    side = BlockGrid.for_image(w, h, f.image_size, multiple=f.size_multiple).block_w
    return 100 * pooled_pixel_ap(maps, run.masks), error_sites(maps, run.masks, (side, 2 * side)), side


def sharpened_aps(model: Path | ModelRun, root: Path | None = None, category: str | None = None,
                  gammas: list[float] = (0.0,), device: str = "auto") -> dict[float, float]:
    """Test pixel AP of a model file's (or :class:`ModelRun`'s) block maps sharpened with each
    gamma, post-processed as inference does."""
    from core.eval.metrics import pooled_pixel_ap
    run = model if isinstance(model, ModelRun) else run_model(model, root, category, device)
    return {g: 100 * pooled_pixel_ap(maps_at_mask_size(run.blocks, run.masks, run.config.output, g, run.images),
                                     run.masks)
            for g in gammas}


def contrast_aps(run: ModelRun, betas: list[float]) -> dict[float, float]:
    """Test pixel AP of a :class:`ModelRun`'s maps refined by pixel contrast with each beta
    (``output.contrast``; 0: the map as it is), post-processed as inference does."""
    from core.eval.metrics import pooled_pixel_ap
    return {b: 100 * pooled_pixel_ap(maps_at_mask_size(run.blocks, run.masks, run.config.output,
                                                       images=run.images, contrast=b), run.masks)
            for b in betas}


def _setting_table(classes: list[str], models: Path, run_of, name: str, values: list[float], aps, title: str) -> None:
    """Print one markdown table: per class, the kept SemiREST and PatchCore models' test pixel AP
    at each value of a post-processing setting (``aps(run) -> {value: AP}``), then the means."""
    print(f"\n{title}\n")
    print("| class | model | " + " | ".join(f"{name} = {v:g}" for v in values) + " |")
    print("|---|---|" + "---|" * len(values))
    means: dict[str, list[dict]] = {}
    for c in classes:
        for method, file in (("SemiREST", f"{c}-unsup-0.pt"), ("PatchCore", f"{c}-patchcore.pt")):
            path = models / file
            if path.is_file():
                r = aps(run_of(path, c))
                means.setdefault(method, []).append(r)
                print(f"| {c} | {method} | " + " | ".join(f"{r[v]:.1f}" for v in values) + " |", flush=True)
    for method, rs in means.items():
        print(f"| **mean ({len(rs)})** | {method} | "
              + " | ".join(f"**{np.mean([r[v] for r in rs]):.1f}**" for v in values) + " |")


def main(argv: list[str] | None = None) -> int:
    from core.config import preset
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--classes", nargs="*")
    ap.add_argument("--models", type=Path, help="also where the errors of DIR/<class>-unsup-0.pt lie")
    ap.add_argument("--device", default="auto", help="for --models: cpu, cuda:N or auto")
    ap.add_argument("--sharpen", type=float, nargs="*", help="with --models: test pixel AP of the "
                    "SemiREST and PatchCore models' maps sharpened at local maxima with these gammas")
    ap.add_argument("--contrast", type=float, nargs="*", help="with --models: test pixel AP of the "
                    "SemiREST and PatchCore models' maps refined by pixel contrast with these betas "
                    "(output.contrast; 0: off)")
    a = ap.parse_args(argv)
    cfg = preset(a.preset)
    classes = a.classes or sorted(p.name for p in a.data.iterdir() if (p / "test").is_dir())
    rows = {c: class_ceiling(a.data, c, cfg) for c in classes}
    names = list(next(iter(rows.values())))
    print(f"Pixel AP of a perfect block classifier, preset {a.preset} "
          f"({cfg.features.image_size} px input, 8 x 8-pixel blocks, Gaussian sigma "
          f"{cfg.output.gaussian_sigma:g} at {cfg.output.eval_size} px)\n")
    print("| class | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for c, r in rows.items():
        print(f"| {c} | " + " | ".join(f"{r[k]:.1f}" for k in names) + " |")
    print("| **mean** | " + " | ".join(f"**{np.mean([r[k] for r in rows.values()]):.1f}**" for k in names) + " |")
    runs: dict[Path, ModelRun] = {}

    def run_of(path: Path, c: str) -> ModelRun:     # each model scores the test split once
        if path not in runs:
            runs[path] = run_model(path, a.data, c, a.device)
        return runs[path]

    if a.models:
        print("\nWhere each model's errors lie at the break-even threshold (flagged clean pixels)\n")
        print("| class | model pixel AP | on normal images | on defective images | of those within 1 block "
              "of a defect | within 2 blocks |")
        print("|---|---|---|---|---|---|")
        for c in classes:
            path = a.models / f"{c}-unsup-0.pt"
            if not path.is_file():
                print(f"| {c} | no model at {path} | | | | |")
                continue
            ap_, e, side = model_errors(run_of(path, c))
            r1, r2 = e["within"][side], e["within"][2 * side]
            print(f"| {c} | {ap_:.1f} | {e['on_normal']} | {e['on_defective']} | {100 * r1:.0f}% | {100 * r2:.0f}% |")
    if a.models and a.sharpen:
        _setting_table(classes, a.models, run_of, "G", a.sharpen,
                       lambda run: sharpened_aps(run, gammas=a.sharpen),
                       "Test pixel AP with each block map sharpened at local maxima, b * (b / max3x3(b)) ** G")
    if a.models and a.contrast:
        _setting_table(classes, a.models, run_of, "beta", a.contrast, lambda run: contrast_aps(run, a.contrast),
                       "Test pixel AP with each map refined by pixel contrast, m * (1 + beta z) / (1 + beta) "
                       "(output.contrast = beta)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
