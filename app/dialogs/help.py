"""The shortcuts dialog, generated from app.shortcuts (the table the actions are built from)."""
from __future__ import annotations

import html

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout

from ..shortcuts import MOUSE, SHORTCUTS


def shortcuts_html() -> str:
    parts = ["<h2>Keyboard</h2>"]
    group = None
    for s in SHORTCUTS:
        if not s.keys:
            continue
        if s.group != group:
            if group is not None:
                parts.append("</table>")
            group = s.group
            parts.append(f"<h3>{html.escape(group)}</h3><table cellpadding='3'>")
        keys = ", ".join(QKeySequence(k).toString(QKeySequence.SequenceFormat.NativeText) for k in s.keys)
        parts.append(f"<tr><td width='190'><b>{html.escape(keys)}</b></td>"
                     f"<td>{html.escape(s.text.replace('&', '').rstrip('…'))}</td></tr>")
    parts.append("</table><h2>Mouse</h2><table cellpadding='3'>")
    for gesture, what in MOUSE:
        parts.append(f"<tr><td width='190'><b>{html.escape(gesture)}</b></td><td>{html.escape(what)}</td></tr>")
    parts.append("</table>")
    return "".join(parts)


class ShortcutsDialog(QDialog):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Shortcuts")
        self.resize(560, 640)
        self.browser = QTextBrowser()
        self.browser.setHtml(shortcuts_html())
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.browser)
        lay.addWidget(buttons)
