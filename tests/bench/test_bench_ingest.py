"""Ingest throughput (before / after / the physical limit), language id agreement and HTML
extraction overhead.

All through ``tasks.ingest.ingest_file`` with a default ``IngestConfig`` (normalisation and
language id on, as a recipe gets them):

1. JSONL throughput, one process, each side in a fresh interpreter (warmed first: imports,
   fastText model, ftfy tables; the fastest of ``RUNS``): MB/s of input and of text (the
   UTF-8 bytes of the ``text`` fields), per CPU-second (one core) and per wall second.
   *before*: the ingest code of ``DATAMILL_BENCH_BEFORE`` (default ``BEFORE``, the commit
   before the ingest speed work: ftfy on every text its gate flagged, whole lines for ftfy,
   a 2,000-character prefix for fastText, ``json`` line by line), run from a ``git archive``
   of that commit's ``tasks/``; *after*: this tree; *limit*: ``pyarrow.json.read_json`` of
   the same bytes plus a zstd Parquet write of the table.
2. Language id: the sampled label (``langid.identify``) against fastText on the whole text
   (``langid.identify_whole``), on every document of the corpus without a ``lang`` (those
   ingest identifies by default), per source, and the 2,000-character prefix for comparison.
3. HTML: datamill's ingest of a folder of pages (``format: html``) vs the bare extractor
   (``trafilatura.extract`` / resiliparse's ``extract_plain_text`` with datamill's settings)
   in a loop over the same files: pages/s and the ratio.
(4. one large file on 1 and 2 workers and 5. peak memory: ``test_bench_ingest_scale.py``.)

Corpus: ``data/bench/jsonl/*.jsonl.gz`` and ``data/bench/html/`` (``make corpus``) if present,
else ``data/sample/sample.jsonl`` repeated ``DATAMILL_BENCH_SCALE`` times (default 3) and its
175 ``html`` fields written as pages. From the corpus, ``DATAMILL_BENCH_MB`` (default
``3 * scale``) MB of JSONL are taken (spread over the sources) and ``60 * scale`` pages.
Prints tables; asserts only that every input document was accounted for and that both sides
of a comparison read the same documents.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ingestkit import BENCH_JSONL, ROOT, RUNS, pages, records, timed, write
from ingestkit import ingest as run_ingest

from tasks.recipe import IngestConfig

BEFORE = "9f62890"  # the commit before the ingest speed work (tasks/ingest, normalize, langid)
TARGET_MBS = 20.0  # MB of text per second per core


# ----------------------------------------------------------------------------- benchmarks
def test_bench_ingest(bench_scale: int, tmp_path: Path, table: Callable[..., str],
                      monkeypatch: pytest.MonkeyPatch) -> None:
    lines, label = records(bench_scale)
    src = write(tmp_path / "input.jsonl", lines)
    write(tmp_path / "warm.jsonl", lines[:50])
    _bench_throughput(src, label, len(lines), tmp_path, table)
    with monkeypatch.context() as m:
        _bench_langid(lines, table, m)

    # 3. HTML: datamill's folder ingest vs the bare extractor
    folder, files, plabel = pages(bench_scale, tmp_path)
    html_mb = sum(f.stat().st_size for f in files) / 2**20
    rows = []
    for name in ("trafilatura", "resiliparse"):
        bare = _bare_extractor(name)
        bare(files[0].read_bytes().decode("utf-8", "replace"))  # warm-up
        t0 = time.perf_counter()
        got = 0
        for f in files:
            got += bool(bare(f.read_bytes().decode("utf-8", "replace")))
        t_bare = time.perf_counter() - t0
        hcfg = IngestConfig(extractor=name)
        run_ingest(files[0], f"warm-{name}", tmp_path / "warm", "html", hcfg)
        t0 = time.perf_counter()
        st = run_ingest(folder, f"html-{name}", tmp_path / f"out-{name}", "html", hcfg)
        t_dm = time.perf_counter() - t0
        assert st["docs_in"] == len(files)
        rows.append([name, len(files), f"{len(files) / t_bare:,.1f}",
                     f"{len(files) / t_dm:,.1f}", f"{t_dm / t_bare:.2f}x",
                     f"{got}/{st['docs_kept']}"])
    print(f"\nHTML extraction: {plabel}, {html_mb:.1f} MB")
    print(table(["extractor", "pages", "bare pages/s", "datamill pages/s",
                 "datamill/bare time", "non-empty bare/kept"], rows))



def _bare_extractor(name: str) -> Callable[[str], str | None]:
    if name == "trafilatura":
        import trafilatura

        def run(html: str) -> str | None:
            return trafilatura.extract(
                html, favor_precision=True, include_comments=False, include_tables=True,
                include_images=False, include_links=False, deduplicate=False,
                with_metadata=False, output_format="txt")
        return run
    from resiliparse.extract.html2text import extract_plain_text

    def run2(html: str) -> str | None:
        return extract_plain_text(html, main_content=True, preserve_formatting=True,
                                  list_bullets=True, alt_texts=False, links=False,
                                  form_fields=False, noscript=False, comments=False)
    return run2


# ----------------------------------------------------------------------------- 1. throughput
def _before_tree(tmp: Path) -> Path | None:
    """The ingest code of the "before" commit, unpacked (None when git or the commit is
    missing, e.g. in a shallow clone)."""
    rev = os.environ.get("DATAMILL_BENCH_BEFORE", BEFORE)
    tree = tmp / f"before-{rev}"
    tree.mkdir()
    try:
        arch = subprocess.run(["git", "archive", rev, "tasks"], cwd=ROOT, capture_output=True,
                              check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=arch, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return tree


def _limit(src: Path, tmp: Path) -> dict[str, Any]:
    """pyarrow's JSON reader and a zstd Parquet write of the same bytes, in this process."""
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    best: dict[str, Any] = {}
    for _ in range(RUNS):
        t0, c0 = time.perf_counter(), time.process_time()
        t = pj.read_json(src)
        pq.write_table(t, tmp / "limit.parquet", compression="zstd")
        got = {"s": time.perf_counter() - t0, "cpu": time.process_time() - c0,
               "docs": t.num_rows}
        best = got if not best or got["cpu"] < best["cpu"] else best
    return best


