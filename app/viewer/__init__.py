"""Reviewing a model's heatmaps: overlays, thresholds and histogram, scoring in the background,
inspection of new parts, reports, the review loop and the label-budget plot.

Module map (see docs/decisions/0009-viewer-and-review.md):

- ``scoring``: run a model over project images in a worker thread; cache score + block map. No Qt.
- ``heat``: the overlay layer (fixed per-model scale, colormap, block or smoothed view, pixel
  threshold contour) as a QImage for the canvas.
- ``histogram``: the score histogram with the draggable image-threshold line.
- ``report``: the CSV report and overlay PNGs. No Qt.
- ``budget``: the label-budget plot (accuracy against annotation seconds, one point per model).
- ``panel``: the Review panel's widgets; ``controller``: glue between store, canvas, list, panel.
"""
