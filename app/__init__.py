"""SemiREST Studio desktop application (PySide6). Holds no numerical method: it calls ``core``."""

# Before anything touches Qt: PySide6 6.12 on CPython < 3.12 steals references to None and True
# on every call (see _refcount_guard); without this the app aborts after seconds of use.
from . import _refcount_guard  # noqa: E402,F401
