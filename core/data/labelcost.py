"""Expected annotation seconds of a label from its geometry: a keystroke-level model (no torch).

Labels that arrive without measured seconds (imported from files, seeded by the demo, made from
ground truth by the evaluation protocols) get an *estimate* from this model, flagged as estimated
wherever it is stored, so accuracy can be plotted against labelling seconds without a person.

One linear model per label kind, in the spirit of Card, Moran and Newell's keystroke-level model
(a fixed cost per image for finding and judging the defect, plus a cost per drawing act):

- **mask**: ``base + per_component * components + per_outline_px * outline``. Drawing a pixel
  mask is tracing its outline; ``outline`` is the perimeter of the 8-connected components in
  pixels *at a reference display size* (the image shown with its longer side at
  :data:`REFERENCE_DISPLAY_PX`), because a person traces what the screen shows, not the sensor's
  pixels. Each component costs a zoom-in, a brush or polygon start and a check.
- **blocks**: ``base + per_run * runs + per_cell * cells``. One drag paints a horizontal run of
  cells; a click per cell costs less than a new drag.
- **boxes**: ``base + per_box * boxes``: each rotated box is a drag, a rotation and a check.
- **tag**: a constant (a key press after judging the image).

Priors (used until a project has measured enough of its own): the SemiREST paper's Fig. 6 gives
the mean labelling time per defective image: rotated boxes about 5 s, blocks about 17 s, pixel
masks 32 s or more. The coefficients below are chosen so that a typical defective image of the
paper's data (one defect region, about 400 display px of outline covering about 20 block cells in
6 runs) costs those means; the split between base and per-item cost is our assumption, not the
paper's measurement. The tag's 2 s is an assumption too (Fig. 6 has no tag bar): one judgement and
one key press.

Calibration (:func:`calibrate`): with at least ``min_images`` measured images of a kind, every
coefficient of that kind is multiplied by one robust scale factor, the median of measured /
predicted seconds. A handful of images cannot pin three coefficients by least squares (the fit
swings with one slow image), but one factor they can: it says "this team labels 1.4x slower than
the paper's annotators", and keeps the shape of the model.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field, replace
from typing import Iterable

import cv2
import numpy as np

REFERENCE_DISPLAY_PX = 1024      # longer image side on screen when the outline is measured
MIN_MEASURED_IMAGES = 5          # measured images of a kind before its prior is replaced
ESTIMATED_KINDS = ("mask", "blocks", "boxes", "tag")


@dataclass(frozen=True)
class MaskCost:
    base_s: float = 6.0                # find, judge, pick the tool (Fig. 6: masks >= 32 s per image)
    per_component_s: float = 10.0      # zoom to the region, start a stroke or polygon, check
    per_outline_px_s: float = 0.04     # tracing at about 25 display px per second
    scale: float = 1.0


@dataclass(frozen=True)
class BlockCost:
    base_s: float = 2.0                # Fig. 6: blocks about 17 s per image
    per_run_s: float = 1.5             # one drag over a row of cells
    per_cell_s: float = 0.3            # each cell the drag has to reach, and the check
    scale: float = 1.0


@dataclass(frozen=True)
class BoxCost:
    base_s: float = 1.0                # Fig. 6: boxes about 5 s per image
    per_box_s: float = 4.0             # drag, rotate, adjust
    scale: float = 1.0


@dataclass(frozen=True)
class TagCost:
    seconds: float = 2.0               # one judgement and one key press (our assumption)
    scale: float = 1.0


@dataclass(frozen=True)
class LabelGeometry:
    """What the cost of one kind of label of one image depends on."""

    kind: str
    components: int = 0        # mask: 8-connected components
    outline_px: float = 0.0    # mask: perimeter at the reference display size
    cells: int = 0             # blocks: marked cells
    runs: int = 0              # blocks: horizontal runs of marked cells (one drag each)
    boxes: int = 0             # boxes: how many


@dataclass(frozen=True)
class LabelCostModel:
    mask: MaskCost = MaskCost()
    blocks: BlockCost = BlockCost()
    boxes: BoxCost = BoxCost()
    tag: TagCost = TagCost()
    # kind -> where its coefficients come from: "Fig. 6 prior" or "calibrated on N measured images"
    basis: dict[str, str] = field(default_factory=lambda: {k: "Fig. 6 prior" for k in ESTIMATED_KINDS})

    def seconds(self, g: LabelGeometry) -> float:
        """Expected seconds to draw ``g`` (0 for a label with nothing in it)."""
        if g.kind == "mask":
            c = self.mask
            if g.components <= 0:
                return 0.0
            return c.scale * (c.base_s + c.per_component_s * g.components + c.per_outline_px_s * g.outline_px)
        if g.kind == "blocks":
            c = self.blocks
            return 0.0 if g.cells <= 0 else c.scale * (c.base_s + c.per_run_s * g.runs + c.per_cell_s * g.cells)
        if g.kind == "boxes":
            c = self.boxes
            return 0.0 if g.boxes <= 0 else c.scale * (c.base_s + c.per_box_s * g.boxes)
        if g.kind == "tag":
            return self.tag.scale * self.tag.seconds
        raise ValueError(f"no cost model for label kind {g.kind!r} (expected one of {ESTIMATED_KINDS})")

    def estimate(self, label, tag_key: str = "tag", normal_tags: bool = False) -> dict[str, float]:
        """Expected seconds per kind of every kind ``label`` (a core ImageLabel) carries, rounded
        to ms. ``tag_key``: the key a tag's seconds go under ("checked" in the app, where giving
        a verdict is booked as checking, docs/decisions/0003). ``normal_tags``: also estimate a
        "normal" tag (off: collecting normal images is the method's free input, and an MVTec
        import tags hundreds of them without anyone judging each)."""
        out = {}
        for g in label_geometry(label):
            if g.kind == "tag" and label.tag == "normal" and not normal_tags:
                continue
            s = self.seconds(g)
            if s > 0:
                key = tag_key if g.kind == "tag" else g.kind
                out[key] = round(out.get(key, 0.0) + s, 3)
        return out

    def describe(self) -> str:
        return "; ".join(f"{k}: {self.basis.get(k, '?')}" for k in ESTIMATED_KINDS)


PRIOR = LabelCostModel()


def _mask_geometry(mask: np.ndarray) -> LabelGeometry:
    m = np.asarray(mask).astype(np.uint8)
    if not m.any():
        return LabelGeometry("mask")
    n, _ = cv2.connectedComponents(m, connectivity=8)
    contours, _ = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)   # holes traced too
    outline = sum(cv2.arcLength(c, True) for c in contours)
    # a one-pixel speck has a zero-length contour but is still a dab to draw: count its sides
    outline = max(outline, 4.0 * (n - 1))
    return LabelGeometry("mask", components=int(n) - 1,
                         outline_px=float(outline) * REFERENCE_DISPLAY_PX / max(m.shape))


def _block_geometry(cells: Iterable[tuple[int, int]]) -> LabelGeometry:
    cells = sorted({(int(r), int(c)) for r, c in cells})
    runs = sum(1 for i, (r, c) in enumerate(cells) if i == 0 or cells[i - 1] != (r, c - 1))
    return LabelGeometry("blocks", cells=len(cells), runs=runs)


def label_geometry(label) -> list[LabelGeometry]:
    """The geometry of each kind a core ImageLabel carries (empty kinds left out)."""
    out = []
    if label.mask is not None and np.asarray(label.mask).any():
        out.append(_mask_geometry(label.mask))
    if label.blocks is not None and label.blocks.cells:
        out.append(_block_geometry(label.blocks.cells))
    if label.boxes:
        out.append(LabelGeometry("boxes", boxes=len(label.boxes)))
    if label.tag is not None:
        out.append(LabelGeometry("tag"))
    return out


def calibrate(measured: Iterable[tuple[LabelGeometry, float]], prior: LabelCostModel = PRIOR,
              min_images: int = MIN_MEASURED_IMAGES) -> LabelCostModel:
    """``prior`` with each kind scaled to the project's own measured seconds, where it has at
    least ``min_images`` measured images of that kind (one (geometry, seconds) pair per image and
    kind; pairs with no time or nothing drawn are ignored)."""
    ratios: dict[str, list[float]] = {}
    for g, secs in measured:
        predicted = prior.seconds(g)
        if secs > 0 and predicted > 0:
            ratios.setdefault(g.kind, []).append(secs / predicted)
    model, basis = prior, dict(prior.basis)
    for kind, rs in ratios.items():
        if len(rs) < min_images:
            continue
        factor = statistics.median(rs)
        part = getattr(model, kind)
        model = replace(model, **{kind: replace(part, scale=part.scale * factor)})
        basis[kind] = f"calibrated on {len(rs)} measured images (x{factor:.2f} the Fig. 6 prior)"
    return replace(model, basis=basis)


def measured_in(labels) -> list[tuple[LabelGeometry, float]]:
    """(geometry, measured seconds) from labels that carry seconds: the total less the estimated
    part, per kind (a tag's time under "tag" or "checked", as the app books a verdict)."""
    out = []
    for lab in labels:
        measured = {k: v - lab.seconds_estimated.get(k, 0.0) for k, v in lab.seconds.items()}
        measured["tag"] = measured.get("tag", 0.0) + measured.pop("checked", 0.0)
        for g in label_geometry(lab):
            if measured.get(g.kind, 0.0) > 1e-3:
                out.append((g, measured[g.kind]))
    return out


def fill_estimates(labels, min_images: int = MIN_MEASURED_IMAGES) -> LabelCostModel:
    """Give each label's kinds that carry no seconds the model's estimate, flagged estimated
    (``seconds_estimated``); the model is calibrated on the measured seconds the labels carry,
    where there are enough. Seconds already there are kept. Returns the model used."""
    labels = list(labels)
    model = calibrate(measured_in(labels), min_images=min_images)
    for lab in labels:
        have = set(lab.seconds)
        if "checked" in have:
            have.add("tag")
        for kind, s in model.estimate(lab).items():
            if kind not in have:
                lab.seconds[kind] = s
                lab.seconds_estimated[kind] = s
    return model
