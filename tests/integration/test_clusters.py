"""Clusters: a real `dask scheduler` with two `dask worker` processes and a `ray start --head`,
all on 127.0.0.1 with free ports; `datamill run` with DATAMILL_DASK_ADDRESS and
DATAMILL_RAY_ADDRESS runs its CPU stages on that scheduler's workers and trains on that Ray
cluster. Everything started here is stopped by its process group (never by name)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks.catalog import Catalog

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process group we started, then SIGKILL what is left."""
    for p in reversed(procs):
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in reversed(procs):
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled"}
    logs = tmp_path / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []

    def start(name: str, *cmd: str) -> subprocess.Popen:
        p = subprocess.Popen(list(cmd), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                             stdout=open(logs / f"{name}.log", "wb"),  # noqa: SIM115
                             stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(p)
        return p

    dask_port, ray_port = _free_port(), _free_port()
    # Ray's unix sockets need a short path
    ray_tmp = tempfile.mkdtemp(prefix="dmray", dir="/tmp")
    try:
        sched = start("scheduler", str(BIN / "dask"), "scheduler", "--host", "127.0.0.1",
                      "--port", str(dask_port), "--no-dashboard")
        _wait_port(dask_port, sched)
        for i in range(2):
            start(f"worker{i}", str(BIN / "dask"), "worker", f"tcp://127.0.0.1:{dask_port}",
                  "--host", "127.0.0.1", "--nthreads", "1", "--memory-limit", "2GiB",
                  "--no-dashboard", "--name", f"w{i}")
        head = start("ray", str(BIN / "ray"), "start", "--head", "--block",
                     "--node-ip-address", "127.0.0.1", "--port", str(ray_port),
                     "--num-cpus", "2", "--include-dashboard", "false",
                     "--dashboard-port", str(_free_port()),  # its head process still listens
                     "--object-store-memory", str(256 * 2**20),
                     "--dashboard-agent-listen-port", str(_free_port()),
                     "--dashboard-agent-grpc-port", str(_free_port()),
                     "--runtime-env-agent-port", str(_free_port()),
                     "--metrics-export-port", str(_free_port()),
                     "--temp-dir", ray_tmp, "--disable-usage-stats")
        _wait_port(ray_port, head, timeout=90)
        from distributed import Client

        with Client(f"tcp://127.0.0.1:{dask_port}", timeout=30) as c:
            c.wait_for_workers(2, timeout=60)
        yield {"env": env, "dask": f"tcp://127.0.0.1:{dask_port}",
               "ray": f"127.0.0.1:{ray_port}", "ray_tmp": Path(ray_tmp), "logs": logs}
    finally:
        _stop(procs)


def test_recipe_runs_on_dask_and_ray_clusters(clusters: dict[str, Any], sample_slice: Path,
                                              tmp_path: Path, write_recipe: Any) -> None:
    root = tmp_path / "root"
    recipe = write_recipe(tmp_path / "r.yaml", sample_slice, root)
    raw = yaml.safe_load(recipe.read_text())
    raw["stages"]["train"]["max_tokens"] = 8 * 64 * 6  # 6 steps: where it runs, not the model
    raw["stages"]["evaluate"].update(max_docs=10, tasks=[])
    recipe.write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in clusters["env"].items() if not k.startswith("PREFECT_API")}
    env.update(DATAMILL_DASK_ADDRESS=clusters["dask"], DATAMILL_RAY_ADDRESS=clusters["ray"])
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(recipe), "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert out.returncode == 0, out.stderr[-4000:]
    summary = json.loads(out.stdout)
    assert summary["status"] == "completed"
    stages = {s["stage"] for s in summary["stages"]}
    assert {"ingest", "filter", "tokenize", "train", "evaluate"} <= stages
    print(f"recipe through the clusters: {time.perf_counter() - t0:.1f}s")

    # the CPU stages' shard functions ran on the scheduler's two workers...
    from distributed import Client

    with Client(clusters["dask"], timeout=30) as c:
        prefixes = c.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
        workers = c.run_on_scheduler(lambda dask_scheduler: {
            w.name: w.metrics.get("task_counts", {}) for w in dask_scheduler.workers.values()})
    assert "run_marked" in prefixes, prefixes
    assert set(workers) == {"w0", "w1"}
    # ...and training / evaluation ran as stage tasks on the Ray cluster we started
    task_logs = [p for p in clusters["ray_tmp"].rglob("worker-*.out")
                 if "run_stage" in p.read_text(errors="replace")]
    assert task_logs, "no stage task ran on the started Ray cluster"
    run = Catalog(root / "catalog.duckdb").show(summary["run_id"])
    assert any(m["name"] == "loss" for m in run["metrics"])
