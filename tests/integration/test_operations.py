"""Operations with real parts: a started Prefect server, `datamill serve` serving the
deployments, `datamill trigger --wait` from the CLI (as CI would), rows in the catalog."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from serverkit import cli, deployments_file, start_serve, start_server, stop_all

from tasks.catalog import Catalog

pytestmark = pytest.mark.slow


def _check_ui_page(url: str, must_show: list[str]) -> None:
    """Open the Prefect UI page in headless Chromium, as a person would, and read it."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not installed (Debian package `chromium`): UI page not checked")
    dom = ""
    for attempt in range(3):  # the single-page app fills in over a few API calls: give it time
        with tempfile.TemporaryDirectory() as profile:
            dom = subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
                 f"--virtual-time-budget={15000 * (attempt + 1)}", "--dump-dom", url],
                capture_output=True, text=True, timeout=120).stdout
        if all(text in dom for text in must_show):
            return
    missing = [text for text in must_show if text not in dom]
    raise AssertionError(f"{missing} not on {url}")


def test_server_serve_trigger(tmp_path: Path, sample_slice: Path, write_recipe: Any) -> None:
    root = tmp_path / "root"
    recipe = write_recipe(tmp_path / "recipe.yaml", sample_slice, root)
    raw = yaml.safe_load(recipe.read_text())
    raw["stages"]["train"]["max_tokens"] = 8 * 64 * 4  # 4 steps: operations, not the model
    raw["stages"]["evaluate"].update(max_docs=5, tasks=[])
    recipe.write_text(yaml.safe_dump(raw))
    deployments = deployments_file(tmp_path / "prefect.yaml", "slice",
                                   "flows/pipeline.py:run_recipe", recipe, "0 3 * * *")
    env, api = start_server(root)
    server = None
    try:
        server = start_serve(deployments, env)
        deadline = time.monotonic() + 90
        out = None
        while time.monotonic() < deadline:  # the deployment appears once serve registered it
            out = cli("trigger", "datamill-run/slice", "--wait", "--timeout", "240",
                       "--param", f"recipe_path={recipe}", env=env, timeout=300)
            if "not found" not in (out.stdout + out.stderr).lower():
                break
            time.sleep(2)
        assert out is not None and out.returncode == 0, out.stdout + out.stderr[-3000:]
        assert f"{api.removesuffix('/api')}/runs/flow-run/" in out.stdout
        runs = Catalog(root / "catalog.duckdb").runs()
        assert len(runs) == 1 and runs[0]["status"] == "completed"
        url = next(w for w in out.stdout.split() if "/runs/flow-run/" in w)
        _check_ui_page(url, must_show=[runs[0]["run_id"], "Completed", "datamill-run"])
        # the schedule is registered with the server
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: api}), \
                get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name("datamill-run/slice")
        assert dep.schedules and dep.schedules[0].schedule.cron == "0 3 * * *"
        # a failing run exits non-zero
        bad = cli("trigger", "datamill-run/slice", "--wait", "--timeout", "120",
                   "--param", "recipe_path=/nonexistent.yaml", env=env, timeout=180)
        assert bad.returncode != 0
    finally:
        stop_all(server, env)
