"""Training from the window: prepares a run, starts and watches its worker, records the model.

1. **Prepare** (background thread, its own Store): apply the selection rule
   (app.training.selection), make ``runs/<id>/`` with its inputs, insert the run row (queued).
2. **Run**: a :class:`TrainingProcess` in the run folder; the panel follows its events. The row
   becomes ``running`` with the worker's pid (a later window can tell a live run from an orphan).
3. **End**: ``finished`` -> the model file is read (background) and a model row is added with the
   labels used, their seconds, validation metrics and calibration; ``cancelled`` / ``failed`` ->
   temporary files are removed, the checkpoint is kept, the row says why, and Resume reruns the
   stored command in the same folder.

One run at a time per window. Closing the project cancels a running run (it stays resumable).
"""
from __future__ import annotations

import time

from PySide6.QtCore import QObject, QTimer, Signal

from ..project.store import Store
from ..workers import Job
from .panel import RESUME_TIP
from .process import KILL_AFTER_MS, TrainingProcess
from .worker_protocol import state_from_log
from .selection import (RunSpec, TrainSetError, prepare_run, register_model,
                       remove_partial_files, run_dir_for, select_training_set)


STOPPED_AT_CLOSE = "stopped when the app closed"
STOPPED_AT_CLOSE_ERROR = f"{STOPPED_AT_CLOSE}; Resume continues from the last checkpoint"


def supervision_counts(store: Store) -> dict[str, int]:
    """How many train/inspect images each supervision would use (for the panel's labels)."""
    rows = store.db.execute(
        "SELECT l.kind, l.data, count(DISTINCT l.image_id) FROM labels l JOIN images i ON i.id = l.image_id "
        "WHERE i.split IN ('train', 'inspect') GROUP BY l.kind, l.data = '\"defective\"'").fetchall()
    out = {"masks": 0, "blocks": 0, "boxes": 0, "tags": 0}
    for kind, data, n in rows:
        key = {"mask": "masks", "blocks": "blocks", "boxes": "boxes"}.get(kind)
        if key:
            out[key] += n
        elif kind == "tag" and data == '"defective"':
            out["tags"] += n
    out["all"] = len(store.images("train", status="defective")) + len(store.images("inspect", status="defective"))
    return out


