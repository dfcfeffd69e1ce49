"""The labelling canvas: a plain QWidget that paints the image, the labels and the active tool.

It owns the view (zoom and pan) and routes mouse events, in image coordinates, to the active
tool; tools push undo commands through :meth:`Canvas.push`. It knows nothing of the store: the
labelling controller gives it a document and an undo stack and listens to ``activity`` for the
annotation timer. Painting is clipped to the exposed rectangle, so a brush dab on a 4000 x 4000
image repaints a few hundred pixels.
"""
from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRect, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPainterPath, QPen, QPolygonF, QUndoStack
from PySide6.QtWidgets import QSizePolicy, QWidget

from ..settings import BRUSH_RADIUS_DEFAULT, BRUSH_RADIUS_MAX, BRUSH_RADIUS_MIN
from ..shortcuts import PAN_BUTTON, PAN_KEY
from .document import LabelDocument, Rect
from .layers import LoadedImage, mask_overlay
from .tools import TOOL_NAMES, Tool, ToolEvent, make_tools
from .view import ViewTransform

BACKGROUND = QColor(38, 40, 44)
BOX_PEN = QColor(70, 200, 255)
BOX_SELECTED_PEN = QColor(255, 210, 0)
CELL_FILL = QColor(255, 150, 0, 120)
CELL_PEN = QColor(255, 150, 0, 220)
GRID_PEN = QColor(255, 255, 255, 70)
CONTOUR_PEN = QColor(255, 255, 255, 230)
TAG_COLORS = {"normal": QColor(40, 160, 70), "defective": QColor(210, 50, 50), None: QColor(90, 90, 90)}
WHEEL_ZOOM_BASE = 1.0015    # per wheel-delta unit: one notch (120) zooms by ~20 %


