"""``python -m bench --ray [ADDRESS]``: the benchmark's jobs as Ray tasks, on this machine or a cluster.

Each job is the same command as without Ray (``python -m bench.job ...``, one process per job so
its peak memory is its own), run by a Ray task that asks for ``--threads`` CPUs (and one GPU with
``--device cuda``) wherever the cluster has them. The task runs the command with the node's own
Python and project, writes the job's result to a node-local temporary file and returns it with the
job's log; the driver writes both where the plain run does (``--results``, ``--workdir``), so the
report, resume (finished jobs are skipped) and ``--fresh`` work unchanged.

On a cluster, every node needs the same version of this project installed at the same path and
must read ``--data`` and ``--workdir`` at the same paths (a shared folder): the labelled protocols
start from the unsupervised models an earlier task wrote there.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from core.fileio import atomic_write_text


def _run_job(cmd: list[str]) -> tuple[int, str, str | None]:
    """On the node: run the job command, return (exit code, log, result JSON text or None)."""
    import bench
    root = Path(bench.__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable] + cmd[1:]
        cmd[cmd.index("--out") + 1] = str(out)
        proc = subprocess.run(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        result = out.read_text(encoding="utf-8") if out.exists() else None
    return proc.returncode, proc.stdout, result


class RayJob:
    """One submitted job; ``poll()`` as ``subprocess.Popen.poll``: None while it runs, then the exit
    code, once the log and the result file are written locally."""

    def __init__(self, ray, remote, cmd: list[str], out: Path, log):
        self.ray, self.out, self.log = ray, out, log
        self.ref = remote.remote(cmd)
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            ready, _ = self.ray.wait([self.ref], timeout=0)
            if ready:
                rc, text, result = self.ray.get(self.ref)
                self.log.write(text)
                self.log.flush()
                if rc == 0 and result is not None:
                    atomic_write_text(self.out, result)
                self.returncode = rc if (rc != 0 or result is not None) else 1
        return self.returncode


class RayLauncher:
    """Starts jobs as Ray tasks of ``threads`` CPUs (and 1 GPU when ``gpu``)."""

    def __init__(self, address: str | None, threads: int, gpu: bool):
        from core.cluster import connect
        self.ray = connect(address)
        self.remote = self.ray.remote(num_cpus=threads, num_gpus=1 if gpu else 0)(_run_job)

    def start(self, cmd: list[str], cwd: Path, out: Path, log) -> RayJob:
        return RayJob(self.ray, self.remote, cmd, out, log)


class LocalLauncher:
    """Starts jobs as child processes of this one (the default)."""

    def start(self, cmd: list[str], cwd: Path, out: Path, log) -> subprocess.Popen:
        return subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
