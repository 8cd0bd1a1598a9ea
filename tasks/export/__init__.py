"""``datamill export``: a completed run's data in the formats other tools read.

- ``parquet``: a Hugging Face dataset folder (``datasets.load_dataset(folder)``), tasks/export/hf.py
- ``jsonl``: the document contract as JSON lines, plain, gzip or zstd, tasks/export/jsonl.py
- ``megatron``: Megatron-LM's indexed dataset (``.bin`` + ``.idx``), tasks/export/megatron.py
- ``nanotron``: datatrove's ``.ds`` files as nanotron reads them, tasks/export/nanotron.py

Every export is a folder with a ``README.md`` card (tasks/export/card.py) and ``export.json``
(tasks/export/folder.py: content address, atomic swap, no-op when up to date). Documents are
streamed in record batches; no format holds the corpus in memory.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from tasks.export import card
from tasks.export.folder import begin, check_target, commit, export_hash, export_lock, up_to_date
from tasks.export.shards import DEFAULT_SHARD_BYTES, Limits
from tasks.export.source import ExportError, RunSource, Split, resolve
from tasks.export.tokens import DocTokenizer, save_tokenizer_folder
from tasks.schema import DOC_SCHEMA

__all__ = ["DOC_FORMATS", "FORMATS", "TOKEN_FORMATS", "ExportError", "default_split",
           "export_run"]

DOC_FORMATS = ("parquet", "jsonl")
TOKEN_FORMATS = ("megatron", "nanotron")
FORMATS = DOC_FORMATS + TOKEN_FORMATS


def default_split(fmt: str) -> Split:
    """Documents formats export every kept document; token formats the training split (what
    the run's proxy trained on; its held-out documents are left out)."""
    return "train" if fmt in TOKEN_FORMATS else "all"


def _usage(fmt: str, to: Path, info: dict[str, Any]) -> str:
    if fmt == "parquet":
        return ("```python\nfrom datasets import load_dataset\n\n"
                f"ds = load_dataset({str(to)!r}, split=\"train\")\n```\n")
    if fmt == "jsonl":
        pattern = str(to / info["files"][0]).rsplit("-", 3)[0] + "-*"
        return ("One JSON object per line with the document contract's fields (`id`, `text`, "
                "`source`, `url`, `fetched_at`, `lang`, `lang_score`, `meta`).\n\n"
                "```python\nfrom datasets import load_dataset\n\n"
                f"ds = load_dataset(\"json\", data_files={pattern!r}, split=\"train\")\n```\n")
    if fmt == "megatron":
        return ("Megatron-LM (`pretrain_gpt.py`) arguments:\n\n```\n"
                f"--data-path {to / info['prefix']} --tokenizer-type HuggingFaceTokenizer "
                f"--tokenizer-model {to / 'tokenizer'}\n```\n\nOne sequence per document; each "
                f"document ends with the end-of-text token (id {info['eos_id']}); dtype "
                f"{info['dtype']}.\n")
    return ("nanotron config (`data_stages[].data.dataset` and `tokenizer`):\n\n```yaml\n"
            f"dataset:\n  dataset_folder: {to}\ntokenizer:\n  tokenizer_name_or_path: "
            f"{to / 'tokenizer'}\n```\n\nThe `.ds` files hold {info['token_size']}-byte tokens; "
            f"set `model.model_config.vocab_size` to {info['vocab_size']}.\n")


def _recipe(catalog: Any, run_id: str) -> dict[str, Any] | None:
    try:
        return catalog.run_config(run_id)
    except LookupError:
        return None


def _write(fmt: str, src: RunSource, tmp: Path, to: Path, split: Split, limits: Limits,
           compression: str, tok: DocTokenizer | None) -> dict[str, Any]:
    from tasks.export import hf, jsonl, megatron, nanotron

    if fmt == "parquet":
        return hf.write_parquet(src, tmp, split, limits, tok)
    if fmt == "jsonl":
        return jsonl.write_jsonl(src, tmp, split, limits, compression,  # type: ignore[arg-type]
                                 tok)
    assert tok is not None
    save_tokenizer_folder(tok.path, tmp / "tokenizer")
    if fmt == "megatron":
        return megatron.write_megatron(src, tmp, split, tok)
    return nanotron.write_nanotron(src, tmp, split, limits, tok, str(to / "tokenizer"))


def export_run(catalog: Any, run: str, to: str | Path, fmt: str = "parquet",
               split: Split | None = None, max_shard_bytes: int = DEFAULT_SHARD_BYTES,
               max_shard_rows: int | None = None, compression: str | None = None,
               record: bool = True) -> dict[str, Any]:
    """Export run ``run`` (an id or ``latest``) of ``catalog`` to the folder ``to``. Returns
    a summary whose ``status`` is ``exported``, or ``up to date`` when the folder already
    held this very export (nothing written). ``record``: add a row to the catalog's
    ``exports``."""
    from tasks.export.jsonl import compression_for
    from tasks.remote import is_url

    if is_url(to):
        return _export_to_url(catalog, run, str(to), fmt, split, max_shard_bytes,
                              max_shard_rows, compression, record)
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {list(FORMATS)}, not {fmt!r}")
    t0 = time.perf_counter()
    dest = Path(to).expanduser().resolve()
    src = resolve(catalog, run)
    split = split or default_split(fmt)
    limits = Limits(max_shard_bytes, max_shard_rows)
    comp = compression_for(compression, dest) if fmt == "jsonl" else "none"
    # what changes the bytes: only the options the format uses
    options: dict[str, Any] = {"split": split}
    if fmt in DOC_FORMATS + ("nanotron",):
        options["max_shard_bytes"] = max_shard_bytes
    if fmt in DOC_FORMATS:
        options["max_shard_rows"] = max_shard_rows
    if fmt == "jsonl":
        options["compression"] = comp
    if fmt == "nanotron":
        options["path"] = str(dest)  # its metadata names the tokenizer folder by path
    with_tok = fmt in TOKEN_FORMATS or src.tokenize is not None
    inputs = src.inputs(with_tok)
    digest = export_hash(src.run_id, fmt, options, inputs)
    head = {"run_id": src.run_id, "recipe": src.run["recipe"], "format": fmt, "to": str(dest),
            "hash": digest}
    with export_lock(dest):
        done = up_to_date(dest, digest)
        if done is not None:
            return {**head, "status": "up to date", "docs": done["docs"],
                    "tokens": done["tokens"], "files": len(done["files"]),
                    "seconds": round(time.perf_counter() - t0, 2)}
        check_target(dest)
        tok = DocTokenizer(src.tokenizer_path) if with_tok else None
        tmp = begin(dest)
        try:
            res = _write(fmt, src, tmp, dest, split, limits, comp, tok)
            stats = res["stats"]
            info = {**res, **({"eos_id": tok.eos_id, "vocab_size": tok.vocab_size}
                              if tok is not None else {})}
            header = (card.yaml_header(DOC_SCHEMA, "train", "data/train-*", stats,
                                       res["arrow_bytes"], res["download_size"])
                      if fmt == "parquet" else None)
            recipe = _recipe(catalog, src.run_id)
            text = card.render(
                title=f"{src.run['recipe']} (datamill run {src.run_id})", run=src.run, fmt=fmt,
                what=_WHAT[fmt], split=split, stats=stats, recipe=recipe, inputs=inputs,
                digest=digest, header=header, usage=_usage(fmt, dest, info))
            (tmp / "README.md").write_text(text, encoding="utf-8")
            manifest = commit(tmp, dest, {
                **{k: v for k, v in head.items() if k != "to"}, "options": options,
                "inputs": inputs, "docs": stats["docs"], "tokens": stats["tokens"],
                "stats": stats, **{k: info[k] for k in ("dtype", "token_size", "prefix",
                                                        "vocab_size", "eos_id") if k in info}})
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    if record:
        catalog.record_export(src.run_id, fmt, str(dest), digest, stats["docs"],
                              stats["tokens"], options, inputs)
    return {**head, "status": "exported", "docs": stats["docs"], "tokens": stats["tokens"],
            "files": len(manifest["files"]), "seconds": round(time.perf_counter() - t0, 2)}


def _export_to_url(catalog: Any, run: str, url: str, fmt: str, split: Split | None,
                   max_shard_bytes: int, max_shard_rows: int | None, compression: str | None,
                   record: bool) -> dict[str, Any]:
    """Export to object storage: built in the URL's local working copy (so a re-export is
    still a no-op), then uploaded with ``export.json`` last (tasks/remote.py: an object store
    has no rename; the marker object says the export is complete)."""
    from tasks.remote import Mirror, local_copy

    local = local_copy(url)  # the export folder itself; its upload ledger beside it
    out = export_run(catalog, run, local, fmt, split, max_shard_bytes, max_shard_rows,
                     compression, record=False)
    mirror = Mirror(url, local, ledger=local.with_name(local.name + ".remote.json"))
    sent = mirror.push()
    mirror.prune()  # files of an export this one replaced
    if record:
        catalog.record_export(out["run_id"], fmt, url, out["hash"], out["docs"], out["tokens"],
                              {"split": split or default_split(fmt)}, {})
    return {**out, "to": url, "uploaded": sent,
            "status": out["status"] if sent == 0 else "exported"}


_WHAT = {
    "parquet": "Parquet shards under `data/`, zstd-compressed, with the document contract's "
               "columns.",
    "jsonl": "JSON lines under `data/`, one document per line.",
    "megatron": "Megatron-LM's indexed dataset (`.bin` + `.idx`), one sequence per document, "
                "re-tokenized with the run's tokenizer (in `tokenizer/`).",
    "nanotron": "datatrove's tokenized format (`.ds`, `.ds.index`, `.ds.metadata`) as "
                "nanotron's Nanoset reads it, re-tokenized with the run's tokenizer (in "
                "`tokenizer/`).",
}