class Canvas(QWidget):
    activity = Signal()                 # any input on the canvas (annotation timer)
    zoomChanged = Signal(float)
    cursorMoved = Signal(float, float)  # image px
    brushRadiusChanged = Signal(int)
    toolChanged = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self.view = ViewTransform()
        self.image: LoadedImage | None = None
        self.document: LabelDocument | None = None
        self.undo_stack: QUndoStack | None = None
        self._overlay = None
        self.heat = None                    # app.viewer.heat.HeatLayer of the shown image, or None
        self.show_labels = True             # the review toggle: labels over the heatmap, or not
        self._message = "No project open"
        self._brush_radius = BRUSH_RADIUS_DEFAULT
        self.show_grid = False
        self.tools: dict[str, Tool] = make_tools(self)
        self.tool: Tool = self.tools["box"]
        self._fit_mode = True
        self._pan_from: QPointF | None = None
        self._space = False

    # ---- content ----------------------------------------------------------------------------------
    def set_content(self, image: LoadedImage | None, document: LabelDocument | None,
                    undo_stack: QUndoStack | None) -> None:
        self.tool.deactivate()
        if self.document is not None:
            self.document.remove_listener(self._on_document_changed)
        if self.image is None or image is None or image.image_id != self.image.image_id:
            self.heat = None
        self.image, self.document, self.undo_stack = image, document, undo_stack
        self._overlay = None if document is None else mask_overlay(document.mask)
        if document is not None:
            document.add_listener(self._on_document_changed)
        self._message = ""
        if image is not None and (self._fit_mode or self.view.scale <= 0):
            self.fit()
        self.update()

    def show_message(self, text: str) -> None:
        """Shown instead of an image: no project, loading, or why an image cannot be shown."""
        self.set_content(None, None, None)
        self._message = text
        self.update()

    def set_heat(self, layer) -> None:
        """Show a heatmap layer over the image (None: none). The viewer sets it per image."""
        self.heat = layer
        self.update()

    def has_image(self) -> bool:
        return self.image is not None and self.document is not None

    def _on_document_changed(self, kind: str, rect: Rect | None) -> None:
        if kind == "mask" and rect is not None:
            self.update_image_rect(rect)
        else:
            self.update()

    # ---- tools ------------------------------------------------------------------------------------
    def set_tool(self, name: str) -> None:
        if name not in TOOL_NAMES:
            raise ValueError(f"unknown tool {name!r}")
        if self.tool.name == name:
            return
        self.tool.deactivate()
        self.tool = self.tools[name]
        self.setCursor(self.tool.cursor)
        self.toolChanged.emit(name)
        self.update()

    @property
    def brush_radius(self) -> int:
        return self._brush_radius

    def set_brush_radius(self, r: int) -> None:
        r = int(min(BRUSH_RADIUS_MAX, max(BRUSH_RADIUS_MIN, r)))
        if r != self._brush_radius:
            self._brush_radius = r
            self.brushRadiusChanged.emit(r)
            self.update()

    def grow_brush(self, bigger: bool) -> None:
        r = self._brush_radius
        self.set_brush_radius(max(r + 1, round(r * 1.25)) if bigger else min(r - 1, round(r / 1.25)))

    def push(self, command) -> None:
        if self.undo_stack is not None:
            self.undo_stack.push(command)

    def busy(self) -> bool:
        return self.tool.busy() or self._pan_from is not None

    # ---- view -------------------------------------------------------------------------------------
    def fit(self) -> None:
        if self.image is None:
            return
        self.view.fit(self.image.width, self.image.height, self.width(), self.height())
        self._fit_mode = True
        self.zoomChanged.emit(self.view.scale)
        self.update()

    def zoom(self, factor: float, anchor: QPointF | None = None) -> None:
        if self.image is None:
            return
        anchor = anchor if anchor is not None else QPointF(self.width() / 2, self.height() / 2)
        self.view.zoom_at(anchor.x(), anchor.y(), factor)
        self._fit_mode = False
        self.zoomChanged.emit(self.view.scale)
        self.update()

    def set_scale(self, scale: float) -> None:
        self.zoom(scale / self.view.scale)

    def resizeEvent(self, event) -> None:
        if self._fit_mode:
            self.fit()
        super().resizeEvent(event)

    def widget_rect(self, x0: float, y0: float, x1: float, y1: float, margin: float = 2) -> QRect:
        ax, ay = self.view.to_widget(x0, y0)
        bx, by = self.view.to_widget(x1, y1)
        return QRect(math.floor(min(ax, bx) - margin), math.floor(min(ay, by) - margin),
                     math.ceil(abs(bx - ax) + 2 * margin) + 1, math.ceil(abs(by - ay) + 2 * margin) + 1)

    def update_image_rect(self, rect: Rect) -> None:
        self.update(self.widget_rect(*rect))

    def update_around(self, p: tuple[float, float], radius: float) -> None:
        self.update(self.widget_rect(p[0] - radius, p[1] - radius, p[0] + radius + 1, p[1] + radius + 1, 4))

    # ---- input ------------------------------------------------------------------------------------
    def _event(self, e) -> ToolEvent:
        pos = e.position()
        x, y = self.view.to_image(pos.x(), pos.y())
        return ToolEvent(x, y, pos.x(), pos.y(), e.modifiers())

    def mousePressEvent(self, e) -> None:
        self.setFocus(Qt.FocusReason.MouseFocusReason)
        self.activity.emit()
        left = e.button() == Qt.MouseButton.LeftButton
        if e.button() == PAN_BUTTON or (left and (self._space or self.tool.pans_with_left_button)):
            self._pan_from = e.position()
            self.setCursor(Qt.CursorShape.ClosedHandCursor)
        elif left and self.has_image():
            self.tool.press(self._event(e))

    def mouseMoveEvent(self, e) -> None:
        self.activity.emit()
        ev = self._event(e)
        self.cursorMoved.emit(ev.x, ev.y)
        if self._pan_from is not None:
            d = e.position() - self._pan_from
            self._pan_from = e.position()
            self.view.pan(d.x(), d.y())
            self._fit_mode = False
            self.update()
        elif not self.has_image():
            return
        elif e.buttons() & Qt.MouseButton.LeftButton:
            self.tool.move(ev)
        else:
            self.tool.hover(ev)

    def mouseReleaseEvent(self, e) -> None:
        self.activity.emit()
        if self._pan_from is not None and e.button() in (PAN_BUTTON, Qt.MouseButton.LeftButton):
            self._pan_from = None
            self.setCursor(Qt.CursorShape.OpenHandCursor if self._space else self.tool.cursor)
        elif e.button() == Qt.MouseButton.LeftButton and self.has_image():
            self.tool.release(self._event(e))

    def mouseDoubleClickEvent(self, e) -> None:
        self.activity.emit()
        if e.button() == Qt.MouseButton.LeftButton and self.has_image():
            self.tool.double_click(self._event(e))

    def wheelEvent(self, e) -> None:
        self.activity.emit()
        delta = e.angleDelta().y() or e.pixelDelta().y()
        if delta:
            self.zoom(WHEEL_ZOOM_BASE ** delta, e.position())
        e.accept()

    def keyPressEvent(self, e) -> None:
        self.activity.emit()
        if e.key() == PAN_KEY and not e.isAutoRepeat():
            self._space = True
            self.setCursor(Qt.CursorShape.OpenHandCursor)
            return
        super().keyPressEvent(e)

    def keyReleaseEvent(self, e) -> None:
        if e.key() == PAN_KEY and not e.isAutoRepeat():
            self._space = False
            self.setCursor(self.tool.cursor)
            return
        super().keyReleaseEvent(e)

    def leaveEvent(self, e) -> None:
        leave = getattr(self.tool, "leave", None)
        if leave:
            leave()
        super().leaveEvent(e)

    # ---- painting ---------------------------------------------------------------------------------
    def paintEvent(self, event) -> None:
        p = QPainter(self)
        clip = event.rect()
        p.fillRect(clip, BACKGROUND)
        if not self.has_image():
            p.setPen(QColor(200, 200, 200))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self._message)
            return
        self._paint_pixels(p, clip)
        if self.show_labels:
            self._paint_blocks(p)
            self._paint_boxes(p)
        self.tool.paint(p)
        self._paint_tag(p)

    def _paint_pixels(self, p: QPainter, clip: QRect) -> None:
        """The image (from the pyramid level near screen size), the heatmap, and the mask over
        them, exposed part only."""
        img, view = self.image, self.view
        x0, y0 = view.to_image(clip.left(), clip.top())
        x1, y1 = view.to_image(clip.right() + 1, clip.bottom() + 1)
        x0, y0 = max(0.0, math.floor(x0)), max(0.0, math.floor(y0))
        x1, y1 = min(float(img.width), math.ceil(x1)), min(float(img.height), math.ceil(y1))
        if x0 >= x1 or y0 >= y1:
            return
        tx, ty = view.to_widget(x0, y0)
        target = QRectF(tx, ty, (x1 - x0) * view.scale, (y1 - y0) * view.scale)
        f, level = img.level_for(view.scale)
        # Zoomed in, pixels stay crisp squares (inspection wants to see them); zoomed out, smooth.
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, view.scale * f < 1.0)
        p.drawImage(target, level, QRectF(x0 / f, y0 / f, (x1 - x0) / f, (y1 - y0) / f))
        self._paint_heat(p)
        if self._overlay is not None and self.show_labels:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
            p.drawImage(target, self._overlay, QRectF(x0, y0, x1 - x0, y1 - y0))

    def _paint_heat(self, p: QPainter) -> None:
        """The heatmap stretched over the whole image (smoothed, or crisp cells), then the outline
        of the pixels over the pixel threshold."""
        heat, view = self.heat, self.view
        if heat is None:
            return
        x0, y0 = view.to_widget(0, 0)
        target = QRectF(x0, y0, self.image.width * view.scale, self.image.height * view.scale)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, heat.smooth)
        p.drawImage(target, heat.image)
        if not heat.contours.isEmpty():
            p.save()
            p.translate(x0, y0)
            p.scale(view.scale, view.scale)
            p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
            pen = QPen(CONTOUR_PEN, 1.6)
            pen.setCosmetic(True)
            p.setPen(pen)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawPath(heat.contours)
            p.restore()

    def _paint_blocks(self, p: QPainter) -> None:
        doc, view = self.document, self.view
        grid = doc.grid
        block_tool = self.tools["block"]
        cells = block_tool.cells()
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        if cells:
            path = QPainterPath()
            for r, c in cells:
                x0, y0, x1, y1 = grid.block_rect(r, c)
                ax, ay = view.to_widget(x0, y0)
                path.addRect(QRectF(ax, ay, (x1 - x0) * view.scale, (y1 - y0) * view.scale))
            p.setPen(QPen(CELL_PEN, 1))
            p.setBrush(QBrush(CELL_FILL))
            p.drawPath(path.simplified())
        if not (self.tool is block_tool or self.show_grid):
            return
        if min(grid.block_w, grid.block_h) * view.scale < 4:   # denser than 4 px: lines would be noise
            return
        p.setPen(QPen(GRID_PEN, 1))
        left, top = view.to_widget(0, 0)
        right, bottom = view.to_widget(grid.width, grid.height)
        c0 = max(0, int(view.to_image(0, 0)[0] // grid.block_w))
        c1 = min(grid.cols, int(view.to_image(self.width(), 0)[0] // grid.block_w) + 1)
        for c in range(c0, c1 + 1):
            x = view.to_widget(c * grid.block_w, 0)[0]
            p.drawLine(QPointF(x, top), QPointF(x, bottom))
        r0 = max(0, int(view.to_image(0, 0)[1] // grid.block_h))
        r1 = min(grid.rows, int(view.to_image(0, self.height())[1] // grid.block_h) + 1)
        for r in range(r0, r1 + 1):
            y = view.to_widget(0, r * grid.block_h)[1]
            p.drawLine(QPointF(left, y), QPointF(right, y))

    def _paint_boxes(self, p: QPainter) -> None:
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        for box, selected in self.tools["box"].display_boxes():
            poly = QPolygonF([QPointF(*self.view.to_widget(x, y)) for x, y in box.corners()])
            p.setPen(QPen(QColor(0, 0, 0, 150), 3.5))
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawPolygon(poly)
            color = BOX_SELECTED_PEN if selected else BOX_PEN
            fill = QColor(color)
            fill.setAlpha(35)
            p.setPen(QPen(color, 1.8))
            p.setBrush(fill)
            p.drawPolygon(poly)

    def _paint_tag(self, p: QPainter) -> None:
        """The image tag, big in the top-left corner: it decides a whole image's label."""
        tag = self.document.tag
        text = {"normal": "NORMAL", "defective": "DEFECTIVE", None: "no tag"}[tag]
        font = QFont(self.font())
        font.setBold(True)
        font.setPointSizeF(15 if tag else 10)
        p.setFont(font)
        fm = p.fontMetrics()
        rect = QRectF(10, 10, fm.horizontalAdvance(text) + 24, fm.height() + 12)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        p.setPen(Qt.PenStyle.NoPen)
        color = QColor(TAG_COLORS[tag])
        color.setAlpha(225)
        p.setBrush(color)
        p.drawRoundedRect(rect, 6, 6)
        p.setPen(QColor(255, 255, 255))
        p.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
