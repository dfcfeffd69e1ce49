"""SemiREST core: the method as a library, with no Qt in it.

Kept import-light on purpose (no torch here) so that ``core.data.labels`` and ``core.data.geometry`` can be
used by the app and by tools without paying for the deep-learning stack. The pipeline API lives in
:mod:`core.api`.
"""
__version__ = "0.1.0"
