"""A real Prefect server for the UI, schedules and triggers: ``datamill server start|stop``.

Bound to 127.0.0.1, its SQLite database under ``<data_root>/prefect/``, with the API URL and
the UI's API URL set consistently (a UI that points at another port shows nothing). The
server runs detached in its own process group; ``server.json`` says where and which PID.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any


def home(data_root: Path) -> Path:
    return data_root / "prefect"


def server_env(data_root: Path, host: str, port: int) -> dict[str, str]:
    api = f"http://{host}:{port}/api"
    return {
        **os.environ,
        "PREFECT_HOME": str(home(data_root)),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_UI_API_URL": api,
        "PREFECT_UI_URL": f"http://{host}:{port}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def status(data_root: Path) -> dict[str, Any] | None:
    f = home(data_root) / "server.json"
    if not f.is_file():
        return None
    info = json.loads(f.read_text())
    info["healthy"] = healthy(info["api_url"])
    return info


def start(data_root: Path, host: str = "127.0.0.1", port: int = 4200,
          timeout: float = 120.0) -> dict[str, Any]:
    current = status(data_root)
    if current and current["healthy"]:
        return current
    h = home(data_root)
    h.mkdir(parents=True, exist_ok=True)
    env = server_env(data_root, host, port)
    prefect = Path(sys.executable).with_name("prefect")
    log = open(h / "server.log", "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [str(prefect), "server", "start", "--host", host, "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        start_new_session=True,  # its own process group: stop() ends it and its children
    )
    info = {"pid": proc.pid, "api_url": env["PREFECT_API_URL"], "ui_url": env["PREFECT_UI_URL"],
            "home": str(h), "log": str(h / "server.log")}
    (h / "server.json").write_text(json.dumps(info, indent=2))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Prefect server exited with {proc.returncode}; see {info['log']}")
        if healthy(info["api_url"]):
            return {**info, "healthy": True}
        time.sleep(0.5)
    stop(data_root)
    raise TimeoutError(f"Prefect server not healthy after {timeout:.0f}s; see {info['log']}")


def stop(data_root: Path, timeout: float = 30.0) -> bool:
    f = home(data_root) / "server.json"
    if not f.is_file():
        return False
    pid = json.loads(f.read_text())["pid"]
    try:
        os.killpg(pid, signal.SIGINT)  # uvicorn shuts down cleanly on SIGINT
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.killpg(pid, 0)
            time.sleep(0.3)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    f.unlink(missing_ok=True)
    return True
