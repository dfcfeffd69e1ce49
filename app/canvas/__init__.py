"""The labelling canvas: a plain QWidget with its own paintEvent (canvas.py), a shape model with
no Qt in it (document.py, box_geometry.py, view.py), one module per tool (tools/), and the undo
commands (commands.py)."""
