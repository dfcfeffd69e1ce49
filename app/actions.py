"""QActions, menus and the toolbar, built from the one shortcut table (app.shortcuts)."""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMainWindow, QToolBar

from . import resources
from .shortcuts import SHORTCUTS

MENU_ORDER = ("Project", "Edit", "Tools", "Labels", "Navigate", "View", "Model", "Help")
TOOLBAR = ("tool_brush", "tool_eraser", "tool_polygon", "tool_block", "tool_box", "tool_tag", None,
           "tag_normal", "tag_defective", "tag_clear", None, "undo", "redo", None, "prev_image",
           "next_image", "zoom_fit")


def build_actions(window: QMainWindow, handlers: dict[str, Callable]) -> dict[str, QAction]:
    """One QAction per table row, bound to ``handlers[action]``; tools form an exclusive group."""
    actions: dict[str, QAction] = {}
    tools = QActionGroup(window)
    tools.setExclusive(True)
    for s in SHORTCUTS:
        a = QAction(s.text, window)
        a.setShortcuts([QKeySequence(k) for k in s.keys])
        a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        a.setCheckable(s.checkable)
        keys = ", ".join(QKeySequence(k).toString(QKeySequence.SequenceFormat.NativeText) for k in s.keys)
        plain = s.text.replace("&", "").rstrip("…")
        a.setToolTip(f"{plain} ({keys})" if keys else plain)
        icon = resources.icon(s.action)
        if icon is not None:
            a.setIcon(icon)
        if s.short:
            a.setIconText(s.short)
        if s.action.startswith("tool_"):
            tools.addAction(a)
        handler = handlers.get(s.action)
        if handler is None:
            raise KeyError(f"no handler for action {s.action!r}")
        a.triggered.connect(lambda checked=False, h=handler: h())
        window.addAction(a)      # shortcuts work even when the menu bar is hidden
        actions[s.action] = a
    return actions


def build_menus(window: QMainWindow, actions: dict[str, QAction]) -> None:
    menus = {g: window.menuBar().addMenu(g) for g in MENU_ORDER}
    for s in SHORTCUTS:
        menus[s.group].addAction(actions[s.action])


def build_toolbar(window: QMainWindow, actions: dict[str, QAction]) -> QToolBar:
    bar = QToolBar("Tools", window)
    bar.setObjectName("tools")
    bar.setMovable(False)
    bar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    for name in TOOLBAR:
        if name is None:
            bar.addSeparator()
        else:
            bar.addAction(actions[name])
    window.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
    return bar
