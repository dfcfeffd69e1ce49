"""Training from the app: the Train panel, the device picker, the worker process and its protocol.

Module map (see docs/decisions/0008-training-worker.md):

- ``worker_protocol``: the worker's JSON-lines protocol: line splitting, parsing, the run's live state. No Qt.
- ``selection``: which images train a model (the selection rule), the run folder and the command. No Qt.
- ``devices``: the device list, fetched in a subprocess so the window never initialises CUDA.
- ``process``: the worker process (QProcess): start, cancel (SIGTERM, then kill), death detection.
- ``device_picker``, ``loss_curve``, ``panel``, ``models_panel``: widgets.
- ``controller``: glue between the store, the widgets and the process.
"""