class TrainingController(QObject):
    runStarted = Signal(int)
    runEnded = Signal(int, str, str)      # run id, status, message
    modelReady = Signal(int)              # a new model row
    message = Signal(str)

    def __init__(self, store: Store, train_panel, models_panel, parent=None):
        super().__init__(parent)
        self.store, self.panel, self.models_panel = store, train_panel, models_panel
        self.process: TrainingProcess | None = None
        self.last_process: TrainingProcess | None = None
        self.active_model: int | None = None
        self.jobs: list[Job] = []
        self.python: str | None = None        # the worker's interpreter (None: this one); tests fake it
        self._preparing = False
        self.closed = False
        self._reached: dict[int, str] = {}   # run id -> how far its log says it got (the Resume tip)
        train_panel.trainRequested.connect(lambda spec: self.start(spec))
        train_panel.cancelRequested.connect(self.cancel)
        train_panel.resumeRequested.connect(lambda: self.resume(self.last_resumable()))
        models_panel.retrainRequested.connect(self.retrain)
        models_panel.resumeRequested.connect(self.resume)
        self.recover_models()
        orphans = store.runs.mark_orphaned_runs()
        if orphans:
            # after the event loop turns: whoever built this controller connects to ``message`` next
            text = f"run(s) {', '.join(map(str, orphans))} stopped when the app closed; Resume continues them"
            QTimer.singleShot(0, self, lambda: self.message.emit(text))
        self.show_last_run()

    def show_last_run(self) -> None:
        """The project's last run in the panel, as it ended (status, why, how far it got), so that
        after a restart the panel never says "No run yet" beside a Resume for a stopped run."""
        runs = self.store.runs.all()
        if not runs or self.busy():
            self.refresh()
            return
        run = runs[-1]
        state = state_from_log(run.log_path)
        stopped = run.status in ("cancelled", "failed")
        self.panel.show_run(run.id, run.status, STOPPED_AT_CLOSE if run.error == STOPPED_AT_CLOSE_ERROR
                            else run.settings.get("supervision", ""))
        self.panel.show_state(state, stopped=stopped)
        if run.error:
            self.panel.show_message(run.error, run.status == "failed")
        if state.last_step:
            self._reached[run.id] = f"step {state.last_step}" + (f" of {state.total}" if state.stage == "train" else "")
        self.refresh()

    def recover_models(self) -> list[int]:
        """Register models whose run wrote its file but whose window closed before recording it."""
        from core.errors import SemiRestError

        from ..project.runs import _alive
        out = []
        for run in self.store.runs.all():
            if run.status == "finished" or _alive(run.pid) or not run.model_path.is_file() \
                    or self.store.runs.model_of_run(run.id) is not None:
                continue
            from core.deploy.modelfile import ModelBundle     # torch: only when there is a model to recover
            try:
                out.append(register_model(self.store, run.id, ModelBundle.load(run.model_path)))
            except SemiRestError:
                continue
        return out

    # ---- state shown ------------------------------------------------------------------------------
    def busy(self) -> bool:
        return self._preparing or (self.process is not None and self.process.is_running())

    def last_resumable(self) -> int | None:
        for run in reversed(self.store.runs.all()):
            if run.resumable and run.checkpoint_path.exists():
                return run.id
            if run.status == "finished":
                return None
        return None

    def refresh(self) -> None:
        runs = self.store.runs.all()
        parents = {m.id: (self.store.runs.run(m.run_id).parent_model if m.run_id else None) for m in self.store.runs.models()}
        self.models_panel.set_models(self.store.runs.models(), parents, self.active_model)
        self.models_panel.set_runs(runs)
        resumable = self.last_resumable()
        self.panel.set_running(self.busy(), resumable is not None)
        reached = self._reached.get(resumable)
        self.panel.resume_button.setToolTip(RESUME_TIP if resumable is None else
                                            f"Continue run {resumable} from its last checkpoint"
                                            + (f" (it had reached {reached})" if reached else ""))
        try:
            self.panel.set_label_counts(supervision_counts(self.store))
        except Exception:   # counts are a courtesy; never block the panel on them
            pass

    # ---- start ------------------------------------------------------------------------------------
    def start(self, spec: RunSpec | None = None, parent_model: int | None = None) -> Job | None:
        """Prepare and start a run (returns the preparation job; the run follows)."""
        if self.busy():
            self.panel.show_message("A run is in progress: cancel it first, or wait for it to finish", True)
            return None
        spec = spec or self.panel.spec()
        try:
            spec.validate()
        except TrainSetError as exc:
            self.panel.show_message(str(exc), True)
            return None
        project = self.store.folder
        self._preparing = True
        self.panel.set_running(True, False)
        self.panel.show_message("Preparing the training set…")

        def work(progress):
            with Store.open(project) as s:
                ts = select_training_set(s, spec.supervision)
                run_id = s.runs.next_run_id()
                run_dir = run_dir_for(project, run_id)
                cmd = prepare_run(run_dir, spec, ts)
                run_id = s.runs.add_run(spec.as_dict(), cmd, run_dir, ts.labels_used, ts.label_seconds, parent_model,
                                   label_seconds_estimated=ts.label_seconds_estimated)
                return run_id, ts.summary()

        job = Job(work, "prepare-run", self)
        self.jobs.append(job)
        job.finished.connect(lambda res: self._prepared(job, *res))
        job.failed.connect(lambda msg: self._prepare_failed(job, msg))
        job.cancelled.connect(lambda: self._prepare_failed(job, "cancelled"))
        return job.start()

    def _prepare_failed(self, job: Job, msg: str) -> None:
        self._forget(job)
        if self.closed:
            return
        self._preparing = False
        self.panel.show_message(f"Cannot train: {msg}", True)
        self.refresh()

    def _prepared(self, job: Job, run_id: int, summary: str) -> None:
        self._forget(job)
        if self.closed:                  # the project closed meanwhile: the run stays queued -> failed
            return
        self._preparing = False
        self.panel.show_message(f"Training on {summary}")
        self._launch(run_id)

    def _launch(self, run_id: int) -> None:
        run = self.store.runs.run(run_id)
        log = run.run_dir / "train.log"
        proc = TrainingProcess(run.command, run.run_dir, log, python=self.python, parent=self)
        self.process, self.last_process = proc, proc
        proc.started.connect(lambda pid: self._started(run_id, pid))
        proc.event.connect(lambda ev: self.panel.show_state(proc.state))
        proc.ended.connect(lambda status, code, msg: self._ended(proc, run_id, status, code, msg))
        self.store.runs.update_run(run_id, status="running", started=time.time(), ended=None, exit_code=None,
                              error=None, log_path=log)
        self.panel.show_run(run_id, "running", run.settings.get("supervision", ""))
        self.panel.show_state(proc.state)
        proc.start()
        self.refresh()

    def _started(self, run_id: int, pid: int) -> None:
        self.store.runs.update_run(run_id, pid=pid)
        self.runStarted.emit(run_id)

    # ---- control ----------------------------------------------------------------------------------
    def cancel(self) -> None:
        if self.process is not None and self.process.is_running():
            self.panel.show_message("Stopping… (the checkpoint is kept)")
            self.process.cancel()

    def resume(self, run_id: int | None) -> bool:
        if run_id is None or self.busy():
            return False
        run = self.store.runs.run(run_id)
        if not run.resumable or not run.run_dir.is_dir():
            self.panel.show_message(f"Run {run_id} cannot be resumed ({run.status})", True)
            return False
        self.panel.show_message(f"Resuming run {run_id} from its checkpoint" if run.checkpoint_path.exists()
                                else f"Run {run_id} has no checkpoint yet: it starts over")
        self._launch(run_id)
        return True

    def retrain(self, model_id: int) -> Job | None:
        """Same settings as the model's run, today's labels, starting from the model."""
        model = self.store.runs.model(model_id)
        run = self.store.runs.run(model.run_id) if model.run_id else None
        spec = RunSpec.from_dict(run.settings) if run else RunSpec(supervision=model.supervision)
        spec.device = self.panel.device.current()
        spec.init_model = str(model.path)
        if run is not None and (run.run_dir / "config.yaml").exists():
            spec.config = str(run.run_dir / "config.yaml")
        return self.start(spec, parent_model=model_id)

    def shutdown(self) -> None:
        """Closing the project: stop a running worker (resumable later) and wait for it."""
        self.closed = True
        for job in self.jobs:
            job.cancel()
        for job in list(self.jobs):
            job.wait(10)
        proc = self.process
        if proc is not None and proc.is_running():
            proc.cancel()
            if not proc.wait(KILL_AFTER_MS + 2000):
                proc.kill()
                proc.wait(5000)

    # ---- the end ----------------------------------------------------------------------------------
    def _ended(self, proc: TrainingProcess, run_id: int, status: str, code, message: str) -> None:
        if self.store.db is None:
            return
        if self.closed and status == "cancelled":    # stopped by closing the window, not by the user
            message = STOPPED_AT_CLOSE_ERROR
        self.store.runs.update_run(run_id, status="running" if status == "finished" else status,
                              ended=time.time(), exit_code=code, error=message or None)
        if status != "finished":
            remove_partial_files(self.store.runs.run(run_id).run_dir)
            self._finish_run(run_id, status, message)
            return
        path = self.store.runs.run(run_id).model_path
        if self.closed:                  # finished while the project closes: record it now
            self.recover_models()
            return
        self.panel.show_message("Training finished; reading the model…")

        def load(progress):
            from core.deploy.modelfile import ModelBundle
            return ModelBundle.load(path)

        job = Job(load, "load-model", self)
        self.jobs.append(job)
        job.finished.connect(lambda bundle: self._register(job, run_id, bundle))
        job.failed.connect(lambda msg: (self._forget(job), self.store.runs.update_run(run_id, status="failed", error=msg),
                                        self._finish_run(run_id, "failed", msg)))
        job.start()

    def _register(self, job: Job, run_id: int, bundle) -> None:
        self._forget(job)
        if self.store.db is None:        # closed meanwhile: the next open finds the run orphaned
            return
        model_id = register_model(self.store, run_id, bundle)
        m = self.store.runs.model(model_id)
        vm = m.validation_metric
        self._finish_run(run_id, "finished", f"model {model_id}: validation {vm[0]:.3f} ({m.validation_basis})"
                         if vm is not None else f"model {model_id}")
        self.modelReady.emit(model_id)

    def _finish_run(self, run_id: int, status: str, message: str) -> None:
        self.panel.show_run(run_id, status)
        if status == "failed":
            self.panel.show_message(message, True)
        elif status == "cancelled":
            self.panel.show_message("Cancelled; partial files removed, the checkpoint is kept: Resume continues")
        else:
            self.panel.show_message(message)
        if self.process is not None and not self.process.is_running():
            self.process = None
        self.refresh()
        self.runEnded.emit(run_id, status, message)

    def _forget(self, job: Job) -> None:
        if job in self.jobs:
            self.jobs.remove(job)
