"""The project: one folder on disk with its database, images, labels, runs and models. No Qt.

Module map (see docs/decisions/0001-project-store.md and 0004-importing-images.md):

- ``store``: the project store (SQLite in WAL mode, atomic edits, several writers), images and
  labels; ``store.runs`` is the ``runs`` component.
- ``runs``: training runs, trained models and cached predictions (block maps and scores).
- ``schema``: the database schema and its migrations.
- ``store_errors``: plain words for a disk, folder or database the project cannot be written to.
- ``importer``: importing a folder or an MVTec-layout dataset with its masks, in batches, resumable.
- ``import_copies``: copies of imported images that a killed process cannot leave orphaned.
- ``label_estimates``: estimated seconds for labels that arrive without being drawn here.
- ``exporting``: label export through ``core.data.formats``.
"""
