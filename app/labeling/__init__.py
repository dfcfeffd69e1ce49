"""Labelling: the controller between canvas and store, the image list, and annotation timing.

Module map (see docs/decisions/0002-labelling-canvas.md and 0003-annotation-timing.md):

- ``controller``: binds the store, the canvas, the undo stacks and the annotation timer.
- ``image_list``: thumbnails, status and split, score, filters and sorting, "next to label".
- ``thumbnails``: thumbnails loaded lazily in the background.
- ``timing``: active annotation seconds per image and label kind (pure Python, injectable clock).
- ``timing_report``: the timing exports (per-image CSV, summary CSV, the bar chart).
- ``next_label``: which image a label would help most, from what the project stores. No Qt.

The canvas itself (a plain QWidget, its shape model and one module per tool) is ``app.canvas``.
"""
