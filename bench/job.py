"""One benchmark job (one class, one protocol, one seed) in its own process, so that its peak
memory is its own. Writes one JSON result file. Run by ``python -m bench``; runnable alone:

    python -m bench.job --data ../shared/data/piped --category PA_BDP01_TL --protocol unsup --seed 0 --out r.json
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .memory import PhasePeak


def run(args) -> dict:
    from core import api
    from core.config import load_config

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, preset_name=args.preset)
    suffix = f"-n{args.n_anomalous}" if args.pool is not None else ""
    model_path = Path(args.workdir) / f"{args.category}-{args.protocol}{suffix}-{args.seed}.pt"
    # the same code path as `semirest eval --protocol` (core/api.py run_protocol), always retrained.
    # The same pass over the test images also scores the maps at every candidate contrast beta
    # (decision 0028): the diagnostic below, and beta 0, the map without the refinement.
    from core.eval.anomaly_map import CONTRAST_BETAS
    betas = CONTRAST_BETAS if cfg.output.contrast_choice == "validation" else (0.0,) if cfg.output.contrast else ()
    with PhasePeak() as peak:
        run = api.run_protocol(args.data, args.category, args.protocol, model_path, cfg, args.device,
                               args.seed, args.n_anomalous, init=args.init, pool=args.pool, retrain=True,
                               also_contrast=betas)
    split, bundle, res, ds = run.split, run.bundle, run.result, run.dataset
    root = ds.root
    out = {"category": args.category, "protocol": args.protocol, "seed": args.seed,
           "preset": cfg.preset, "device": args.device, "moved": [str(p) for p in split.moved],
           "n_test": len(split.test), "test_set": split_fingerprint(split.test, root)}
    if args.pool is not None:
        out.update(n_labelled=len(split.labels), pool=args.pool, withheld=[str(p) for p in split.withheld],
                   n_defective_test=sum(s.is_anomalous for s in ds.test))
    # estimated seconds a person would have spent drawing these labels (core/data/labelcost.py)
    out["label_seconds_total"] = round(sum(sum(lab.seconds.values()) for lab in split.labels), 3)
    out["train_s"] = run.train_s
    out["steps"] = bundle.training.get("steps")
    # estimated labelling seconds of the moved images' labels (core/data/labelcost.py), per kind
    out["label_seconds"] = bundle.training.get("label_seconds", {})
    out["swin_train_s"] = bundle.training.get("train_seconds")   # the optimisation steps alone
    from .mixed_sizes import size_summary
    out["sizes"] = size_summary(root)
    out["backbone"] = bundle.backbone
    # the Swin's size, so that a report can tell runs of different presets apart (decision 0020
    # changed the cpu preset's width while older result files stayed)
    out["swin"] = {k: getattr(bundle.config.swin, k) for k in ("embed_dim", "num_heads", "depth", "mu", "step")}
    out["train_precision"] = bundle.training.get("precision")   # train.precision as run (decision 0024)
    out["val"] = {k: v for k, v in bundle.validation.items() if k != "history"}
    # the blocks of the labelled images kept as known defects (decision 0025), and their weight
    out["known_defects"] = bundle.calibration.get("known_defects") or {"weight": 0.0, "entries": 0}
    out["semirest"] = res.metrics
    # the maps' pixel-contrast refinement as calibration set it (decision 0028), and the same model
    # without it: what it adds
    out["contrast"] = dict(bundle.calibration.get("contrast") or {"beta": 0.0, "choice": "fixed"})
    if out["contrast"]["choice"] == "validation":
        # a diagnostic, never the choice: test pixel AP at every candidate beta, so that a rule for
        # choosing (on validation) can be judged from the result files
        out["contrast"]["test_pixel_ap"] = {str(float(b)): res.by_contrast[float(b)]["pixel_ap"]
                                            for b in CONTRAST_BETAS}
    if bundle.config.output.contrast:
        out["semirest_unrefined"] = res.by_contrast[0.0]
    if out["known_defects"].get("weight") and out["known_defects"].get("entries"):
        # the same model with its known defects switched off (weight 0: the map is the Swin's, fused
        # with the distance): what the bank adds, apart from the training's own noise
        off = {**bundle.calibration, "known_defects": {**out["known_defects"], "weight": 0.0}}
        out["semirest_without_known"] = api.evaluate(dataclasses.replace(bundle, calibration=off), args.data,
                                                     samples=split.test, device=args.device).metrics
    if bundle.training.get("pseudo_masks"):
        # how many of the blocks the boxes' pseudo-masks made defective are defective in the true
        # masks of the same images (the sup split moves the same ones), and how many they found
        from core.data.protocols import make_protocol
        sup = make_protocol(ds, "sup", args.n_anomalous, args.seed, pool=args.pool,
                            block_grid=(cfg.features.image_size, 8), eps_pos=cfg.train.eps_pos_real)
        if sup.moved == split.moved:
            out["pseudo_masks"] = pseudo_mask_quality(bundle.training["pseudo_masks"], split.labels, sup.labels, cfg)
    out["semirest_ms"] = res.timings_ms
    out["semirest_peak_mb"] = peak.mb      # fit + evaluation (bench/memory.py)
    if not args.skip_onnx:
        out["semirest_onnx"] = onnx_timing(model_path, split.test, args.threads, Path(args.workdir))
    if args.speed and len(split.test) >= 8:
        # ms per image at batch 1 and 8, with and without bagging, beside the backbone alone
        from core.data.images import read_image
        from .speed import measure
        out["speed"] = measure(bundle, [read_image(s.path) for s in split.test[:24]], args.device)
    for method in (["patchcore"] if args.patchcore else []) + [m for m in args.methods if m != "patchcore"]:
        # another registered method (core/methods/__init__.py) on the same images, trained as a user would
        # (same features, every normal) and evaluated by the same code as SemiREST
        out.update(other_method(method, cfg, bundle.backbone, ds, split.test, args))
    if args.compare:
        # the unsupervised model on this split's test images, so Sup/Semi/Tag are compared with
        # Unsup on the same images (the moved ones are not in this test set)
        out["unsup_on_split"] = api.evaluate(args.compare, args.data, samples=split.test,
                                             device=args.device).metrics
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if not args.keep_model:
        model_path.unlink(missing_ok=True)
    return out


def other_method(method: str, cfg, backbone: str, ds, samples, args) -> dict:
    """``<method>``: test metrics, ``<method>_ms``: ms per image per stage, ``<method>_fit_s``,
    ``<method>_onnx``: the exported model's timing (methods that export, unless --skip-onnx)."""
    from core import api
    from core.methods import BY_NAME
    m_cfg = cfg.updated({"method": method, "features": {"backbone": backbone}})
    path = Path(args.workdir) / f"{args.category}-{method}.pt"
    t1 = time.perf_counter()
    with PhasePeak() as peak:
        fitted = api.fit(ds.train, path, m_cfg, args.device, resume=False)
        fit_s = time.perf_counter() - t1
        # beta 0 from the same pass: the model without its pixel-contrast refinement (decision 0028)
        res = api.evaluate(fitted, args.data, samples=samples, device=args.device,
                           also_contrast=(0.0,) if fitted.config.output.contrast else ())
    out = {f"{method}_fit_s": fit_s, f"{method}_peak_mb": peak.mb}
    out[method], out[f"{method}_ms"] = res.metrics, res.timings_ms
    if fitted.config.output.contrast:
        out[f"{method}_unrefined"] = res.by_contrast[0.0]     # what the refinement adds
    if method == "patchcore" and (m_cfg.output.sharpness or fitted.config.output.contrast):
        # PatchCore's own map (no sharpening at local maxima, decision 0026, no refinement by pixel
        # contrast, decision 0028): what anomalib's is compared with for parity, beside the map our
        # PatchCore gives by default
        plain = dataclasses.replace(fitted, config=fitted.config.updated({"output": {"sharpness": 0.0,
                                                                                    "contrast": 0.0}}))
        out["patchcore_unsharpened"] = api.evaluate(plain, args.data, samples=samples, device=args.device).metrics
    if BY_NAME[method].exports and not args.skip_onnx:
        out[f"{method}_onnx"] = onnx_timing(path, samples, args.threads, Path(args.workdir))
    return out


