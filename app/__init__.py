"""SemiREST Studio desktop application (PySide6). Holds no numerical method: it calls ``core``.

The three parts of the product, one wing each:

- ``project/``: the project on disk: store, runs and models, import, export (no Qt);
- ``labeling/`` with ``canvas/``: drawing labels, the image list, annotation timing;
- ``training/``: the Train panel and the worker process; ``viewer/``: reviewing heatmaps,
  thresholds, inspection of new parts, reports and the label budget.

Around them: ``main_window`` (assembles the window), ``project_docks`` and ``project_flows``
(the docks and the open/new/import flows), ``dialogs/``, ``actions``, ``shortcuts``,
``settings``, ``workers`` (background jobs), ``demo`` and ``resources``.
"""
