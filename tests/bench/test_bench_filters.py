"""datamill's quality filters vs datatrove's: speed and keep/drop agreement, same docs, same run.

Filters (both sides at their defaults, i.e. the published thresholds):

==================  ==========================================  ============================
datamill            module                                      datatrove
==================  ==========================================  ============================
gopher_quality      tasks/filters/gopher.py                     GopherQualityFilter
gopher_repetition   tasks/filters/gopher_repetition.py          GopherRepetitionFilter
c4_quality          tasks/filters/c4.py                         C4QualityFilter
fineweb_quality     tasks/filters/fineweb.py                    FineWebQualityFilter
==================  ==========================================  ============================

datatrove runs in its own virtualenv (``.bench-venv``, git-ignored, created on first use) as a
subprocess; datamill runs in this process on a pyarrow table, through the filter stage's own
functions (``tasks.filter.score_table`` then ``first_failure``: score, then decide). Each side
is timed over the whole corpus after a short warm-up, without the cost of building its input
(pyarrow table / datatrove ``Document`` objects). Only the keep/drop decision is compared:
datatrove's C4 filter also edits the kept text, datamill's never does.

"All four chained" runs the filters in FineWeb's order (repetition, quality, C4, FineWeb). On
the datatrove side that is a real pipeline: a dropped doc leaves early and C4's line edits are
what the FineWeb filter sees. datamill runs the same with its ``c4_lines`` edit step before
``c4_quality``: it scores all steps, then decides (first failing rule).

Agreement is split in three: docs both sides decide alike; *deliberate* disagreements, which
datatrove's own filter code reproduces once it is given datamill's two deliberate choices
(whitespace words instead of spaCy tokens, which count every punctuation mark as a word; no
stop-word rule for a language without a stop-word list, where datatrove applies English stop
words to every document) — the datatrove script re-runs each filter that way; and the
*unexplained* rest, held to the 99.5 % target.

datatrove is given no language (its default: English word tokenizer, English stop words) for
every doc; datamill reads each doc's ``lang``. Docs in a language written without spaces
(``zh``, ``ja``, ...) are counted apart: datamill switches its word rules off there on purpose.

Corpus: ``data/bench/jsonl/*.jsonl.gz`` (``make corpus``) if present, else
``data/sample/sample.jsonl`` repeated ``DATAMILL_BENCH_SCALE`` times (default 3);
``DATAMILL_BENCH_CORPUS=sample`` takes the sample (en, fr, es, zh, ...) even when the
benchmark corpus exists.
``DATAMILL_BENCH_DASK=0`` skips the optional datamill-on-Dask row.
``DATAMILL_BENCH_DATATROVE_PY`` names another interpreter that has datatrove installed
(instead of ``.bench-venv``). Per-doc disagreements are written to
``.datamill/bench/filter_disagreements.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample" / "sample.jsonl"
BENCH_DATA = ROOT / "data" / "bench"
BENCH_VENV = ROOT / ".bench-venv"
DATATROVE_PINS = ["datatrove==0.10.1", "spacy==3.8.18", "regex==2026.11.15",
                  "tokenizers==0.23.3", "xxhash==3.8.2",
                  "orjson==3.13.0"]  # the last three: datatrove's MinHash dedup and JSONL reader

# FineWeb's pipeline order; also the order of the table rows
FILTERS = ["gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"]
CHAIN = "all four chained"
DM_CHAIN = ["gopher_repetition", "gopher_quality", "c4_lines", "c4_quality", "fineweb_quality"]
SPEED_TARGET = 3.0
AGREE_TARGET = 99.5
AGREE_FLOOR = 90.0  # sanity floor per filter, once deliberate differences are set apart

DATATROVE_SCRIPT = r'''
"""Run datatrove's filters over a JSONL of {"text": ...} docs; write decisions and timings."""
import importlib.metadata
import json
import sys
import time

from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)