def pseudo_mask_quality(record: list[dict], box_labels, mask_labels, cfg) -> dict:
    """Precision and recall of the pseudo-masks a model file recorded (core/learning/pseudomask.py
    ``pseudo_mask_record``) against Eq. 14's targets of the true masks (``mask_labels``, the same
    images as ``box_labels`` in the same order), over the blocks inside the boxes."""
    from core.data.labels import BLOCK_ANOMALOUS, BLOCK_UNKNOWN
    from core.learning.pseudomask import read_rows
    from core.methods.semirest import labelled_items
    truth = [(b.name, b.targets == BLOCK_UNKNOWN, m.targets == BLOCK_ANOMALOUS)
             for b, m in zip(labelled_items(box_labels, cfg), labelled_items(mask_labels, cfg))]
    tp = fp = fn = images = 0
    for e in record:
        boxed, pos = read_rows(e["boxed"]), read_rows(e["defective"])
        g = next((g for name, unk, g in truth if name == e["name"] and unk.shape == boxed.shape
                  and (unk == boxed).all()), None)
        if g is None:       # not one of these images (or its boxes differ): not scored
            continue
        images += 1
        tp += int((pos & g).sum())
        fp += int((pos & ~g).sum())
        fn += int((boxed & g & ~pos).sum())
    return {"images": images, "positives": tp + fp, "precision": tp / max(tp + fp, 1),
            "recall": tp / max(tp + fn, 1)}


