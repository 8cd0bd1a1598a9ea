"""The refresh as a team runs it: a real Prefect server, `datamill serve` serving a `refresh`
deployment, and two refreshes started at the same moment -- one from CI (`datamill trigger
--wait`), one by hand (`datamill refresh`). Exactly one of them writes; the other exits
cleanly. Then headless Chromium opens the Prefect UI page of the refresh that ran and finds its
funnel and promotion artifacts (set DATAMILL_SCREENSHOT=docs/ui-refresh.png to keep a picture).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from serverkit import ROOT, deployments_file, start_serve, start_server, stop_all

from tasks.catalog import Catalog

pytestmark = pytest.mark.slow


class _Page:
    """A Chromium tab driven over the DevTools protocol (websockets ships with Prefect): the
    Artifacts tab of a flow run page needs a click, which --dump-dom cannot do."""

    def __init__(self, ws: Any):
        self.ws, self.n = ws, 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expr: str) -> Any:
        return self.call("Runtime.evaluate", expression=expr,
                         returnByValue=True)["result"].get("value")

    def wait_for(self, expr: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expr)
            if value:
                return value
            time.sleep(0.5)
        raise TimeoutError(f"{expr} still false after {timeout}s; page text: "
                           f"{self.js('document.body.innerText')!r:.1500}")


@contextmanager
def _browser(url: str) -> Iterator[_Page]:
    """Headless Debian Chromium on a page, on loopback, killed by its process group."""
    from websockets.sync.client import connect

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not installed (Debian package `chromium`): UI page not checked")
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,1000",
             "--hide-scrollbars", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            start_new_session=True)
        try:
            port = None
            deadline = time.monotonic() + 60
            while port is None and time.monotonic() < deadline:
                line = proc.stderr.readline() if proc.stderr else ""
                if "DevTools listening on ws://" in line:
                    port = int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
                elif not line and proc.poll() is not None:
                    raise RuntimeError(f"chromium exited with {proc.returncode}")
            assert port, "chromium printed no DevTools address"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                target = next(t for t in json.load(r) if t["type"] == "page")
            with connect(target["webSocketDebuggerUrl"], max_size=None,
                         open_timeout=30) as ws:
                page = _Page(ws)
                page.call("Page.enable")
                page.call("Page.navigate", url=url)
                yield page
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def check_refresh_page(url: str, run_id: str, screenshot: Path | None = None) -> str:
    """Open a refresh's flow run page, click its Artifacts tab, find the funnel and promotion
    artifacts; optionally save a screenshot. Returns the page text."""
    with _browser(url) as page:
        page.wait_for(f"document.body.innerText.includes({json.dumps(run_id)})")
        page.wait_for("""(() => {
            const tab = [...document.querySelectorAll('button, [role=tab], a, li, span')]
                .filter(e => e.textContent.trim() === 'Artifacts').pop();
            if (tab) { tab.click(); return true; } return false; })()""")
        page.wait_for("document.body.innerText.includes('datamill-funnel') && "
                      "document.body.innerText.includes('datamill-promotion')")
        time.sleep(1.0)  # let the cards render fully for the picture
        if screenshot is not None:  # tall enough for the run graph and every artifact card
            page.call("Emulation.setDeviceMetricsOverride", width=1400, height=1500,
                      deviceScaleFactor=1, mobile=False)
            time.sleep(1.0)
            png = page.call("Page.captureScreenshot", format="png")["data"]
            screenshot.write_bytes(base64.b64decode(png))
        return str(page.js("document.body.innerText"))


def _flow_run_id(api: str, name: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api}), \
            get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=[name])))
    assert len(runs) == 1, runs
    return str(runs[0].id)


def _wait_deployment(api: str, name: str, timeout: float = 120) -> None:
    """The deployment exists once `datamill serve` has registered it."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + timeout
    with temporary_settings(updates={PREFECT_API_URL: api}), \
            get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            try:
                client.read_deployment_by_name(name)
                return
            except ObjectNotFound:
                time.sleep(1)
    raise TimeoutError(f"deployment {name} not registered after {timeout}s")


def test_two_refreshes_at_once_one_writer_and_the_ui(tmp_path: Path, sample_lines: list[str],
                                                     write_recipe: Any) -> None:
    root, inbox = tmp_path / "root", tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.jsonl").write_text("\n".join(sample_lines[1::8]) + "\n")
    recipe = write_recipe(tmp_path / "r.yaml", inbox / "*.jsonl", root)
    raw = yaml.safe_load(recipe.read_text())
    raw["stages"]["train"]["max_tokens"] = 8 * 64 * 6  # 6 steps: operations, not the model
    raw["stages"]["evaluate"].update(max_docs=10, tasks=[])
    recipe.write_text(yaml.safe_dump(raw))
    deployments = deployments_file(tmp_path / "prefect.yaml", "refresh",
                                   "flows/refresh.py:refresh", recipe, "0 2 * * *")
    env, api = start_server(root)
    server = None
    try:
        server = start_serve(deployments, env)
        _wait_deployment(api, "datamill-refresh/refresh")
        # two refreshes at once: CI's trigger (through serve) and one from a shell
        ci = subprocess.Popen([sys.executable, "-m", "flows.cli", "trigger",
                               "datamill-refresh/refresh", "--wait", "--timeout", "420"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        shell = subprocess.Popen([sys.executable, "-m", "flows.cli", "refresh", str(recipe),
                                  "--json"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        ci_out, ci_err = ci.communicate(timeout=480)
        sh_out, sh_err = shell.communicate(timeout=480)
        assert ci.returncode == 0, ci_out + ci_err[-3000:]
        assert shell.returncode == 0, sh_out + sh_err[-3000:]
        by_hand = json.loads(sh_out)
        runs = Catalog(root / "catalog.duckdb").runs()
        assert len(runs) == 1 and runs[0]["status"] == "completed"  # one writer
        ran = runs[0]["run_id"]
        if by_hand["status"] == "skipped":  # CI's run took the lock; the shell's left
            assert "holds" in by_hand["reason"]
        else:  # the shell's run took the lock; CI's run completed without writing
            assert by_hand["run_id"] == ran and by_hand["promotion"]["promoted"]
        assert Catalog(root / "catalog.duckdb").promoted("slice")["run_id"] == ran

        ui = f"{api.removesuffix('/api')}/runs/flow-run/{_flow_run_id(api, ran)}"
        shot = Path(os.environ.get("DATAMILL_SCREENSHOT") or tmp_path / "ui-refresh.png")
        text = check_refresh_page(ui, ran, screenshot=shot)
        assert "datamill-funnel" in text and "datamill-promotion" in text
        assert shot.is_file() and shot.stat().st_size > 20_000
    finally:
        stop_all(server, env)