CLASSES = {
    "gopher_quality": GopherQualityFilter,
    "gopher_repetition": GopherRepetitionFilter,
    "c4_quality": C4QualityFilter,
    "fineweb_quality": FineWebQualityFilter,
}


def decide(flt, doc):
    """(keep, reason); an exception inside the filter drops the doc with reason error:<type>."""
    try:
        r = flt.filter(doc)
    except Exception as e:  # datatrove divides by zero on some degenerate texts
        return False, "error:" + type(e).__name__
    if isinstance(r, tuple):
        return bool(r[0]), "" if r[0] else str(r[1])
    return bool(r), "" if r else "dropped"


def docs_of(texts):
    return [Document(text=t, id=str(i)) for i, t in enumerate(texts)]


def main(docs_path, out_path, names):
    with open(docs_path, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    texts = [r["text"] for r in rows]
    warm = texts[:20]
    version = importlib.metadata.version("datatrove")
    out = {"version": version, "ids": [r["id"] for r in rows], "filters": {}}
    for name in names:
        flt = CLASSES[name]()
        for d in docs_of(warm):  # loads spaCy and fills lazy caches
            decide(flt, d)
        docs = docs_of(texts)
        t0 = time.perf_counter()
        res = [decide(flt, d) for d in docs]
        seconds = time.perf_counter() - t0
        out["filters"][name] = {
            "seconds": seconds, "keep": [k for k, _ in res], "reason": [r for _, r in res]}

    chain = [(n, CLASSES[n]()) for n in names]
    docs = docs_of(texts)
    keep, reason = [], []
    t0 = time.perf_counter()
    for d in docs:
        for name, flt in chain:  # a pipeline: a dropped doc leaves; C4's line edits carry on
            k, r = decide(flt, d)
            if not k:
                keep.append(False)
                reason.append(name + "." + r)
                break
        else:
            keep.append(True)
            reason.append("")
    out["chain"] = {"seconds": time.perf_counter() - t0, "keep": keep, "reason": reason}
    if DM:  # datamill's choices given: the counterfactual pass
        out["counterfactual"] = counterfactual(rows, names)
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(out, fh)


def counterfactual(rows, names):
    """datatrove's own filter code, given each of datamill's documented deliberate choices
    (tasks/filters/*.py docstrings): whitespace words, cut to their letters/digits for the
    repetition n-grams (not spaCy tokens, which count every punctuation mark as a word); a top
    n-gram that occurs once scores 0; no stop-word rule for a language without a stop-word
    list (datatrove applies English stop words to every doc); stop words matched and word
    lengths measured on lowercased word cores; terminal punctuation of other
    scripts and typographic quotes; lines without trailing whitespace; the language-aware
    sentence rule instead of Punkt. A disagreement that disappears here is explained by those
    choices; what remains is an implementation difference."""
    import re
    from collections import Counter

    import datatrove.pipeline.filters.c4_filters as c4f
    import datatrove.pipeline.filters.fineweb_quality_filter as fq
    import datatrove.pipeline.filters.gopher_quality_filter as gq
    import datatrove.pipeline.filters.gopher_repetition_filter as gr

    word = re.compile(r"[^\W_]")

    def ws(text, language=None):
        return text.split()

    def cores(text, language=None):
        out = []
        for t in text.split():
            idx = [i for i, ch in enumerate(t) if word.match(ch) or ch.isalnum()]
            if idx:
                out.append(t[idx[0]:idx[-1] + 1])
        return out

    class Tok(str):
        """A whitespace token that measures, hashes and compares as its lowercased core (the
        letters/digits inside), as datamill's Gopher words do; iterating it still yields
        every character (the alphabetic-word check looks at the whole token)."""

        def _core(self):
            c = cores(str(self))
            return c[0] if c else ""

        def __len__(self):
            return len(self._core())

        def __hash__(self):
            return hash(self._core().lower())

        def __eq__(self, other):
            return self._core().lower() == str(other)

    def gopher_words(text, language=None):
        return [Tok(t) for t in text.split()]

    def top_duplicate(x):
        gram, n = Counter(x).most_common(1)[0]
        return len(gram) * n if n > 1 else 0

    sentence_end = re.compile(DM["sentence_re"])
    gq.split_into_words = gopher_words
    fq.split_into_words = ws
    gr.split_into_words = cores
    gr.find_top_duplicate = top_duplicate
    c4f.END_PUNCTUATION = tuple(DM["c4_terminal"])
    c4f.ELLIPSIS = ("...", "\u2026")
    c4f.split_into_sentences = lambda text, language=None: [""] * (
        1 + len(sentence_end.findall(text)))
    fineweb_stops = tuple(DM["fineweb_terminal"])

    def make(name, lang):
        if name == "fineweb_quality":
            return CLASSES[name](stop_chars=fineweb_stops)
        if name == "gopher_quality" and lang not in DM["stop_langs"]:
            return CLASSES[name](min_stop_words=None)
        return CLASSES[name]()

    def lang_of(r):
        return (r.get("lang") or "en").lower().replace("_", "-").split("-")[0]

    def strip_lines(text):
        return "\n".join(line.rstrip() for line in text.split("\n"))

    langs = sorted({lang_of(r) for r in rows})
    filters = {(n, la): make(n, la) for n in names for la in langs}
    out = {}
    for name in names:
        keep = []
        for r in rows:
            text = strip_lines(r["text"]) if name == "fineweb_quality" else r["text"]
            flt = filters[(name, lang_of(r))]
            keep.append(decide(flt, Document(text=text, id=str(r["id"])))[0])
        out[name] = keep
    chain = []
    for r in rows:  # the chain, patched the same way; C4's line edits carry on
        doc = Document(text=r["text"], id=str(r["id"]))
        for name in names:
            if name == "fineweb_quality":
                doc.text = strip_lines(doc.text)
            if not decide(filters[(name, lang_of(r))], doc)[0]:
                chain.append(False)
                break
        else:
            chain.append(True)
    out["chain"] = chain
    return out


DM = json.loads(sys.argv[4])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3].split(","))
'''


# --------------------------------------------------------------------------- corpus


def load_corpus(scale: int) -> tuple[list[dict[str, Any]], str]:
    # `make corpus` writes data/bench/jsonl/<source>.jsonl.gz; take an equal share of each
    # source, scale x 2,247 docs in all (the sample's size), so a run stays minutes long
    files = sorted((BENCH_DATA / "jsonl").glob("*.jsonl*")) if BENCH_DATA.is_dir() else []
    if os.environ.get("DATAMILL_BENCH_CORPUS") == "sample":  # the multilingual sample instead
        files = []
    if files:
        import gzip

        share = max(1, scale * 2247 // len(files))
        docs = []
        for f in files:
            with (gzip.open(f, "rt", encoding="utf-8") if f.suffix == ".gz"
                  else f.open(encoding="utf-8")) as fh:
                for n, line in enumerate(fh):
                    if n >= share:
                        break
                    if line.strip():
                        docs.append(json.loads(line))
        label = f"{len(files)} source(s) in {BENCH_DATA.relative_to(ROOT)}/jsonl, {share} each"
    else:
        base = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
        docs = [{**d, "id": f"{d.get('id', i)}#{r}"} for r in range(scale)
                for i, d in enumerate(base)]
        label = f"{SAMPLE.relative_to(ROOT)} x {scale}"
    for i, d in enumerate(docs):
        d.setdefault("id", str(i))
        d["text"] = d.get("text") or ""
    return docs, label


def lang_groups(langs: list[str | None]) -> dict[str, np.ndarray]:
    """Masks: en (and no lang), other languages written with spaces, no-space languages."""
    from tasks.filters.text import DEFAULT_NO_SPACE_LANGS, NoSpaceLangs, norm_lang

    no_space = NoSpaceLangs(DEFAULT_NO_SPACE_LANGS)
    ns = np.array([no_space(x) for x in langs], dtype=bool)
    en = np.array([x is None or norm_lang(x).split("-", 1)[0] == "en" for x in langs], dtype=bool)
    en &= ~ns
    return {"en": en, "other": ~ns & ~en, "spaced": ~ns, "no_space": ns}


# --------------------------------------------------------------------------- datatrove side


def datatrove_python() -> Path:
    """An interpreter with datatrove: $DATAMILL_BENCH_DATATROVE_PY, else .bench-venv (made
    here on first use with the pinned versions)."""
    explicit = os.environ.get("DATAMILL_BENCH_DATATROVE_PY")
    if explicit:
        return Path(explicit)
    py = BENCH_VENV / "bin" / "python"
    probe = "import datatrove, spacy, tokenizers, xxhash, orjson"
    if py.exists() and subprocess.run([str(py), "-c", probe], capture_output=True).returncode == 0:
        return py
    base = shutil.which("python3.11") or shutil.which("python3") or sys.executable
    print(f"\ncreating {BENCH_VENV.name} with {' '.join(DATATROVE_PINS)} ...", flush=True)
    try:
        if not py.exists():
            subprocess.run([base, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *DATATROVE_PINS], check=True)
    except subprocess.CalledProcessError as e:
        pytest.skip(f"could not set up {BENCH_VENV} (offline?): {e}")
    return py


def run_datatrove(py: Path, docs: list[dict[str, Any]], workdir: Path,
                  counterfactual: bool = True) -> dict[str, Any]:
    """datatrove's decisions per filter and chained (and, with ``counterfactual``, the
    counterfactual pass)."""
    docs_path, out_path, script = workdir / "docs.jsonl", workdir / "dt.json", workdir / "dt.py"
    with docs_path.open("w", encoding="utf-8") as fh:
        for d in docs:
            fh.write(json.dumps({"id": d["id"], "text": d["text"], "lang": d.get("lang")},
                                ensure_ascii=False) + "\n")
    script.write_text(DATATROVE_SCRIPT, encoding="utf-8")
    env = {**os.environ, "LOGURU_LEVEL": "WARNING", "HF_HUB_OFFLINE": "1"}
    from tasks.filters import c4, fineweb, gopher

    choices = json.dumps({  # datamill's deliberate choices, for the counterfactual pass
        "stop_langs": sorted(gopher.Config().stop_words),
        "c4_terminal": c4.Config().terminal_punct,
        "fineweb_terminal": fineweb.Config().terminal_punct,
        "sentence_re": c4._boundary_re().pattern,
    })
    proc = subprocess.run([str(py), str(script), str(docs_path), str(out_path), ",".join(FILTERS),
                           choices if counterfactual else "{}"],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"datatrove run failed:\n{proc.stderr[-4000:]}")
    return json.loads(out_path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- datamill side


def datamill_decide(table: pa.Table, names: list[str]) -> tuple[np.ndarray, float]:
    """(first failing rule per doc, '' = kept; seconds to score + decide)."""
    from tasks.filter import first_failure, score_table
    from tasks.filters.base import get_filter

    configs = {n: get_filter(n).Config() for n in names}
    first_failure(score_table(table.slice(0, 20), configs, None), configs)  # warm-up
    t0 = time.perf_counter()
    reason, _ = first_failure(score_table(table, configs, None), configs)
    return reason, time.perf_counter() - t0


def datamill_dask(table: pa.Table, names: list[str], workers: int = 2) -> tuple[np.ndarray, float]:
    """The chain on a LocalCluster of `workers` single-threaded processes, one task pair
    (score -> decide) per chunk. Cluster start, warm-up and scattering the chunks are not
    timed; gathering the decisions is."""
    import logging

    from distributed import Client, LocalCluster

    from tasks.filter import first_failure, score_table
    from tasks.filters.base import get_filter

    logging.getLogger("distributed").setLevel(logging.WARNING)
    configs = {n: get_filter(n).Config() for n in names}
    n_chunks = workers * 4
    bounds = np.linspace(0, len(table), n_chunks + 1).astype(int)
    chunks = [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        warm = [client.submit(score_table, table.slice(i, 5), configs, None, pure=False)
                for i in range(workers * 2)]
        client.gather([client.submit(first_failure, w, configs, pure=False) for w in warm])
        # hash=False: dask tokenizes a pyarrow slice without its offset, so hashed keys would
        # make every equal-length chunk one and the same remote table
        remote = client.scatter(chunks, hash=False)
        t0 = time.perf_counter()
        scored = [client.submit(score_table, c, configs, None, pure=False) for c in remote]
        decided = client.gather([client.submit(first_failure, s, configs, pure=False)
                                 for s in scored])
        seconds = time.perf_counter() - t0
    return np.concatenate([r for r, _ in decided]), seconds


# --------------------------------------------------------------------------- report


def pct(mask: np.ndarray, agree: np.ndarray) -> str:
    return f"{100 * agree[mask].mean():.2f}" if mask.any() else "-"


def test_filters_vs_datatrove(
    tmp_path: Path, bench_scale: int, bench_out: Path, table: Callable[..., str]
) -> None:
    docs, label = load_corpus(bench_scale)
    n = len(docs)
    langs = [d.get("lang") for d in docs]
    groups = lang_groups(langs)
    arrow = pa.table({"id": [d["id"] for d in docs], "text": [d["text"] for d in docs],
                      "lang": pa.array(langs, pa.string())})

    py = datatrove_python()
    t_dt = time.perf_counter()
    dt = run_datatrove(py, docs, tmp_path)
    t_dt = time.perf_counter() - t_dt
    assert dt["ids"] == [d["id"] for d in docs], "datatrove answered for other docs"

    dm: dict[str, tuple[np.ndarray, float]] = {f: datamill_decide(arrow, [f]) for f in FILTERS}
    dm[CHAIN] = datamill_decide(arrow, DM_CHAIN)
    dt_res = {**dt["filters"], CHAIN: dt["chain"]}
    cf = dt["counterfactual"]

    rows, details, reasons_out = [], {}, []
    floors: dict[str, float] = {}
    spaced = groups["spaced"]
    for name in [*FILTERS, CHAIN]:
        dm_reason, dm_s = dm[name]
        dm_keep = dm_reason == ""
        dt_keep = np.array(dt_res[name]["keep"], dtype=bool)
        dt_reason = dt_res[name]["reason"]
        assert len(dm_keep) == len(dt_keep) == n
        agree = dm_keep == dt_keep
        # disagreements that datatrove's own code reproduces once given datamill's deliberate
        # choices (whitespace words; no stop-word rule without a list) are counted apart
        cf_keep = cf.get("chain" if name == CHAIN else name)
        explained = (~agree & (dm_keep == np.array(cf_keep, dtype=bool))) \
            if cf_keep is not None else np.zeros(n, dtype=bool)
        unexplained = ~agree & ~explained
        dm_rate, dt_rate = n / dm_s, n / dt_res[name]["seconds"]
        ratio = dm_rate / dt_rate
        fidelity = 100 * (1 - unexplained[spaced].mean()) if spaced.any() else 100.0
        rows.append([
            name, f"{dm_rate:,.0f}", f"{dt_rate:,.0f}", f"{ratio:.1f}x",
            "PASS" if ratio >= SPEED_TARGET else "MISS",
            pct(spaced, agree), f"{100 * explained[spaced].mean():.2f}",
            f"{100 * unexplained[spaced].mean():.2f}",
            "PASS" if fidelity >= AGREE_TARGET else "MISS",
            pct(groups["en"], agree), pct(groups["other"], agree), pct(groups["no_space"], agree),
            f"{100 * dm_keep.mean():.1f}/{100 * dt_keep.mean():.1f}",
        ])
        floors[name] = fidelity
        per_group = {}
        for g in ("en", "other", "no_space"):
            idx = np.flatnonzero(unexplained & groups[g])
            pairs = Counter((dm_reason[i] or "kept", dt_reason[i] or "kept") for i in idx)
            per_group[g] = pairs
        for i in np.flatnonzero(~agree):
            reasons_out.append({
                "filter": name, "id": docs[i]["id"], "lang": langs[i],
                "group": next(g for g in ("en", "other", "no_space") if groups[g][i]),
                "explained": bool(explained[i]),
                "datamill": dm_reason[i] or "kept", "datatrove": dt_reason[i] or "kept",
                "text_head": docs[i]["text"][:300]})
        details[name] = per_group

    dask_line = None
    if os.environ.get("DATAMILL_BENCH_DASK", "1") != "0":
        try:
            dask_reason, dask_s = datamill_dask(arrow, DM_CHAIN)
            assert (dask_reason == dm[CHAIN][0]).all(), "Dask run decided differently"
            dask_line = (f"datamill chain on Dask (2 worker processes): {n / dask_s:,.0f} docs/s "
                         f"= {dm[CHAIN][1] / dask_s:.2f}x datamill in-process, "
                         f"{(n / dask_s) / (n / dt_res[CHAIN]['seconds']):.1f}x datatrove "
                         "single-process")
        except (ImportError, OSError) as e:  # no distributed, no sockets
            dask_line = f"datamill chain on Dask: not measured ({e})"

    (bench_out / "filter_disagreements.json").write_text(
        json.dumps(reasons_out, ensure_ascii=False, indent=1), encoding="utf-8")
    for name in FILTERS:  # a sanity floor, checked once the disagreements are on disk
        assert floors[name] >= AGREE_FLOOR, f"{name}: {floors[name]:.1f}% unexplained agreement"

    counts = {g: int(m.sum()) for g, m in groups.items()}
    print(f"\n\n=== filters: datamill vs datatrove {dt['version']} "
          f"(baseline: datatrove, same docs, same run) ===")
    print(f"corpus: {label} = {n:,} docs (en {counts['en']:,}, other spaced languages "
          f"{counts['other']:,}, no-space languages {counts['no_space']:,}); "
          f"cpus {os.cpu_count()}, load avg {os.getloadavg()[0]:.2f}; "
          f"datatrove subprocess wall {t_dt:.0f} s")
    print(table(
        ["filter", "datamill docs/s", "datatrove docs/s", "ratio", f">={SPEED_TARGET:g}x",
         "agree %", "deliberate %", "unexplained %", f"<={100 - AGREE_TARGET:.1f}%", "en",
         "other", "no-space", "kept % dm/dt"],
        rows))
    print("agree / deliberate / unexplained: % of docs in languages written with spaces. "
          "'deliberate' = disagreements datatrove's own code reproduces when given datamill's "
          "documented choices (docs/filters.md: whitespace words cut to their cores, not spaCy "
          "tokens that count each punctuation mark as a word; no stop-word rule without a "
          "stop-word list; a top n-gram seen once scores 0; other scripts' terminal "
          "punctuation; a language-aware sentence rule); "
          "'unexplained' = the rest (target <= 0.5 %). en / other / no-space: plain agreement "
          "per language group; no-space languages (zh, ja, ...) differ on purpose (word rules "
          "off) and are not held to the target. The chain: datamill runs c4_lines before "
          "c4_quality, as datatrove's C4 filter edits lines before FineWeb sees them.")
    if dask_line:
        print(dask_line)
    print("\ntop unexplained disagreements per language group (datamill decision vs datatrove "
          "decision: docs; 'kept' = passes, else the first failing rule):")
    for name, per_group in details.items():
        for g, pairs in per_group.items():
            if not pairs:
                continue
            top = "; ".join(f"{a} vs {b}: {c}" for (a, b), c in pairs.most_common(4))
            print(f"  {name} [{g}, {sum(pairs.values())}]: {top}")
    print(f"per-doc disagreements: {(bench_out / 'filter_disagreements.json').relative_to(ROOT)}")
