"""Helpers shared by the tests that start a real Prefect server and `datamill serve`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def start_server(root: Path) -> tuple[dict[str, str], str]:
    """`datamill server start` on a free loopback port with its data under ``root``; returns
    the environment a client needs (API and UI URLs set) and the API URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["DATAMILL_DATA_ROOT"] = str(root)
    port = free_port()
    start = cli("server", "start", "--port", str(port), env=env, timeout=150)
    assert start.returncode == 0, start.stdout + start.stderr
    api = f"http://127.0.0.1:{port}/api"
    env.update(PREFECT_API_URL=api, PREFECT_SERVER_UI_API_URL=api)
    return env, api


def start_serve(deployments: Path, env: dict[str, str]) -> subprocess.Popen:
    """`datamill serve --file deployments` in its own process group (stop it by group)."""
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--file",
                             str(deployments)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def stop_all(serve: subprocess.Popen | None, env: dict[str, str]) -> None:
    """Stop `datamill serve` by its process group (SIGINT, then SIGKILL after 20 s), then the
    server; the server must stop cleanly."""
    if serve is not None:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
    stopped = cli("server", "stop", env=env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def deployments_file(path: Path, name: str, entrypoint: str, recipe: Path, cron: str) -> Path:
    """A prefect.yaml with one deployment of ``entrypoint`` on ``recipe``: concurrency limit 1
    and a cron schedule, as deployments/ ships them."""
    path.write_text(yaml.safe_dump({"name": "t", "deployments": [{
        "name": name, "entrypoint": entrypoint, "parameters": {"recipe_path": str(recipe)},
        "concurrency_limit": 1, "schedules": [{"cron": cron}]}]}))
    return path
