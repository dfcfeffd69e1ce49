"""``semirest``: the command line. Its verbs mirror the Python API in :mod:`core.api`.

    semirest train   --data DIR --category C --out model.pt [--preset cpu|paper] [--backbone ...]
    semirest predict --model model.pt --images DIR --out OUT [--runtime torch|onnxruntime] [--ray [ADDRESS]]
    semirest export  --model model.pt --format onnx --out DIR [--image-size WxH] [--quantize int8]
    semirest eval    --model model.pt --data DIR --category C [--protocol unsup|sup|blocks|semi|tag ...]
    semirest devices
    semirest info    --model model.pt

Progress: tqdm bars on stderr, or with ``--progress-json`` one JSON object per line on stdout
(``{"event": "progress", ...}``, then ``{"event": "result", ...}`` or ``{"event": "error", ...}``),
the protocol the app's training worker reads. Errors print one line naming the file and the
problem and exit with status 2; Ctrl-C exits with 130 and keeps the training checkpoint, so the
same command resumes. ``--verbose`` (before or after the verb) also shows library start-up
messages, such as which faiss build was loaded.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .errors import Cancelled, ConfigError, SemiRestError

EXIT_ERROR, EXIT_CANCELLED = 2, 130


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda:N, or auto (the GPU with most free memory, else CPU)")
    p.add_argument("--progress-json", action="store_true", help="JSON lines on stdout instead of progress bars")


def _add_precision(p: argparse.ArgumentParser) -> None:
    from .deploy.precision import DEFAULT_PRECISION, PRECISIONS
    p.add_argument("--precision", choices=list(PRECISIONS), default=DEFAULT_PRECISION,
                   help="the Swin's float type (torch runtime): bfloat16 made whole inference 1.7-1.9x "
                        "faster on a CPU with AMX (also for recent GPUs), maps within about 0.003 of "
                        "float32's; float16: GPUs only (docs/decisions/0024-inference-precision.md)")


def _add_contrast(p: argparse.ArgumentParser) -> None:
    p.add_argument("--contrast", type=float, metavar="BETA",
                   help="refine the maps by each pixel's contrast with its surroundings, m (1 + BETA z) / "
                        "(1 + BETA), instead of the model's own setting (0: off; 0.2 sharpened specks on "
                        "the dev classes; decision 0028); torch runtime")


def _add_config(p: argparse.ArgumentParser) -> None:
    from .config import DEFAULT_PRESET, PRESETS
    from .methods import METHODS
    p.add_argument("--method", choices=sorted(METHODS),
                   help="the detection method (default semirest). " + "; ".join(METHODS.values()))
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help=f"size preset (default: the config file's preset:, else {DEFAULT_PRESET})")
    p.add_argument("--config", help="YAML file of settings over the preset (see core/config.py)")
    from .config import BACKBONE_CHOICES
    p.add_argument("--backbone", choices=list(BACKBONE_CHOICES))
    p.add_argument("--steps", type=int, help="training steps of the chosen method (overrides the preset)")
    p.add_argument("--seed", type=int, help="random seed for sampling, synthesis and the validation split")


def build_parser() -> argparse.ArgumentParser:
    from .deploy.export import (FORMATS as EXPORT_FORMATS, JSON_NAME as EXPORT_JSON,
                                 QUANTIZATIONS as EXPORT_QUANTIZATIONS, RUNTIMES)
    p = argparse.ArgumentParser(prog="semirest", description="SemiREST anomaly detection: train, predict, evaluate.")
    sub = p.add_subparsers(dest="verb", required=True)

    t = sub.add_parser("train", help="fit the memory bank and train the residual Swin Transformer")
    t.add_argument("--data", help="MVTec-layout root (or the category folder itself): normals from train/good")
    t.add_argument("--category", help="category folder under --data")
    t.add_argument("--normals", help="instead of --data: a folder of normal images, or a text file "
                                     "listing one image path per line (relative to the file)")
    t.add_argument("--out", required=True, help="model file to write")
    t.add_argument("--labels", help="labels of defective (or normal-tagged) images: a folder of per-image "
                                    "JSON files (semirest.labels/1), or another format with --labels-format")
    t.add_argument("--labels-format", default="semirest", choices=["semirest", "mvtec", "coco", "labelme", "dota"],
                   help="mvtec: an MVTec category whose test images and ground_truth masks become labels; "
                        "coco: an annotations.json; labelme/dota: a folder of per-image files")
    t.add_argument("--image-root", help="where coco/labelme/dota labels find their images")
    t.add_argument("--init", help="start from this model (e.g. the unsupervised one, for boxes or tags)")
    t.add_argument("--no-resume", action="store_true", help="ignore an existing <out>.ckpt and start over")
    from .deploy.precision import TRAIN_PRECISIONS
    t.add_argument("--precision", dest="train_precision", choices=list(TRAIN_PRECISIONS),
                   help="train.precision: the Swin's float type while training (default auto: bfloat16 "
                        "where the CPU (AMX / AVX512-BF16) or GPU multiplies it, else float32; bfloat16 "
                        "trained about 1.6x faster on a CPU with AMX with the same test pixel "
                        "AP on the dev classes; float16: GPUs only; decision 0024)")
    _add_config(t)
    _add_common(t)

    pr = sub.add_parser("predict", help="heatmaps, overlays and a CSV of image scores for a folder")
    pr.add_argument("--model", required=True)
    pr.add_argument("--images", required=True, help="folder of images (any size; gray, RGBA, 16-bit accepted)")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--maps", choices=["none", "npy"], default="none",
                    help="npy: also write each raw float map at the image's own size as OUT/<stem>.npy "
                         "(for any scorer, e.g. metrics that read .npy maps)")
    pr.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                    help="run as a Ray Data pipeline (pip install .[cluster]): on a local Ray with no "
                         "ADDRESS, or on a cluster (auto, HEAD:6379); skips images already done")
    pr.add_argument("--runtime", choices=list(RUNTIMES), default="torch",
                    help="torch: the model file; onnxruntime / openvino: --model is a folder written "
                         "by `semirest export`, run with ONNX Runtime / OpenVINO on the CPU")
    _add_precision(pr)
    _add_contrast(pr)
    _add_common(pr)

    x = sub.add_parser("export", help="write the whole inference path as ONNX for a fixed image size")
    x.add_argument("--model", required=True, help="model file to export")
    x.add_argument("--format", choices=list(EXPORT_FORMATS), default="onnx",
                   help="onnx; openvino: the ONNX graph and its OpenVINO IR (needs `pip install openvino`)")
    x.add_argument("--out", required=True, help=f"output folder (model.onnx and {EXPORT_JSON})")
    x.add_argument("--image-size", help="WIDTHxHEIGHT of the images the export will see (default: "
                                        "square, the model's input size); others are resized to it")
    x.add_argument("--no-bagging", action="store_true", help="one Swin pass instead of bagging")
    x.add_argument("--quantize", choices=list(EXPORT_QUANTIZATIONS), default="none",
                   help="int8: the Swin's layers as int8 for ONNX Runtime (faster on CPU; maps within "
                        "0.01 of torch's, checked on export); none: float32")
    x.add_argument("--progress-json", action="store_true", help="JSON lines on stdout")

    e = sub.add_parser("eval", help="pixel AP, PRO, pixel AUROC, image AUROC on a test split")
    e.add_argument("--model", help="model to evaluate (with --protocol sup/semi/tag: trained here if absent)")
    e.add_argument("--data", required=True)
    e.add_argument("--category")
    from .data.protocols import PROTOCOLS
    e.add_argument("--protocol", choices=list(PROTOCOLS), default="unsup")
    e.add_argument("--n-anomalous", type=int, default=10, help="defective test images moved into training")
    e.add_argument("--init", help="semi/tag: the unsupervised model to start from (trained here if absent)")
    e.add_argument("--json-out", help="also write the result JSON to this file")
    e.add_argument("--no-bagging", action="store_true", help="one Swin pass per image instead of bagging")
    e.add_argument("--runtime", choices=list(RUNTIMES), default="torch",
                   help="onnxruntime / openvino: --model is a folder written by `semirest export`, "
                        "scored on the test split as that runtime maps it (protocol unsup)")
    _add_precision(e)
    _add_contrast(e)
    _add_config(e)
    _add_common(e)

    sub.add_parser("devices", help="list the CPU and every CUDA device with free memory")
    i = sub.add_parser("info", help="summary of a model file")
    i.add_argument("--model", required=True)
    # --verbose before or after the verb: on the verb's parser it must not reset a value given
    # before the verb, hence SUPPRESS there.
    p.add_argument("-v", "--verbose", action="store_true", help="also show library start-up messages "
                                                               "(which faiss build was loaded)")
    for verb in sub.choices.values():
        verb.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                          help="also show library start-up messages (which faiss build was loaded)")
    return p


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # faiss's loader tries its AVX512 and AVX2 builds first and logs each failed try, with the
    # ModuleNotFoundError, at INFO: nine lines of alarming noise on every call on most machines,
    # although the generic build then loads fine. Show them only when asked.
    logging.getLogger("faiss.loader").setLevel(logging.INFO if verbose else logging.WARNING)


def _config(args):
    from .config import load_config
    over: dict = {}
    if getattr(args, "method", None):
        over["method"] = args.method
    if getattr(args, "backbone", None):
        over.setdefault("features", {})["backbone"] = args.backbone
    if getattr(args, "seed", None) is not None:
        over.setdefault("train", {})["seed"] = args.seed
    if getattr(args, "train_precision", None):
        over.setdefault("train", {})["precision"] = args.train_precision
    cfg = load_config(args.config, preset_name=args.preset, overrides=over)
    if getattr(args, "train_precision", None) not in (None, "float32", "auto"):
        from .methods import BY_NAME
        if not BY_NAME[cfg.method].train_precision:
            raise ConfigError(f"--precision {args.train_precision}: {BY_NAME[cfg.method].title} has no "
                              f"network whose training it speeds up")
    if getattr(args, "steps", None):
        from .methods import BY_NAME     # the steps of the method being trained (core/methods/__init__.py)
        setting = BY_NAME[cfg.method].steps_setting
        if setting is None:
            raise ConfigError(f"--steps: {BY_NAME[cfg.method].title} has no training steps")
        section, name = setting.split(".")
        cfg = cfg.updated({section: {name: args.steps}}, where="--steps").validate()
    return cfg


class _Output:
    def __init__(self, json_mode: bool):
        from .progress import JsonRenderer, TqdmRenderer
        self.json_mode = json_mode
        self.render = JsonRenderer() if json_mode else TqdmRenderer()

    def result(self, payload: dict, text: str) -> None:
        if self.json_mode:
            print(json.dumps({"event": "result", **payload}, default=str), flush=True)
        else:
            getattr(self.render, "close", lambda: None)()
            print(text, flush=True)

    def error(self, message: str, kind: str) -> None:
        getattr(self.render, "close", lambda: None)()
        if self.json_mode:
            print(json.dumps({"event": "error", "kind": kind, "message": message}), flush=True)
        print(f"error: {message}", file=sys.stderr, flush=True)


def _metrics_table(metrics: dict, title: str) -> str:
    names = [("pixel_ap", "pixel AP"), ("pro", "PRO (FPR<=0.3)"), ("pixel_auroc", "pixel AUROC"),
             ("image_auroc", "image AUROC")]
    w = max(len(n) for _, n in names)
    rows = [title, "-" * (w + 10)]
    rows += [f"{n:<{w}}  {100 * metrics[k]:6.2f} %" for k, n in names if k in metrics]
    return "\n".join(rows)


def _normal_list(path: str) -> list[Path]:
    from .data.images import list_images
    from .errors import DatasetError
    p = Path(path)
    if p.is_dir():
        imgs = list_images(p)
    elif p.is_file():
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
        imgs = [(p.parent / ln) if not Path(ln).is_absolute() else Path(ln) for ln in lines if ln and not ln.startswith("#")]
    else:
        raise DatasetError(p, "no such folder or list file")
    if not imgs:
        raise DatasetError(p, "lists no images")
    return imgs


def cmd_train(args, out: _Output) -> int:
    from . import api
    from .data.labels import load_label_dir
    from .progress import ProgressEvent
    cfg = _config(args)
    labels = None
    if args.labels and args.labels_format == "semirest":
        labels = list(load_label_dir(args.labels).values())
    elif args.labels:
        from .data.formats import import_labels
        labels = import_labels(args.labels, args.labels_format, args.image_root)
    if labels is not None:
        from .data.labelcost import fill_estimates
        # labels with no seconds (drawn in another tool) get estimated ones, recorded apart
        cost = fill_estimates(labels)
        out.render(ProgressEvent("log", 1, 1, f"labels: {len(labels)} images from {args.labels} "
                                              f"({args.labels_format}); label seconds where missing: "
                                              f"estimated ({cost.describe()})"))
    if args.normals:
        bundle = api.fit(_normal_list(args.normals), args.out, cfg, args.device, labels=labels,
                         progress=out.render, resume=not args.no_resume, init_from=args.init,
                         record={"normals": str(args.normals)})
    elif args.data:
        bundle = api.train(args.data, args.category, args.out, cfg, args.device, labels=labels,
                           progress=out.render, resume=not args.no_resume, init_from=args.init)
    else:
        raise SemiRestError("train needs --data (an MVTec-layout folder) or --normals")
    out.result({"model": str(args.out), "backbone": bundle.backbone, "validation": {
        k: v for k, v in bundle.validation.items() if k != "history"}, "training": bundle.training},
        f"saved {args.out}: {bundle.summary()}")
    return 0


def cmd_predict(args, out: _Output) -> int:
    from . import api
    from .fileio import safe_name
    if args.ray is not None:
        from .cluster import predict_ray
        if args.runtime != "torch":
            raise SemiRestError(f"--ray runs the torch model file; --runtime {args.runtime} runs in one process only")
        if args.contrast is not None:
            raise SemiRestError("--ray runs the model file as it is; set output.contrast in it instead of --contrast")
        res = predict_ray(args.model, args.images, args.out, None if args.ray == "local" else args.ray,
                          args.device, args.maps, progress=out.render, precision=args.precision)
    else:
        res = api.predict(args.model, args.images, args.out, args.device, progress=out.render,
                          maps=args.maps, runtime=args.runtime, precision=args.precision, contrast=args.contrast)
    flagged = sum(r.flagged for r in res)
    out.result({"out": str(args.out), "images": len(res), "flagged": flagged,
                "scores": {safe_name(r.path): r.score for r in res}},
               f"{len(res)} images scored, {flagged} flagged; heatmaps, overlays and scores.csv in {args.out}")
    return 0


def cmd_export(args, out: _Output) -> int:
    from .deploy.export import export_model, parse_size
    size = parse_size(args.image_size) if args.image_size else None
    meta_path = export_model(args.model, args.out, args.format, size,
                             bagging=False if args.no_bagging else None, quantize=args.quantize)
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    check = meta.get("check", {})
    diff = f"; map differs from torch's by {check['max_abs_map_diff']:.2g} at most" if check else ""
    if meta.get("quantize", "none") != "none":
        diff += f" ({meta['quantize']}: {meta['int8_layers']['matmuls']} Swin layers)"
    w, h = meta["image_size"]
    files = ", ".join([meta["onnx"]] + ([meta["openvino"]] if meta.get("openvino") else []) + [meta_path.name])
    out.result({"out": str(args.out), "export": meta},
               f"exported {args.model} for {w}x{h} images to {args.out} ({files}){diff}")
    return 0


def cmd_eval(args, out: _Output) -> int:
    from . import api
    from .fileio import atomic_write_text
    seed = args.seed if args.seed is not None else 0
    if args.protocol == "unsup" and not args.model:
        raise SemiRestError("eval --protocol unsup needs --model (train one with `semirest train`)")
    category = args.category
    if args.runtime != "torch":
        if args.protocol != "unsup":
            raise SemiRestError(f"eval --runtime {args.runtime} scores an export as it is: protocol unsup only "
                                f"(an export cannot be trained with --protocol {args.protocol})")
        res = api.evaluate(args.model, args.data, category, runtime=args.runtime, progress=out.render,
                           precision=args.precision, contrast=args.contrast)
        ds_name, moved = category or Path(args.data).name, []
        payload = {"category": ds_name, "protocol": "unsup", "model": str(args.model), "runtime": args.runtime}
        title = f"{ds_name}, export {args.model} ({args.runtime}), {res.n_images} test images"
    else:
        model = Path(args.model) if args.model else Path(f"{category or Path(args.data).name}-{args.protocol}-seed{seed}.pt")
        run = api.run_protocol(args.data, category, args.protocol, model, _config(args), args.device, seed,
                               args.n_anomalous, init=args.init, progress=out.render,
                               bagging=False if args.no_bagging else None, precision=args.precision,
                               contrast=args.contrast)
        res, ds_name, moved = run.result, run.dataset.name, run.split.moved
        payload = {"category": ds_name, "protocol": args.protocol, "seed": seed, "model": str(model),
                   "moved": [str(p) for p in moved]}
        title = f"{ds_name}, protocol {args.protocol}, {res.n_images} test images"
    payload.update(metrics=res.metrics, n_test=res.n_images, median_ms=res.timings_ms)
    if args.json_out:
        atomic_write_text(args.json_out, json.dumps(payload, indent=1, default=str))
    text = _metrics_table(res.metrics, title)
    if moved:
        text += f"\nmoved into training (seed {seed}): " + ", ".join(p.name for p in moved)
    out.result(payload, text + "\n" + json.dumps(res.metrics))
    return 0


def cmd_devices(args, out) -> int:
    from .device import list_devices
    devs = list_devices()
    for d in devs:
        print(d.describe())
    if len(devs) == 1:
        print("no CUDA device found: training and inference run on the CPU")
    return 0


def cmd_info(args, out) -> int:
    from .deploy.modelfile import ModelBundle
    b = ModelBundle.load(args.model)
    print(b.summary())
    training = dict(b.training)
    if "pseudo_masks" in training:     # a row of 0/1 per block row and image: the counts say enough here
        training["pseudo_masks"] = b.pseudo_mask_counts()
    print(json.dumps({"training": training, "calibration": {k: v for k, v in b.calibration.items()
                                                              if not isinstance(v, list)}}, indent=1, default=str))
    return 0


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal
    args = build_parser().parse_args(argv)
    # SIGTERM (the app's Cancel, a service manager) stops like Ctrl-C: temporary files are removed,
    # the training checkpoint is kept for resuming.
    try:
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    except ValueError:   # not the main thread (embedded use): leave signals alone
        pass
    _setup_logging(args.verbose)
    out = _Output(getattr(args, "progress_json", False))
    verbs = {"train": cmd_train, "predict": cmd_predict, "export": cmd_export, "eval": cmd_eval, "devices": cmd_devices, "info": cmd_info}
    try:
        return verbs[args.verb](args, out)
    except Cancelled as exc:
        out.error(f"{exc}; the checkpoint is kept, the same command resumes", "cancelled")
        return EXIT_CANCELLED
    except KeyboardInterrupt:
        out.error("interrupted; the checkpoint is kept, the same command resumes", "cancelled")
        return EXIT_CANCELLED
    except SemiRestError as exc:
        out.error(str(exc), type(exc).__name__)
        return EXIT_ERROR
    except OSError as exc:   # a file system fault the core did not turn into a SemiRestError: still one line
        where = f"{exc.filename}: " if exc.filename else ""
        out.error(f"{where}{exc.strerror or exc}", type(exc).__name__)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