def _bench_throughput(src: Path, label: str, n: int, tmp: Path,
                      table: Callable[..., str]) -> None:
    mb = src.stat().st_size / 2**20
    text_mb = sum(len(json.loads(ln)["text"].encode()) for ln in
                  src.read_bytes().splitlines() if ln.strip()) / 2**20
    runs: list[tuple[str, dict[str, Any] | None]] = []
    before = _before_tree(tmp)
    runs.append((f"before ({os.environ.get('DATAMILL_BENCH_BEFORE', BEFORE)})",
                 timed(before, src, tmp, "before") if before else None))
    runs.append(("after (this tree)", timed(ROOT, src, tmp, "after")))
    runs.append(("limit: pyarrow JSON + zstd Parquet", _limit(src, tmp)))
    rows: list[list[object]] = []
    for name, r in runs:
        if r is None:
            rows.append([name, "-", "-", "-", "-", "-", "skipped: no git history"])
            continue
        assert r["docs"] == n
        rows.append([name, r["docs"], f"{r['s']:.2f}", f"{r['cpu']:.2f}", f"{mb / r['cpu']:.1f}",
                     f"{text_mb / r['cpu']:.1f}", f"{text_mb / r['s']:.1f}"])
    if runs[0][1] is not None:
        assert runs[0][1]["kept"] == runs[1][1]["kept"]  # type: ignore[index]
    after = runs[1][1]["cpu"]  # type: ignore[index]
    print(f"\n\nIngest throughput: {label}: {mb:.1f} MB of JSONL, {text_mb:.1f} MB of text; "
          f"1 process, the fastest of {RUNS}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; target >= {TARGET_MBS:g} MB/s of text per core")
    print(table(["path", "docs", "wall s", "CPU s", "input MB/s/core", "text MB/s/core",
                 "text MB/s wall"], rows))
    if runs[0][1] is not None:
        print(f"after / before: {runs[0][1]['cpu'] / after:.1f}x")


# ----------------------------------------------------------------------------- 2. language id
def _bench_langid(lines: list[bytes], table: Callable[..., str], mp: pytest.MonkeyPatch
                  ) -> None:
    from tasks import langid

    read = [0]  # characters given to fastText
    predict = langid._predict

    def counted(prepared: list[str], langs: Any, scores: Any, rows: list[int]) -> None:
        read[0] += sum(len(prepared[i]) for i in rows)
        predict(prepared, langs, scores, rows)

    mp.setattr(langid, "_predict", counted)

    files = sorted(BENCH_JSONL.glob("*.jsonl.gz")) if BENCH_JSONL.is_dir() else []
    docs: list[tuple[str, str]] = []
    if files:
        for f in files:
            with gzip.open(f, "rt", encoding="utf-8") as fh:
                docs += [(f.name.split(".")[0], r["text"]) for r in map(json.loads, fh)
                         if r.get("lang") is None]
        where = "data/bench/jsonl, every document without a lang"
    else:
        docs = [("sample", json.loads(ln)["text"]) for ln in lines[:2500]]
        where = "the throughput input"
    texts = [t for _, t in docs]
    t0 = time.process_time()
    got, _ = langid.identify(texts)
    t_sample, n_sample = time.process_time() - t0, read[0]
    want, _ = langid.identify_whole(texts)
    n_whole = read[0] - n_sample
    prefix, _ = langid.identify_whole([t[:2000] for t in texts])
    n_prefix = read[0] - n_sample - n_whole
    by: dict[str, list[int]] = {}
    for i, (src, _) in enumerate(docs):
        by.setdefault(src, []).append(i)
    rows: list[list[object]] = []
    for name, idx in [*sorted(by.items()), ("all", list(range(len(docs))))]:
        rows.append([name, len(idx),
                     f"{sum(got[i] == want[i] for i in idx) / len(idx) * 100:.2f}",
                     f"{sum(prefix[i] == want[i] for i in idx) / len(idx) * 100:.2f}"])
    print(f"\nLanguage id vs fastText on the whole text: {where} ({len(texts)} docs); "
          f"characters read by fastText: sampled {n_sample / 1e6:.1f} M ({t_sample:.1f} CPU s), "
          f"2,000-char prefix {n_prefix / 1e6:.1f} M, whole {n_whole / 1e6:.1f} M; "
          f"target >= 99 %")
    print(table(["source", "docs", "sampled: same label %", "2,000-char prefix: same %"],
                rows))
