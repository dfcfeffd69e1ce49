"""Export a model's whole inference path as one ONNX graph for a fixed image size, and run it with
ONNX Runtime (issue 12.3): a factory line runs ONNX Runtime, not a Python training stack.

Every registered method exports (core/methods/__init__.py), through one graph for images of one
size (``image_size`` W x H; model input W_in x H_in):

    image (1, H_in, W_in, 3) uint8 RGB, already resized to the model input (outside the graph,
    datasets.resize_to_input: area when shrinking, bilinear when enlarging)
    -> /255, normalisation, backbone (REB: with its fine-tuned weights when it has them),
       aggregation, channel pooling (core/embedding/features.py)
    -> the method's head (``Detector.graph_head``, core/methods/detector.py): features -> block map
       - SemiREST: + position code; the nearest bank entry (one matmul and an argmin,
         core/embedding/bank.NearestEntry); the residual against it, the residual Swin over every
         sliding window of the map, averaged per token (bagging, core/learning/model.predict_map) or
         one pass; fused with the distance (core/learning/fusion.py) when the model has a weight
       - PatchCore: the distance to the nearest bank entry
       - REB: LDKNN, that distance minus lambda times the entry's stored density (core/methods/ldknn.py)
       - HaloAE: the auto-encoder's channel-mean squared reconstruction error of the standardised
         features (core/methods/haloae.py; halo windows gathered by index, which ONNX can export)
    -> post-processing (core/eval/anomaly_map.postprocess: sharpening as a 3 x 3 max-pool, then upsampling
       + Gaussian as two matrix products)
    -> anomaly_map (1, H_ev, W_ev) at the evaluation size, score (1,) its maximum,
       block_map (1, rows, cols).

What stays outside: reading the image, the resize to the model input, the last resize of the map
to each image's own size and the colouring (the JSON beside the graph holds map scale and floor).
The graph module is core/deploy/exportgraph.py. ``--format openvino`` also converts the graph to OpenVINO
IR (model.xml/.bin, float32) and ``--runtime openvino`` runs that on the CPU in float32.

``--quantize int8`` (ONNX only) stores the weights of the layers the method names
(``Detector.int8_layers``: SemiREST's Swin blocks) as int8 and quantises their inputs on the fly
(ONNX Runtime's dynamic quantisation, per output channel). The bank search, the residual's
embedding and the post-processing stay float32: quantising every matrix product moved a dev
class's pixel AP from 87.7 to 73.9, the Swin blocks alone left it unchanged (decision 0021). The
export checks the int8 maps against torch to INT8_TOLERANCE instead of PARITY_TOLERANCE.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .. import __version__
from ..data.geometry import model_input_size
from ..errors import ExportError, InputError
from ..fileio import atomic_write_bytes, atomic_write_text, ensure_writable

# torch, the model and the graph are imported where used: the CLI reads the names below on every
# start, and ONNX Runtime inference needs no torch model at all.

EXPORT_FORMAT = "semirest.export/1"
JSON_NAME = "semirest-export.json"
ONNX_NAME = "model.onnx"
FORMATS = ("onnx", "openvino")           # openvino: the same graph converted to OpenVINO IR
RUNTIMES = ("torch", "onnxruntime", "openvino")
OPENVINO_NAME = "model.xml"              # OpenVINO IR (model.xml + model.bin), beside model.onnx
INPUT_NAME = "image"
OUTPUT_NAMES = ("anomaly_map", "score", "block_map")
OPSET = 17
MIN_FREE_EXPORT_BYTES = 8 << 20
PARITY_TOLERANCE = 1e-4                  # max abs difference of the maps, export against torch
QUANTIZATIONS = ("none", "int8")         # int8: ONNX Runtime's dynamic int8 of the layers the method
                                         # names (Detector.int8_layers; decision 0021)
INT8_TOLERANCE = 0.01                    # max abs map difference of an int8 export against torch:
                                         # 0.0014 measured over a dev class's 72 test images


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------
def parse_size(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ExportError(f"--image-size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 640x480") from None
    if w <= 0 or h <= 0:
        raise ExportError(f"--image-size {text!r}: width and height must be positive")
    return w, h


def _require(module: str):
    try:
        return __import__(module)
    except ImportError:
        how = ("an optional extra: `pip install openvino` or `pip install .[openvino]`" if module == "openvino"
               else "a dependency of SemiREST Studio; reinstall with `./dev setup`")
        raise ExportError(f"the package '{module}' is needed for this: run `pip install {module}` "
                          f"({how})") from None


def _probe_image(w: int, h: int) -> np.ndarray:
    """A fixed image with structure at every scale, for the check after export."""
    rng = np.random.default_rng(12)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 7.0) * np.cos(yy / 11.0)
    img = base[..., None] + rng.normal(0, 20, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def export_model(model: str | Path, out_dir: str | Path, fmt: str = "onnx",
                 image_size: tuple[int, int] | None = None, bagging: bool | None = None,
                 check: bool = True, quantize: str = "none") -> Path:
    """Write ``out_dir/model.onnx`` and ``out_dir/semirest-export.json``; returns the JSON's path.

    ``image_size``: (W, H) of the images the line will send (default: square, the model's
    ``features.image_size``). ``check``: run a probe image through ONNX Runtime and torch and
    record the largest map difference in the JSON (an error past 1e-4, or INT8_TOLERANCE for the
    int8 graph). ``quantize``: one of QUANTIZATIONS (see the module docstring)."""
    if fmt not in FORMATS:
        raise ExportError(f"export format {fmt!r} is not available; choose one of {', '.join(FORMATS)}")
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"quantisation {quantize!r} is not available; choose one of {', '.join(QUANTIZATIONS)}")
    if quantize != "none" and fmt != "onnx":
        raise ExportError(f"--quantize {quantize} is for ONNX Runtime (--format onnx); the OpenVINO IR "
                          "is written in float32")
    import torch

    from ..eval.anomaly_map import eval_hw
    from .exportgraph import InferenceGraph, traceable_channel_pool
    from .modelfile import ModelBundle
    out_dir = Path(out_dir)
    bundle = ModelBundle.load(model)                       # names the file when it is not a model
    from ..methods import BY_NAME, detector_class
    if not BY_NAME[bundle.method].exports:
        raise ExportError(f"{model}: {BY_NAME[bundle.method].title} models cannot be exported yet; "
                          f"exportable methods: {', '.join(m.title for m in BY_NAME.values() if m.exports)}")
    layers = detector_class(bundle.method).int8_layers
    if quantize == "int8" and not layers:
        measured = ", ".join(m.title for m in BY_NAME.values() if detector_class(m.name).int8_layers)
        raise ExportError(f"{model}: int8 quantisation is measured for {measured} only; "
                          f"{BY_NAME[bundle.method].title} models export in float32")
    if bundle.config.bank.search != "exact" and len(bundle.bank_state["features"]):
        raise ExportError(f"{model}: its bank search is {bundle.config.bank.search!r}; the exported graph "
                          f"searches the whole bank (exact), which would not give this model's maps")
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "is a file; --out must be a folder for the exported model")
    ensure_writable(out_dir, MIN_FREE_EXPORT_BYTES)         # before minutes of tracing
    _require("onnx")
    if fmt == "openvino":
        _require("openvino")
    cfg = bundle.config
    f = cfg.features
    w0, h0 = image_size or (f.image_size, f.image_size)
    w_in, h_in = model_input_size(w0, h0, f.image_size, f.size_multiple)
    map_hw = eval_hw(w0, h0, cfg.output.eval_size)
    graph = InferenceGraph(bundle, (w_in, h_in), map_hw, bagging).eval()
    dummy = torch.zeros(1, h_in, w_in, 3, dtype=torch.uint8)
    buf = io.BytesIO()
    with torch.no_grad(), traceable_channel_pool(), warnings.catch_warnings():
        warnings.simplefilter("ignore")     # tracer notes on constant shapes: the size is fixed
        try:
            torch.onnx.export(graph, (dummy,), buf, dynamo=False, opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES))
        except Exception as exc:   # noqa: BLE001 - the exporter raises many kinds; say which model
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ExportError(f"{model}: cannot be exported to ONNX ({first})") from exc
    data = buf.getvalue()
    # torch's map of the probe image, computed once for every graph checked against it
    probe = _Probe(bundle, (w0, h0), bagging) if check else None
    check_result = _check(model, probe, _ort_runner(data)) if probe and _has("onnxruntime") else None
    fp32_check = None
    if quantize == "int8":
        data, n_int8 = _quantize_int8(model, data, layers)
        fp32_check = check_result
        check_result = _check(model, probe, _ort_runner(data), INT8_TOLERANCE) if probe else None
    # An earlier export in this folder stops being one before its graph is replaced: a crash
    # between the two writes must not leave a description beside a graph it does not describe.
    (out_dir / JSON_NAME).unlink(missing_ok=True)
    onnx_path = out_dir / ONNX_NAME
    atomic_write_bytes(onnx_path, data)
    ov_check = _write_openvino(onnx_path, out_dir, model, probe) if fmt == "openvino" else None
    calib = bundle.calibration
    ext = graph.extractor
    meta = {
        "format": EXPORT_FORMAT, "onnx": ONNX_NAME, "method": cfg.method, "backbone": bundle.backbone,
        "source_model": str(Path(model)), "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "version": __version__, "opset": OPSET,
        "image_size": [w0, h0],
        "input": {"name": INPUT_NAME, "size": [w_in, h_in], "shape": [1, h_in, w_in, 3],
                  "dtype": "uint8", "layout": "NHWC RGB",
                  "resize": "to the input size: OpenCV INTER_AREA when shrinking, INTER_LINEAR "
                            "when enlarging (done before the graph)"},
        "normalization": {"mean": ext.mean.flatten().tolist(), "std": ext.std.flatten().tolist(),
                          "note": "applied inside the graph to RGB / 255"},
        "outputs": {"anomaly_map": [1, map_hw[0], map_hw[1]], "score": [1],
                    "block_map": [1, h_in // 8, w_in // 8]},
        "output_names": list(OUTPUT_NAMES),
        "map_size": [map_hw[1], map_hw[0]],
        "sharpness": float(cfg.output.sharpness),     # inside the graph, before upsampling (decision 0026)
        # after the graph, on the host (decision 0028): OpenCV's median has no ONNX operator
        "contrast": {"beta": float(cfg.output.contrast), "radius_blocks": float(cfg.output.contrast_radius),
                     "note": "when beta > 0: anomaly_map *= (1 + beta z) / (1 + beta), z = |grey - "
                             "median(grey)| / its median over the image, the grey image at the map's "
                             "size, a median window of 2 round(radius_blocks * map px per block) + 1 "
                             "(core/eval/anomaly_map.refine_by_contrast); the score is unchanged"},
        "map_scale": float(calib.get("map_scale", 1.0)), "map_floor": float(calib.get("map_floor", 0.0)),
        "thresholds": {"image": float(calib.get("image_threshold", 0.5)),
                       "pixel": float(calib.get("pixel_threshold", 0.5))},
        "bagging": None, "fusion_weight": None,      # SemiREST's; other methods add their own
        **graph.detector.export_info(),
        "quantize": quantize,
    }
    if quantize == "int8":
        meta["int8_layers"] = {"matmuls": n_int8, "scope": list(layers),
                               "tolerance": INT8_TOLERANCE}
    if check_result is not None:
        meta["check"] = check_result
    if fp32_check is not None:
        meta["check_float32"] = fp32_check
    if fmt == "openvino":
        meta["openvino"] = OPENVINO_NAME
        if ov_check is not None:
            meta["check_openvino"] = ov_check
    atomic_write_text(out_dir / JSON_NAME, json.dumps(meta, indent=1))   # last: marks a whole export
    return out_dir / JSON_NAME


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def _quantize_int8(model, data: bytes, scopes: tuple[str, ...]) -> tuple[bytes, int]:
    """The graph with its matrix products under ``scopes`` (ONNX node-name prefixes) dynamically
    quantised to int8 weights by ONNX Runtime's own tool; -> (graph, how many were)."""
    _require("onnxruntime")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    g = onnx.load_from_string(data).graph
    weights = {i.name for i in g.initializer}
    # the layers with stored weights (attention's activation products have none to quantise)
    nodes = [n.name for n in g.node
             if n.op_type == "MatMul" and n.name.startswith(scopes) and n.input[1] in weights]
    if not nodes:
        raise ExportError(f"{model}: its graph has no layer that int8 applies to (a model that scores "
                          "with the nearest-neighbour distance alone runs no Swin); export it in float32")
    try:
        # the tool reads and writes files; a private folder, removed whatever happens
        with tempfile.TemporaryDirectory(prefix="semirest-int8-") as tmp:
            src, dst = Path(tmp) / "float32.onnx", Path(tmp) / "int8.onnx"
            src.write_bytes(data)
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)   # the tool's advice to pre-process, on the root logger
            try:
                quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True,
                                 nodes_to_quantize=nodes)
            finally:
                root.setLevel(level)
            return dst.read_bytes(), len(nodes)
    except OSError as exc:
        raise ExportError(f"{model}: int8 quantisation could not write its temporary files "
                          f"({exc.strerror or exc}); nothing was written") from exc


