"""`datamill inspect`, the report's figures and gallery, and their Prefect artifacts, on a real
run (the session's `sample_run`): the report renders in headless Chromium with the network
off, every image loaded."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from flows.cli import main

pytestmark = pytest.mark.slow

# nothing leaves the machine: no proxy answers, no name resolves
OFFLINE = ["--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
           "--host-resolver-rules=MAP * ~NOTFOUND", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run"]
PROBE = ("<script>addEventListener('load', () => { document.body.dataset.images = "
         "[...document.images].map(i => i.complete ? i.naturalWidth : -1).join(','); });"
         "</script>")


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} in JSON")


def test_inspect_cli(sample_run: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    root, rid = str(sample_run["root"]), sample_run["run_id"]
    assert main(["inspect", rid, "--data-root", root, "--json", "-n", "3",
                 "--random-kept", "4"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=_no_constants)
    assert out["run_id"] == rid and out["docs_in"] == out["docs_kept"] + out["docs_rejected"]
    rules = {r["rule"]: r for r in out["rules"]}
    mw = rules["gopher_quality.min_words"]
    assert mw["dropped_first"] > 0 and len(mw["dropped"]) == 3
    assert all(d["score"] < 50 and d["threshold"] == 50 and d["excerpt"] for d in mw["dropped"])
    assert all(d["score"] >= 50 for d in mw["nearest_kept"])
    [dup] = rules["exact_dedup.duplicate"]["dropped"]  # the slice's whitespace-doubled copy
    assert dup["id"].endswith("-copy") and dup["twin_id"] == dup["id"].removesuffix("-copy")
    assert rules["minhash_dedup.near_duplicate"]["nearest_kept"] is None
    assert len(out["random_kept"]) == 4
    assert main(["inspect", "latest", "--data-root", root, "-n", "1", "--lang", "fr",
                 "--rule", "gopher_quality"]) == 0
    text = capsys.readouterr().out
    assert "gopher_quality.min_words" in text and "exact_dedup" not in text


def _chromium(args: list[str]) -> str:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium not installed (Debian package `chromium`): report not rendered")
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                               f"--user-data-dir={profile}", *OFFLINE,
                               "--virtual-time-budget=10000", *args],
                              capture_output=True, text=True, timeout=180).stdout


def test_report_renders_offline(sample_run: dict[str, Any], tmp_path: Path) -> None:
    from PIL import Image

    doc = Path(sample_run["summary"]["report"]).read_text(encoding="utf-8")
    for title in ("Score distributions", "Corpus before and after curation", "Training loss",
                  "Bits per byte per source", "Gallery: what each rule dropped and kept"):
        assert f"<h2>{html.escape(title)}</h2>" in doc
    srcs = re.findall(r'<img alt="[^"]*" src="([^"]{0,40})', doc)
    assert len(srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    page = tmp_path / "report.html"  # a copy with a probe that records each image's width
    page.write_text(doc.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _chromium(["--dump-dom", page.as_uri()])
    widths = re.search(r'data-images="([^"]*)"', dom)
    assert widths, dom[:500]
    assert [int(w) > 0 for w in widths[1].split(",")] == [True] * 4
    shot = tmp_path / "report.png"
    _chromium(["--window-size=1100,2400", "--hide-scrollbars", f"--screenshot={shot}",
               page.as_uri()])
    img = Image.open(shot).convert("RGB")
    assert img.size == (1100, 2400)
    colours = img.getcolors(maxcolors=1 << 20) or []
    white = sum(n for n, c in colours if min(c) > 245)
    assert len(colours) > 50 and white < 0.95 * img.width * img.height
    keep = os.environ.get("DATAMILL_REPORT_SCREENSHOT")  # e.g. docs/report.png, for the README
    if keep:
        shutil.copyfile(shot, keep)


def test_artifacts_published(sample_run: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    keys = ["datamill-gallery", "datamill-score-histograms", "datamill-corpus-size",
            "datamill-bpb-by-source"]
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=keys)))
    mine = {a.key: a for a in arts if sample_run["run_id"] in (a.description or "")}
    assert set(mine) == set(keys)
    for key in keys[1:]:
        assert mine[key].type == "markdown"
        assert "](data:image/png;base64," in str(mine[key].data)
    gallery = str(mine["datamill-gallery"].data)
    assert "gopher\\_quality\\.min\\_words" in gallery or "`gopher_quality.min_words`" in gallery