def split_fingerprint(samples, root: Path) -> str:
    """A short fingerprint of which images a job was tested on, so the report can check that
    results it puts side by side saw the same images."""
    names = sorted(str(Path(s.path).relative_to(root)) for s in samples)
    return hashlib.sha1("\n".join(names).encode("utf-8")).hexdigest()[:12]


def onnx_timing(model_path: Path, samples, threads: int, workdir: Path) -> dict | None:
    """The model exported to ONNX (core/deploy/export.py) and run with ONNX Runtime on the test images
    with ``threads`` threads, as torch ran them: median ms per image (image read excluded) and
    the export's own map difference from torch. None without onnxruntime."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    from core.data.images import read_image
    from core.deploy.export import ExportPredictor, export_model
    folder = workdir / f"{model_path.stem}-onnx"
    meta = json.loads(export_model(model_path, folder).read_text(encoding="utf-8"))
    pred = ExportPredictor(folder, threads=threads)
    ms = []
    for s in samples:
        img = read_image(s.path)
        ms.append(pred.predict(img, out_hw=img.shape[:2]).timings_ms["onnxruntime"])
    return {"ms": float(np.median(ms)), "max_abs_map_diff": meta.get("check", {}).get("max_abs_map_diff")}


def main(argv=None) -> int:
    from core.data.protocols import PROTOCOLS
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--category", required=True)
    p.add_argument("--protocol", default="unsup", choices=PROTOCOLS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-anomalous", type=int, default=10)
    p.add_argument("--pool", type=int, help="draw this many defective images, label the first "
                   "--n-anomalous, test without all of them (nested draws, the economy protocol)")
    p.add_argument("--skip-onnx", action="store_true", help="no ONNX Runtime timing")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--config")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--patchcore", action="store_true", help="also PatchCore on the same test images")
    p.add_argument("--methods", nargs="*", default=[],
                   help="other registered methods (core/methods/__init__.py) to train and evaluate beside")
    p.add_argument("--init", help="start from this model (its bank and Swin weights)")
    p.add_argument("--compare", help="also evaluate this (unsupervised) model on the same test split")
    p.add_argument("--workdir", default=".")
    p.add_argument("--keep-model", action="store_true")
    p.add_argument("--speed", action="store_true", help="also measure inference speed (bench/speed.py)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    from .report import code_state, machine
    code = code_state()     # before the run: the code this process imported
    result = run(args)
    result["code"] = code
    result["machine"] = machine()
    from core.fileio import atomic_write_text
    atomic_write_text(args.out, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