class _Probe:
    """The probe image as the graph takes it (resized to the model input, batch of one) and the torch
    Predictor's prediction of it: what every graph of one export is checked against."""

    def __init__(self, bundle, image_wh: tuple[int, int], bagging):
        from ..data.datasets import resize_to_input
        from .inference import Predictor
        img = _probe_image(*image_wh)
        f = bundle.config.features
        x = resize_to_input(img, *model_input_size(image_wh[0], image_wh[1], f.image_size, f.size_multiple))
        self.x = np.ascontiguousarray(x[None])
        self.img, self.output = img, bundle.config.output
        self.ref = Predictor(bundle, "cpu", bagging=bagging).predict(img)

    def finish(self, amap: np.ndarray, block: np.ndarray) -> np.ndarray:
        """A graph's map of the probe as the export's reader finishes it (decision 0028's host step)."""
        from ..eval.anomaly_map import refine_by_contrast
        return refine_by_contrast(amap, self.img, block.shape, self.output.contrast, self.output.contrast_radius)


def _ort_runner(onnx: Path | bytes, threads: int | None = None):
    """A graph in ONNX Runtime as a function: input batch -> [anomaly_map, score, block_map]."""
    sess = _session(onnx, threads)
    return lambda x: sess.run(list(OUTPUT_NAMES), {INPUT_NAME: x})


