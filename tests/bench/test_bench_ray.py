"""``python -m bench --ray``: the benchmark's jobs as Ray tasks give the same results as child
processes, and a failing job reports its exit code and log."""
from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import tiny_yaml

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_a_failing_job_returns_its_exit_code_and_log_and_writes_no_result(local_ray, tmp_path):
    from bench.ray_jobs import RayLauncher
    code = "import sys; print('bad input: x.png'); sys.exit(3)"
    out = tmp_path / "r.json"
    with open(tmp_path / "r.log", "w") as log:
        job = RayLauncher(None, 1, False).start([sys.executable, "-c", code, "--out", str(out)],
                                                tmp_path, out, log)
        while job.poll() is None:
            pass
    assert job.returncode == 3 and not out.exists()
    assert "bad input: x.png" in (tmp_path / "r.log").read_text()


@pytest.mark.slow
def test_ray_jobs_give_the_results_of_child_processes(local_ray, tmp_path, capsys):
    from bench.__main__ import main
    from core.demo import make_dataset
    data = make_dataset(tmp_path / "data", n_train=6, n_good=2, n_bad=3)
    cfg = tiny_yaml(tmp_path / "tiny.yaml", steps=4, val_every=2)
    results = {}
    for how in ("local", "ray"):
        res = tmp_path / how
        argv = ["--data", str(data.parent), "--classes", data.name, "--mixed-sizes", "--protocols", "unsup",
                "--config", str(cfg), "--threads", "1", "--jobs", "1", "--results", str(res / "results"),
                "--workdir", str(res / "work"), "--out", str(res / "benchmarks.md"), "--label-costs", ""]
        assert main(argv + (["--ray"] if how == "ray" else [])) == 0
        (f,) = (res / "results").glob("*.json")
        results[how] = json.loads(f.read_text())
        assert (res / "benchmarks.md").exists() and (res / "work" / f"{f.stem}.log").exists()
    for key in ("semirest", "patchcore"):
        assert results["ray"][key] == results["local"][key]
    assert results["ray"]["n_test"] == results["local"]["n_test"] > 0
    # the job records the Swin it trained (the tiny config's), and the report says so
    assert results["local"]["swin"]["embed_dim"] == 32 and results["local"]["swin"]["num_heads"] == 2
    assert "Swin: width 32, 2 heads." in (tmp_path / "local" / "benchmarks.md").read_text()
