"""What an export reads: a completed run's kept documents (streamed in record batches, in the
order the tokenize stage read them) and, when the run tokenized, its tokenizer and split.

A run's stages are found through the catalog (``Catalog.show``); each stage's ``manifest.json``
names its files. The documents are those of the last stage before ``tokenize`` whose manifest
lists ``kept`` documents (``filter`` in the stock pipeline, ``recycle`` with REWIRE, a plug-in
stage inserted after them): when the run has a ``tokenize`` stage they are exactly the
documents it read (its manifest's ``inputs`` name that stage's version).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.schema import DOC_COLUMNS

Split = Literal["all", "train"]
BATCH_ROWS = 1_000


class ExportError(ValueError):
    """An export that cannot be made (no such run, no documents, no tokenizer, ...)."""


@dataclass(frozen=True)
class RunSource:
    run: dict[str, Any]  # Catalog.show(): run_id, recipe, status, stages, rejections, ...
    data_root: Path
    docs_stage: dict[str, Any]  # the manifest of the stage whose kept documents are exported
    tokenize: dict[str, Any] | None  # the tokenize stage's manifest, if the run tokenized

    @property
    def run_id(self) -> str:
        return str(self.run["run_id"])

    @property
    def kept_files(self) -> list[Path]:
        return [self.data_root / rel for rel in self.docs_stage["outputs"]["kept"]]

    @property
    def tokenizer_path(self) -> Path:
        if self.tokenize is None:
            raise ExportError(f"run {self.run_id} has no tokenize stage: token formats need "
                              "its tokenizer (run the recipe through tokenize first)")
        return self.data_root / self.tokenize["outputs"]["data_dir"] / "tokenizer.json"

    @property
    def heldout_fraction(self) -> float:
        if self.tokenize is None:
            return 0.0
        cfg = self.tokenize.get("config") or {}
        return float(cfg.get("tokenize", cfg).get("heldout_fraction", 0.0))

    def inputs(self, with_tokenizer: bool) -> dict[str, str]:
        """The versions an export depends on: ``{stage: version}``."""
        out = {self.docs_stage["stage"]: self.docs_stage["version"]}
        if with_tokenizer and self.tokenize is not None:
            out["tokenize"] = self.tokenize["version"]
        return out

    def batches(self, split: Split, columns: list[str] | None = None
                ) -> Iterator[pa.RecordBatch]:
        """The documents, streamed: ``split="train"`` leaves out the held-out documents (the
        same hash of the id the tokenize stage splits by), ``"all"`` keeps every one."""
        from tasks.tokenize import heldout_mask

        cols = columns or DOC_COLUMNS
        if split == "train" and self.tokenize is None:
            raise ExportError(f"run {self.run_id} has no tokenize stage, so no training split")
        for path in self.kept_files:
            pf = pq.ParquetFile(path)
            missing = [c for c in cols if c not in pf.schema_arrow.names]
            if missing:
                raise ExportError(f"{path}: no column(s) {missing}")
            for rb in pf.iter_batches(batch_size=BATCH_ROWS, columns=cols):
                if split == "train" and self.heldout_fraction > 0 and rb.num_rows:
                    held = heldout_mask(rb.column(cols.index("id")), self.heldout_fraction)
                    rb = rb.filter(pa.array(~held))
                if rb.num_rows:
                    yield rb


def _manifest(stage_dir: str | Path) -> dict[str, Any]:
    path = Path(stage_dir) / "manifest.json"
    if not path.is_file():
        raise ExportError(f"{path} is missing: the stage output was removed or never finished")
    return json.loads(path.read_text())


def resolve(catalog: Any, run: str) -> RunSource:
    """The run ``run`` (an id, or ``latest``) of ``catalog``, ready to export. Manifests name
    files relative to the data root, which holds ``stages/<stage>/<version>/``: the root is
    taken from the stage folder the catalog recorded."""
    try:
        info = catalog.show(run)
    except (FileNotFoundError, LookupError) as e:
        raise ExportError(str(e).strip("'\"")) from None
    if info["status"] != "completed":
        raise ExportError(f"run {info['run_id']} is {info['status']}, not completed: only a "
                          "completed run's outputs are exported")
    docs: dict[str, Any] | None = None
    tokenize: dict[str, Any] | None = None
    data_root = Path()
    for row in info["stages"]:
        m = _manifest(row["output_path"])
        if row["stage"] == "tokenize":
            tokenize = m
            break
        if isinstance((m.get("outputs") or {}).get("kept"), list):
            docs, data_root = m, Path(row["output_path"]).parents[2]
    if docs is None:
        raise ExportError(f"run {info['run_id']} has no stage with kept documents")
    if tokenize is not None and docs["version"] not in tokenize.get("inputs", []):
        raise ExportError(f"run {info['run_id']}: tokenize read {tokenize.get('inputs')}, not "
                          f"{docs['stage']} {docs['version']}; cannot tell which documents "
                          "it tokenized")
    return RunSource(info, data_root, docs, tokenize)


def meta_licence(meta: pa.Array) -> list[str | None]:
    """Each document's licence, from the ``license`` (or ``licence``) field its input record
    carried (kept in ``meta``); None where it has none."""
    out: list[str | None] = []
    for raw in meta.to_pylist():
        value = None
        if raw:
            try:
                obj = json.loads(raw)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                value = obj.get("license", obj.get("licence"))
        out.append(str(value) if value not in (None, "") else None)
    return out


class Stats:
    """Documents and tokens per source and per language, and licences per source, gathered
    batch by batch (small: one entry per source, language and licence)."""

    def __init__(self) -> None:
        self.docs = 0
        self.tokens: int | None = None
        self.by_source: dict[str, list[int]] = {}  # source -> [docs, tokens]
        self.by_lang: dict[str, list[int]] = {}
        self.licences: dict[str, dict[str, int]] = {}  # source -> {licence: docs}

    def add(self, rb: pa.RecordBatch, tokens: np.ndarray | None) -> None:
        n = rb.num_rows
        self.docs += n
        names = rb.schema.names
        sources = rb.column(names.index("source")).to_pylist()
        langs = (rb.column(names.index("lang")).to_pylist() if "lang" in names
                 else [None] * n)
        lic = meta_licence(rb.column(names.index("meta"))) if "meta" in names else [None] * n
        tok = tokens.tolist() if tokens is not None else [0] * n
        if tokens is not None:
            self.tokens = (self.tokens or 0) + int(tokens.sum())
        for src, lang, li, t in zip(sources, langs, lic, tok, strict=True):
            s = self.by_source.setdefault(src, [0, 0])
            s[0] += 1
            s[1] += t
            g = self.by_lang.setdefault(lang or "unknown", [0, 0])
            g[0] += 1
            g[1] += t
            per = self.licences.setdefault(src, {})
            key = li or "unknown"
            per[key] = per.get(key, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {"docs": self.docs, "tokens": self.tokens,
                "by_source": {k: {"docs": v[0], "tokens": v[1]}
                              for k, v in sorted(self.by_source.items())},
                "by_lang": {k: {"docs": v[0], "tokens": v[1]}
                            for k, v in sorted(self.by_lang.items())},
                "licences": {k: dict(sorted(v.items())) for k, v in sorted(self.licences.items())}}

