"""``datamill contamination RUN``: both reports for a finished run.

- **n-gram overlap**: a run that had the ``decontaminate`` stage has its report stored
  (``report.json`` in the stage folder, the manifest's ``contamination``): it is read back, not
  recomputed. Otherwise (or when evaluation files are named here) the same scan runs as an
  audit over the run's training documents — the documents ``tokenize`` read, minus the held-out
  split — against the same items, and nothing in the run is changed.
- **Min-K% Prob** (tasks/decontam/mink.py) of the same items under the run's trained proxy
  (its first ``train`` stage, or a checkpoint given), calibrated per task on known-unseen text:
  files given as the reference, else the held-out documents the evaluation does not score.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.decontam import report as rp
from tasks.decontam.items import Item, file_items, harness_items, own_items

MIN_REFERENCE_DOCS = 10


def _manifests(root: Path, run: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for s in run["stages"]:
        path = Path(s["output_path"] or root / "stages" / s["stage"] / s["version"])
        m = path / "manifest.json"
        if m.is_file():
            out.append(json.loads(m.read_text()))
    return out


def _docs_before_tokenize(ms: list[dict[str, Any]]) -> dict[str, Any]:
    """The last stage before ``tokenize`` whose ``kept`` output is documents."""
    names = [m["stage"] for m in ms]
    if "tokenize" not in names:
        raise LookupError("the run has no tokenize stage: no training documents to audit")
    for m in reversed(ms[:names.index("tokenize")]):
        if m["stage"] != "score" and isinstance(m.get("outputs", {}).get("kept"), list):
            return m
    raise LookupError("no documents stage before tokenize")


def _heldout(root: Path, ms: list[dict[str, Any]], recipe: dict[str, Any],
             max_docs: int | None) -> pa.Table:
    from tasks.evaluate import read_raw_heldout
    from tasks.tokenize import read_heldout

    ev, tok = recipe["stages"]["evaluate"], recipe["stages"]["tokenize"]
    if ev.get("heldout") == "raw":
        ingest = next(m for m in ms if m["stage"] == "ingest")
        return read_raw_heldout([root / p for p in ingest["outputs"]["kept"]],
                                tok["heldout_fraction"], max_docs)
    tokenize = [m for m in ms if m["stage"] == "tokenize"]
    if tokenize:
        return read_heldout(root / tokenize[0]["outputs"]["data_dir"], max_docs)
    # a run stopped before tokenize: the held-out split of its last documents
    docs = [m for m in ms if m["stage"] != "score"
            and isinstance(m.get("outputs", {}).get("kept"), list)]
    return read_raw_heldout([root / p for p in docs[-1]["outputs"]["kept"]],
                            tok["heldout_fraction"], max_docs)


def gather_items(root: Path, ms: list[dict[str, Any]], recipe: dict[str, Any],
                 paths: list[str], fields: list[str], harness: list[str],
                 include: list[str], own: bool = True) -> tuple[list[Item], int, list[str]]:
    """The run's own evaluation items (as its evaluate stage built them) and the named ones."""
    from tasks import evalsets

    items: list[Item] = []
    unsupported: list[str] = []
    if own:
        ev = recipe["stages"]["evaluate"]
        held = _heldout(root, ms, recipe, ev.get("max_docs")).to_pylist()
        unsupported = [t for t in ev["tasks"] if t not in evalsets.TASKS]
        items += own_items(held, [t for t in ev["tasks"] if t not in unsupported],
                           ev["max_items"], ev["seed"])
    skipped = 0
    if paths:
        got, skipped = file_items(paths, fields)
        items += got
    if harness:
        items += harness_items(harness, include)
    return items, skipped, unsupported


def audit_ngrams(root: Path, ms: list[dict[str, Any]], recipe: dict[str, Any],
                 items: list[Item], n: int, skipped: int, unsupported: list[str]
                 ) -> dict[str, Any]:
    """The decontamination report of the run's training documents, computed, not applied."""
    docs = _docs_before_tokenize(ms)
    fraction = recipe["stages"]["tokenize"]["heldout_fraction"]
    with tempfile.TemporaryDirectory(prefix="datamill-decontam-") as tmp:
        rp.write_index(Path(tmp), items, n, skipped, unsupported)
        index = rp.load_index(str(Path(tmp) / "index.npz"))
        stats = []
        for rel in docs["outputs"]["kept"]:
            path = root / rel
            if not path.is_file():
                continue
            for rb in pq.ParquetFile(path).iter_batches(columns=["id", "text", "source"],
                                                         batch_size=4_096):
                stats.append(rp.decide_table(pa.Table.from_batches([rb]), index, fraction)[3])
        report = rp.build_report(Path(tmp), rp.merge_stats(stats))
        rp._INDEX.clear()
    return {**report, "mode": "audit", "documents_stage": docs["stage"],
            "documents_version": docs["version"]}


def reference_texts(root: Path, ms: list[dict[str, Any]], recipe: dict[str, Any],
                    paths: list[str]) -> tuple[list[str], str]:
    """Known-unseen text and where it came from."""
    if paths:
        got, _ = file_items(paths, ["text"])
        return [i.text for i in got], "files"
    held = _heldout(root, ms, recipe, None)
    used = recipe["stages"]["evaluate"].get("max_docs")
    texts = held.column("text").to_pylist()
    if used and len(texts) - used >= MIN_REFERENCE_DOCS:
        return texts[used:], "heldout documents the evaluation does not score"
    return texts, "heldout documents (including those the evaluation scores)"


def checkpoint_of(root: Path, ms: list[dict[str, Any]]) -> Path:
    for m in ms:
        if m["stage"] == "train" and "checkpoint" in m.get("outputs", {}):
            path = root / m["outputs"]["checkpoint"]
            if (path / "config.json").is_file():
                return path
    raise LookupError("the run has no trained checkpoint (train stage)")


def contamination(root: Path, run: dict[str, Any], recipe: dict[str, Any],
                  paths: list[str] | None = None, fields: list[str] | None = None,
                  harness: list[str] | None = None, include: list[str] | None = None,
                  n: int = 13, k: float = 20.0, fpr: float = 0.05, mink: bool = True,
                  reference: list[str] | None = None, checkpoint: Path | None = None,
                  max_items: int = 200, max_reference: int = 200, device: str = "auto"
                  ) -> dict[str, Any]:
    """Both reports of ``run`` (a catalog ``show`` row with its stages)."""
    from tasks.decontam.mink import mink_report

    ms = _manifests(root, run)
    named = bool(paths or harness)
    stored = next((m for m in reversed(ms) if m["stage"] == "decontaminate"), None)
    items, skipped, unsupported = gather_items(root, ms, recipe, paths or [],
                                               fields or ["text"], harness or [],
                                               include or [])
    if stored is not None and not named:
        ngram = {**stored["contamination"], "mode": "stage",
                 "stored": stored["outputs"]["report"], "stage_version": stored["version"],
                 "docs_rejected": stored["docs_rejected"],
                 "rejections": stored.get("rejections", {})}
    else:
        ngram = audit_ngrams(root, ms, recipe, items, n, skipped, unsupported)
    out: dict[str, Any] = {"run_id": run["run_id"], "ngram": ngram, "mink": None}
    if mink:
        try:
            ckpt = checkpoint or checkpoint_of(root, ms)
        except LookupError as e:
            out["mink_unavailable"] = str(e)
            return out
        ref, where = reference_texts(root, ms, recipe, reference or [])
        out["mink"] = {**mink_report(ckpt, items, ref, k, fpr, max_items, max_reference,
                                     device=device), "reference": where,
                       "reference_docs": len(ref)}
    return out