def _check(model, probe: _Probe, run, tolerance: float = PARITY_TOLERANCE) -> dict:
    """The probe image through torch (``probe.ref``) and through a graph (``run``: ONNX Runtime or
    OpenVINO): largest differences; an error past ``tolerance``."""
    ref = probe.ref
    amap, score, block = run(probe.x)
    diff = float(np.abs(probe.finish(amap[0], block[0]) - ref.anomaly_map).max())
    if diff > tolerance:
        raise ExportError(f"{model}: the exported graph's map differs from the torch model's by "
                          f"{diff:.3g} (more than {tolerance}) on a probe image; nothing was written")
    return {"max_abs_map_diff": diff, "score_diff": abs(float(score[0]) - ref.score)}


def _write_openvino(onnx_path: Path, out_dir: Path, model, probe: _Probe | None) -> dict | None:
    """The ONNX graph as OpenVINO IR (float32 weights: parity before size), checked like the ONNX
    (``probe``: None, no check)."""
    import shutil

    import openvino as ov
    ir = ov.convert_model(str(onnx_path))
    result = _check(model, probe, _openvino_runner(ir, None)) if probe else None
    # save_model writes model.xml and model.bin (found by the .xml's stem): into a temporary folder
    # beside, then each moved into place; the JSON written after them marks the export whole
    tmp = Path(tempfile.mkdtemp(prefix=".openvino-", dir=out_dir))
    try:
        try:
            ov.save_model(ir, str(tmp / OPENVINO_NAME), compress_to_fp16=False)
            for name in (Path(OPENVINO_NAME).with_suffix(".bin").name, OPENVINO_NAME):
                (tmp / name).replace(out_dir / name)
        except (OSError, RuntimeError) as exc:
            from ..fileio import write_error
            err = write_error(out_dir / OPENVINO_NAME, exc)
            if err is None:
                raise
            raise err from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _openvino_runner(model, threads: int | None):
    """OpenVINO on the CPU in float32 (its CPU plugin would otherwise pick bf16 where the CPU has it)."""
    import openvino as ov
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(model, "CPU", config)
    request = compiled.create_infer_request()

    def run(x: np.ndarray):
        res = request.infer({INPUT_NAME: x})
        return [np.asarray(res[compiled.output(name)]) for name in OUTPUT_NAMES]
    return run


