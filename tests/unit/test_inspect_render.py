"""A document whose text and source hold markdown and HTML (`<script>`, `**bold**`, `|`,
`[x](y)`, rich markup, a terminal escape) reads as itself in the terminal (`datamill inspect`),
the HTML report's gallery and the gallery's markdown artifact: never as markup."""

from __future__ import annotations

import html
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from test_inspect import EVIL_SOURCE, build_run

from flows.cli import main
from flows.cli.inspect import render
from tasks import inspect as ins
from tasks import report


@pytest.fixture(scope="module")
def mini(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_run(tmp_path_factory.mktemp("mini-render"))


@pytest.fixture(scope="module")
def with_extras(mini: dict[str, Any]) -> dict[str, Any]:
    """The run with its gallery and figures computed once (as the flow's report does)."""
    run = dict(mini)
    report.extras(run)
    return run


@pytest.fixture(scope="module")
def evil(mini: dict[str, Any]) -> dict[str, Any]:
    return ins.inspect_run(mini, source=EVIL_SOURCE, n=3)


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(doc: str) -> Tags:
    p = Tags()
    p.feed(doc)
    return p


def test_terminal_shows_markup_as_text(evil: dict[str, Any]) -> None:
    buf = io.StringIO()
    from rich.console import Console

    render(evil, Console(file=buf, width=400, color_system=None, highlight=False))
    out = buf.getvalue()
    assert EVIL_SOURCE in out  # rich markup ([x]) and HTML printed as they are
    assert "<script>alert('x')</script> **bold** | [x](y) [bold]rich[/bold]" in out
    assert "\x1b" not in out and "\ufffd[31mred" in out  # the escape cannot drive the tty


def test_cli_json_is_strict_and_terminal_runs(mini: dict[str, Any],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from tasks.catalog import Catalog

    root = Path(mini["stages"][0]["output_path"]).parents[2]
    cat = Catalog(root / "catalog.duckdb")  # the run, recorded as the flow records it
    cat.start_run("r-test", "t", "t.yaml", {})
    for s in mini["stages"]:
        m = json.loads((Path(s["output_path"]) / "manifest.json").read_text())
        cat.record_stage("r-test", {"rejections": {}, **m, "stage": s["stage"],
                                    "version": s["version"]}, 1.0, s["output_path"], False)

    def no_constants(name: str) -> None:
        raise ValueError(name)

    args = ["inspect", "latest", "--data-root", str(root), "--json", "-n", "2",
            "--random-kept", "3", "--chars", "40"]
    assert main([*args, "--seed", "7"]) == 0
    out = json.loads(capsys.readouterr().out, parse_constant=no_constants)
    assert out["run_id"] == "r-test" and len(out["random_kept"]) == 3
    assert out["options"]["seed"] == 7 and out == ins.inspect_run(
        mini, n=2, random_kept=3, seed=7, chars=40)
    assert all(len(d["excerpt"]) <= 41 for d in out["random_kept"])
    assert main(["inspect", "r-test", "--data-root", str(root), "--rule",
                 "gopher_quality.min_words", "-n", "1"]) == 0
    assert "gopher_quality.min_words" in capsys.readouterr().out
    assert main(["inspect", "r-test", "--data-root", str(root), "--rule", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no rule nope" in err and "gopher_quality.min_words" in err  # the run's rules


def test_html_gallery_escapes(with_extras: dict[str, Any], evil: dict[str, Any],
                              tmp_path: Path) -> None:
    frag = report.gallery_html(evil)
    p = _parse(frag)
    assert not [t for t, _ in p.tags if t in ("script", "img", "a", "strong", "b")]
    text = "".join(p.text)
    assert EVIL_SOURCE in text and "<script>alert('x')</script> **bold** | [x](y)" in text
    assert html.escape(EVIL_SOURCE) in frag
    # the whole report: its only images are its own figures, as data URIs
    doc = report.write_html(with_extras, tmp_path / "r.html").read_text()
    tags = _parse(doc).tags
    imgs = [a for t, a in tags if t == "img"]
    assert len(imgs) == 2 and all(a["src"].startswith("data:image/png;base64,") for a in imgs)
    assert not [t for t, _ in tags if t in ("script", "a")]
    assert "Gallery: what each rule dropped and kept" in doc


def test_markdown_gallery_escapes(evil: dict[str, Any], with_extras: dict[str, Any]) -> None:
    markdown_it = pytest.importorskip("markdown_it")
    md = report.gallery_markdown(evil)
    out = markdown_it.MarkdownIt("commonmark").enable("table").render(md)
    assert not re.search(r"<(a|img|script|strong)\b", out)  # (_none_ is the table's own em)
    text = html.unescape(re.sub(r"<[^>]+>", "", out))
    assert EVIL_SOURCE in text and "<script>alert('x')</script> **bold** | [x](y)" in text
    # every table row keeps its columns: a "|" in a value does not open a cell
    for table in re.findall(r"<table>.*?</table>", out, flags=re.S):
        widths = {len(re.findall(r"<t[dh]\b", row)) for row in re.findall(r"<tr>.*?</tr>",
                                                                          table, flags=re.S)}
        assert len(widths) == 1, widths
    arts = dict((k, m) for k, _, m in report.extra_artifacts(with_extras))
    assert set(arts) == {"datamill-gallery", "datamill-score-histograms",
                         "datamill-corpus-size"}
    assert "](data:image/png;base64," in arts["datamill-score-histograms"]
    rendered = markdown_it.MarkdownIt("commonmark").enable("table").render(
        arts["datamill-gallery"])
    assert not re.search(r"<(a|img|script|strong)\b", rendered)
