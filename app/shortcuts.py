"""Every shortcut of the app, in one table: the window builds its QActions from :data:`SHORTCUTS`
and the help dialog lists :data:`SHORTCUTS` and :data:`MOUSE`, so the two can never disagree.

Keys are QKeySequence strings. Single-letter keys only fire when no text field has the focus
(Qt's ShortcutOverride lets a focused line edit keep its typing).
"""
from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import Qt


@dataclass(frozen=True)
class Shortcut:
    action: str              # id: the window binds a handler of this name
    keys: tuple[str, ...]    # first one is shown in menus
    text: str                # menu text and help description
    group: str               # menu / help section
    checkable: bool = False
    short: str = ""          # toolbar text, when the action is on the toolbar


SHORTCUTS: tuple[Shortcut, ...] = (
    # Project
    Shortcut("new_project", ("Ctrl+N",), "&New project…", "Project"),
    Shortcut("open_project", ("Ctrl+O",), "&Open project…", "Project"),
    Shortcut("import_folder", ("Ctrl+I",), "&Import a folder of images…", "Project"),
    Shortcut("import_mvtec", ("Ctrl+Shift+I",), "Import an &MVTec-layout dataset…", "Project"),
    Shortcut("export_labels", ("Ctrl+E",), "&Export labels…", "Project"),
    Shortcut("export_timing", ("Ctrl+Shift+E",), "Export annotation &timing…", "Project"),
    Shortcut("write_label_files", (), "&Write per-image label JSON (for training)", "Project"),
    Shortcut("project_settings", ("Ctrl+,",), "Project &settings…", "Project"),
    Shortcut("quit", ("Ctrl+Q",), "&Quit", "Project"),
    # Edit
    Shortcut("undo", ("Ctrl+Z",), "&Undo", "Edit", short="Undo"),
    Shortcut("redo", ("Ctrl+Shift+Z", "Ctrl+Y"), "&Redo", "Edit", short="Redo"),
    Shortcut("delete", ("Delete", "Backspace"), "Delete the selected box / the last polygon point", "Edit"),
    Shortcut("finish", ("Return", "Enter"), "Close the polygon and fill it", "Edit"),
    Shortcut("cancel", ("Escape",), "Cancel the shape in progress, deselect", "Edit"),
    # Tools
    Shortcut("tool_brush", ("B",), "&Brush (pixel mask)", "Tools", checkable=True, short="Brush"),
    Shortcut("tool_eraser", ("E",), "&Eraser (pixel mask)", "Tools", checkable=True, short="Eraser"),
    Shortcut("tool_polygon", ("P",), "&Polygon fill (pixel mask)", "Tools", checkable=True, short="Polygon"),
    Shortcut("tool_block", ("K",), "Bloc&ks on the model's grid", "Tools", checkable=True, short="Blocks"),
    Shortcut("tool_box", ("R",), "&Rotated box", "Tools", checkable=True, short="Box"),
    Shortcut("tool_tag", ("T",), "Image &tag only (left drag pans)", "Tools", checkable=True, short="Tag"),
    Shortcut("brush_smaller", ("[",), "Smaller brush / eraser", "Tools"),
    Shortcut("brush_bigger", ("]",), "Bigger brush / eraser", "Tools"),
    # Labels
    Shortcut("tag_normal", ("1",), "Tag the image &normal", "Labels", short="Normal"),
    Shortcut("tag_defective", ("2",), "Tag the image &defective", "Labels", short="Defective"),
    Shortcut("tag_clear", ("0",), "&Clear the image tag", "Labels", short="No tag"),
    Shortcut("split_train", ("Alt+1",), "Put selected images in the &train split", "Labels"),
    Shortcut("split_test", ("Alt+2",), "Put selected images in the t&est split", "Labels"),
    Shortcut("split_val", ("Alt+3",), "Put selected images in the &val split", "Labels"),
    Shortcut("remove_images", ("Shift+Del",), "Re&move selected images from the project…", "Labels"),
    # Navigate
    Shortcut("next_image", ("D", "PgDown"), "&Next image", "Navigate", short="Next"),
    Shortcut("prev_image", ("A", "PgUp"), "&Previous image", "Navigate", short="Previous"),
    Shortcut("next_unlabelled", ("U",), "Next &unlabelled image", "Navigate"),
    Shortcut("next_to_label", ("J",), "Next image to label (&jump to where a label helps most)", "Navigate"),
    Shortcut("next_flagged", (".",), "Next &flagged image (score over the image threshold)", "Navigate"),
    Shortcut("prev_flagged", (",",), "Previous flagged image", "Navigate"),
    Shortcut("focus_list", ("Ctrl+L",), "Focus the image &list (then Up/Down)", "Navigate"),
    # View
    Shortcut("zoom_in", ("Ctrl++", "Ctrl+=", "+"), "Zoom &in", "View"),
    Shortcut("zoom_out", ("Ctrl+-", "-"), "Zoom &out", "View"),
    Shortcut("zoom_fit", ("F", "Ctrl+0"), "&Fit the image to the window", "View", short="Fit"),
    Shortcut("zoom_actual", ("Ctrl+1",), "&Actual pixels (100%)", "View"),
    Shortcut("toggle_grid", ("G",), "Show the block &grid in every tool", "View", checkable=True),
    # Model: train, review
    Shortcut("train", ("Ctrl+T",), "&Train a model (Train panel settings)", "Model"),
    Shortcut("cancel_training", (), "&Cancel training", "Model"),
    Shortcut("retrain", ("Ctrl+Shift+T",), "&Retrain with corrections (from the review model)", "Model"),
    Shortcut("score_images", ("Ctrl+R",), "&Score images with the review model", "Model"),
    Shortcut("inspect_folder", ("Ctrl+Shift+O",), "&Inspect a folder of new parts…", "Model"),
    Shortcut("export_report", ("Ctrl+Shift+R",), "E&xport the review report and overlays…", "Model"),
    Shortcut("review_normal", ("N",), "False alarm: tag &normal and go to the next flagged image", "Model"),
    Shortcut("toggle_heatmap", ("H",), "Show / hide the &heatmap", "Model"),
    Shortcut("toggle_labels", ("L",), "Show / hide the &labels over the heatmap", "Model"),
    Shortcut("toggle_heat_view", ("V",), "Heatmap &view: smoothed / block grid", "Model"),
    Shortcut("label_budget", (), "Label &budget plot…", "Model"),
    # Help
    Shortcut("help", ("F1",), "&Keyboard and mouse shortcuts", "Help"),
)

SHORTCUT_BY_ACTION = {s.action: s for s in SHORTCUTS}

# Mouse gestures and held modifiers: handled inside the canvas, listed in the help dialog.
SNAP_DEGREES = 15.0
SNAP_MODIFIER = Qt.KeyboardModifier.ShiftModifier
PAN_KEY = Qt.Key.Key_Space
PAN_BUTTON = Qt.MouseButton.MiddleButton
MOUSE: tuple[tuple[str, str], ...] = (
    ("Wheel", "Zoom at the cursor"),
    ("Middle drag, or Space + left drag", "Pan"),
    ("Brush / eraser: left drag", "Paint / erase the pixel mask (circle shows the size)"),
    ("Polygon: click points, click the first point or double-click", "Close and fill the polygon"),
    ("Blocks: click or drag", "Toggle blocks; a drag paints the state of the first block"),
    ("Box: drag on empty image", "Draw a box (axis-aligned; rotate it afterwards)"),
    ("Box: drag inside / on a square handle", "Move / resize the selected box"),
    ("Box: drag the round handle above the box", "Rotate it"),
    ("Shift while rotating", f"Snap the angle to {SNAP_DEGREES:g} degrees"),
)


def tool_action(tool: str) -> str:
    return f"tool_{tool}"