# --------------------------------------------------------------------------------------------
# Running an export
# --------------------------------------------------------------------------------------------
def _session(onnx: Path | bytes, threads: int | None):
    ort = _require("onnxruntime")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        src = onnx if isinstance(onnx, bytes) else str(onnx)
        return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:   # noqa: BLE001 - ORT raises its own classes for damaged files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(None if isinstance(onnx, bytes) else onnx, f"ONNX Runtime cannot load it, damaged or truncated? ({first})") from None


def read_export(folder: str | Path, runtime: str = "onnxruntime") -> dict:
    """The export description in ``folder``, checked; errors name the file."""
    folder = Path(folder)
    if folder.is_file():
        raise InputError(folder, f"is a file; --runtime {runtime} needs the folder written by "
                                 f"`semirest export` (with {JSON_NAME} and {ONNX_NAME})")
    path = folder / JSON_NAME
    if not folder.is_dir():
        raise InputError(folder, "no such folder (the output of `semirest export`)")
    if not path.is_file():
        raise InputError(path, "missing: this folder is not an exported model "
                               "(write one with `semirest export --model M --out DIR`)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot be read as JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != EXPORT_FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise InputError(path, f"not a SemiREST export description (format {got!r}, expected "
                               f"{EXPORT_FORMAT!r})")
    need = ("onnx", "input", "map_scale", "map_floor", "thresholds", "method", "backbone")
    missing = [k for k in need if k not in meta]
    if missing:
        raise InputError(path, "export description is incomplete: missing " + ", ".join(map(repr, missing)))
    if runtime == "openvino" and not meta.get("openvino"):
        raise InputError(path, "this export has no OpenVINO model: export it with --format openvino")
    graph = folder / str(meta["openvino"] if runtime == "openvino" else meta["onnx"])
    if not graph.is_file():
        raise InputError(graph, f"missing: {JSON_NAME} refers to it")
    meta["_folder"] = str(folder)
    meta["_graph"] = str(graph)
    return meta


class ExportPredictor:
    """Runs an export with ONNX Runtime (CPUExecutionProvider) or OpenVINO (CPU, float32); the
    same interface as :class:`core.deploy.inference.Predictor` for what core.api.predict uses."""

    def __init__(self, folder: str | Path, runtime: str = "onnxruntime", threads: int | None = None):
        if runtime not in RUNTIMES[1:]:
            raise ExportError(f"runtime {runtime!r} is not available; choose one of {', '.join(RUNTIMES)}")
        self.runtime = runtime
        self.meta = read_export(folder, runtime)
        graph = Path(self.meta["_graph"])
        if runtime == "onnxruntime":
            self._run = _ort_runner(graph, threads)
        else:
            _require("openvino")
            try:
                self._run = _openvino_runner(str(graph), threads)
            except RuntimeError as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                raise InputError(graph, f"OpenVINO cannot load it, damaged or truncated? ({first})") from None
        self.input_wh = tuple(self.meta["input"]["size"])
        self.image_wh = tuple(self.meta.get("image_size", self.input_wh))
        self.calibration = {"map_scale": self.meta["map_scale"], "map_floor": self.meta["map_floor"],
                            "image_threshold": self.meta["thresholds"]["image"],
                            "pixel_threshold": self.meta["thresholds"]["pixel"]}
        self.other_sizes: set[tuple[int, int]] = set()
        # exports written before decision 0028 have no "contrast": their maps were never refined
        c = self.meta.get("contrast") or {}
        self.contrast, self.contrast_radius = float(c.get("beta", 0.0)), float(c.get("radius_blocks", 2.0))

    def summary(self) -> str:
        w, h = self.image_wh
        engine = "ONNX Runtime" if self.runtime == "onnxruntime" else "OpenVINO"
        if self.meta.get("quantize", "none") != "none":
            engine += f", {self.meta['quantize']} Swin"
        return (f"export {self.meta['_folder']} ({self.meta['method']}, backbone {self.meta['backbone']}, "
                f"for {w}x{h} images), {engine}")

    def predict_batch(self, imgs: list[np.ndarray], out_hws: list[tuple[int, int]] | None = None):
        """:meth:`predict` per image: the graph is exported for batch 1 (Predictor's interface)."""
        return [self.predict(img, None if out_hws is None else hw)
                for img, hw in zip(imgs, out_hws or [None] * len(imgs))]

    def predict(self, img: np.ndarray, out_hw: tuple[int, int] | None = None):
        """-> :class:`core.deploy.inference.Prediction` (block map, map at ``out_hw``, score, timings)."""
        import cv2

        from ..data.datasets import resize_to_input
        from ..eval.anomaly_map import refine_by_contrast
        from .inference import Prediction
        t0 = time.perf_counter()
        h0, w0 = img.shape[:2]
        if (w0, h0) != self.image_wh:
            # stretched to the export's input: the map is not what torch gives at this size
            self.other_sizes.add((w0, h0))
        x = resize_to_input(img, *self.input_wh)
        amap, score, block = self._run(np.ascontiguousarray(x[None]))
        amap = amap[0]
        # the one step outside the graph (see the JSON's "contrast")
        amap = refine_by_contrast(amap, img, block[0].shape, self.contrast, self.contrast_radius)
        if out_hw is not None and tuple(out_hw) != amap.shape:
            amap = cv2.resize(amap, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)
        ms = (time.perf_counter() - t0) * 1000
        return Prediction(block[0], amap, float(score[0]), {self.runtime: ms})


def load_runtime(model: str | Path, runtime: str, threads: int | None = None) -> ExportPredictor:
    return ExportPredictor(model, runtime, threads)
