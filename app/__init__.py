"""SemiREST Studio desktop application (PySide6). Holds no numerical method: it calls ``core``."""
