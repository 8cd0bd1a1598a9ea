"""A small completed run for the export unit tests (no tests here): real Parquet shards of
kept documents, a real BPE tokenizer trained on them, stage manifests in their folders and a
real catalog with the run, its stages and rejections. No pipeline runs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.catalog import Catalog
from tasks.schema import DOC_SCHEMA

RUN_ID = "20260101-000000-abcdef"
HELDOUT = 0.2
SOURCES = [("wiki", "en", "CC-BY-SA-4.0"), ("docs", "fr", "Apache-2.0"), ("forum", "es", None)]
WORDS = ("river mountain quantum letter bridge garden engine winter harbor violin lantern "
         "meadow cobalt saffron thunder pixel orchard canyon").split()


def documents(n: int) -> list[dict[str, Any]]:
    """``n`` documents over three sources (one without a licence), varied lengths, some
    non-ASCII text, some nulls in the nullable columns."""
    docs = []
    for i in range(n):
        src, lang, lic = SOURCES[i % 3]
        words = [WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(5 + (i * 13) % 40)]
        text = " ".join(words).capitalize() + f". Doc {i} — café ñandú 東京."
        if i % 5 == 0:
            text += "\n\nSecond paragraph with \"quotes\" and a tab\tinside."
        meta = {"license": lic} if lic else {"note": i}
        docs.append({
            "id": f"{src}-{i:04d}", "text": text, "source": src,
            "url": f"https://example.org/{src}/{i}" if i % 4 else None,
            "fetched_at": datetime(2025, 1, 1 + i % 28, 12, i % 60, tzinfo=UTC) if i % 3 else None,
            "lang": lang if i % 7 else None, "lang_score": 0.5 + (i % 50) / 100 if i % 2 else None,
            "meta": json.dumps(meta)})
    return docs


def _stage(root: Path, name: str, version: str, body: dict[str, Any]) -> dict[str, Any]:
    folder = root / "stages" / name / version
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"stage": name, "version": version, "rejections": {}, **body}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def make_run(root: Path, n_docs: int = 90, shards: int = 2, with_tokenize: bool = True
             ) -> dict[str, Any]:
    """A completed run under ``root``: ingest -> filter (kept shards) -> tokenize (tokenizer
    only: exports re-tokenize). Returns the run's id, catalog, documents and paths."""
    from tasks.tokenize import train_tokenizer

    docs = documents(n_docs)
    per = -(-n_docs // shards)
    kept = []
    for s in range(shards):
        rel = f"stages/filter/f00d/kept/part-{s:05d}.parquet"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(docs[s * per:(s + 1) * per], schema=DOC_SCHEMA)
        extra = pa.array([1.0] * len(table), pa.float64())  # a score column, not exported
        pq.write_table(table.append_column("gopher_quality_n_words", extra), path,
                       row_group_size=17)
        kept.append(rel)
    n_in = n_docs + 10
    manifests = [
        _stage(root, "ingest", "1n9e", {"docs_in": n_in, "docs_kept": n_in, "docs_rejected": 0,
                                        "outputs": {"kept": ["stages/ingest/1n9e/kept/x"]}}),
        _stage(root, "filter", "f00d", {
            "docs_in": n_in, "docs_kept": n_docs, "docs_rejected": 10, "inputs": ["1n9e"],
            "outputs": {"kept": kept, "rejected": []},
            "rejections": {"gopher_quality.min_words": {"first": 10, "alone": 12}}})]
    if with_tokenize:
        tok_dir = root / "stages" / "tokenize" / "70ce"
        train_tokenizer(iter([[d["text"] for d in docs]]), 320, 2, tok_dir / "tokenizer.json")
        manifests.append(_stage(root, "tokenize", "70ce", {
            "docs_in": n_docs, "docs_kept": n_docs, "docs_rejected": 0, "inputs": ["f00d"],
            "config": {"tokenize": {"heldout_fraction": HELDOUT, "vocab_size": 320}},
            "outputs": {"data_dir": "stages/tokenize/70ce"}}))
    cat = Catalog(root / "catalog.duckdb")
    cat.start_run(RUN_ID, "unit", str(root / "recipe.yaml"),
                  {"name": "unit", "stages": {
                      "rewrite": {"base_url": "https://bob:s3cret@llm.example/v1?key=k3y"},
                      "tokenize": {"vocab_size": 320}}})
    for m in manifests:
        cat.record_stage(RUN_ID, m, 0.5, str(root / "stages" / m["stage"] / m["version"]),
                         False)
    cat.complete_run(RUN_ID, None, [])
    return {"root": root, "catalog": cat, "run_id": RUN_ID, "docs": docs,
            "tokenizer": root / "stages" / "tokenize" / "70ce" / "tokenizer.json"}


def train_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documents of the training split (the tokenize stage's own held-out rule)."""
    from tasks.tokenize import heldout_mask

    held = heldout_mask(pa.array([d["id"] for d in docs]), HELDOUT)
    return [d for d, h in zip(docs, held, strict=True) if not h]
