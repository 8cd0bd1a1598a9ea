"""Data-derived text (source names, tasks, rules, column names) is escaped in every markdown
artifact and in the HTML report: a hostile source name renders as itself, never as a link,
an image or HTML."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks import report, report_decisions

EVIL = "[x](http://evil) ![i](http://evil/i.png) <script>"


def _run() -> dict[str, Any]:
    return {
        "run_id": "r1", "recipe": "tiny", "status": "completed",
        "started_at": "2024-01-01T00:00:00Z",
        "stages": [{"stage": "tokenize", "docs_in": 3, "docs_kept": 3, "docs_rejected": 0,
                    "cached": False, "seconds": 1.0, "version": "abc"}],
        "rejections": [{"stage": "filter", "rule": f"{EVIL} | rule", "docs": 1,
                        "docs_alone": 2}],
        "metrics": [{"seed": 0, "step": 0, "name": "tokenize.tokens_dropped", "value": 70.0},
                    {"seed": 0, "step": 0, "name": f"tokenize.tokens_dropped.{EVIL}",
                     "value": 63.0},
                    {"seed": 0, "step": 0, "name": "tokenize.tokens_dropped.web", "value": 7.0}],
        "evals": [{"seed": 0, "task": f"heldout/{EVIL}", "metric": "bpb", "value": 1.23456}],
    }


def _render(md: str) -> str:
    markdown_it = pytest.importorskip("markdown_it")
    return markdown_it.MarkdownIt("commonmark").enable("table").render(md)


def _assert_inert(md: str) -> None:
    """Rendered, nothing of EVIL is live markup: it reads as the text itself (inline code
    included, where the renderer shows it verbatim)."""
    out = _render(md)
    assert "<a " not in out and "<img" not in out and "<script>" not in out
    text = re.sub(r"<[^>]+>", "", out).replace("\\", "")
    # rendered text, HTML-escaped once more by the renderer: the name itself, literally
    assert ("[x](http://evil) ![i](http://evil/i.png) &lt;script&gt;" in text)


def test_markdown_summary_escapes_data(tmp_path: Path) -> None:
    md = report.markdown_summary(_run())
    _assert_inert(md)
    # escaped at the source, so no renderer (autolinking bare URLs or not) finds markup
    assert "](http" not in md and "<script>" not in md and "http://" not in md
    # the table keeps its shape: a "|" in a value does not open a cell
    rej = [line for line in md.splitlines() if "rule" in line and "filter" in line]
    assert len(rej) == 1 and rej[0].count(" | ") == 3
    assert "Tokens dropped in packing" in md and "| all sources | 70 |" in md
    out = _render(md)
    assert "<td>web</td>" in out and "<td>63</td>" in out


def test_html_report_escapes_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "loss_curve_png", lambda metrics: None)
    doc = report.write_html(_run(), tmp_path / "r.html").read_text()
    assert "<script>" not in doc and "<a " not in doc and "<img" not in doc
    assert html.escape(EVIL) in doc
    assert "Tokens dropped in packing" in doc and "<td>all sources</td><td>70</td>" in doc


def test_decisions_markdown_and_histograms_escape_data(tmp_path: Path) -> None:
    rows = [{"model": EVIL, "task": f"heldout/{EVIL}", "metric": "bpb", "a": 1.0, "b": 0.9,
             "diff": -0.1, "ci_low": -0.2, "ci_high": 0.0, "mde": 0.05, "items": 10,
             "seeds": 1, "snr": 3.0, "verdict": "better"}]
    md = report_decisions.decisions_markdown(f"ablation {EVIL}", {EVIL: "r1", "b`x": "r`2"},
                                             rows, [])
    _assert_inert(md)
    assert "| model | task |" in md

    from tasks.histograms import score_histograms

    f = tmp_path / "k.parquet"
    pq.write_table(pa.table({"id": ["a"], EVIL: pa.array([0.5], pa.float32())}), f)
    _assert_inert(score_histograms([f]))


def test_plain_values_stay_readable() -> None:
    assert report.md_escape(1.25) == "1.25" and report.md_escape(3) == "3"
    assert report.md_escape("web") == "web"
    assert report.md_code("f_frac") == "`f_frac`"
    assert report.md_code("a`b") == "a\\`b"
