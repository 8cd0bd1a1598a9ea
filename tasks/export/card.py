"""The export's ``README.md``: a Hugging Face dataset card.

For Parquet the card opens with the YAML header ``datasets`` reads (``configs`` with
``data_files``, ``dataset_info`` with the features and split sizes); every format's card has
the recipe, documents and tokens per source and per language, the run's funnel (documents
in / kept / rejected per stage, rejections by rule, from the catalog), and the inputs'
licences where the input records named one ("unknown" otherwise)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import yaml

from tasks.report import md_code, md_escape

UNKNOWN = "unknown"


def hf_dtype(t: pa.DataType) -> str:
    """An Arrow type as a ``datasets`` Value dtype (the contract's column types)."""
    if pa.types.is_large_string(t):
        return "large_string"
    if pa.types.is_string(t):
        return "string"
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit}, tz={t.tz}]" if t.tz else f"timestamp[{t.unit}]"
    if pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t):
        return {"float": "float32", "double": "float64", "halffloat": "float16"}.get(str(t),
                                                                                      str(t))
    raise ValueError(f"no datasets dtype for Arrow type {t}")


def hub_licence(licences: dict[str, dict[str, int]]) -> str:
    """The header's ``license``: the one licence every document names, else ``other``."""
    seen = {li for per in licences.values() for li in per}
    return next(iter(seen)).lower() if len(seen) == 1 and UNKNOWN not in seen else "other"


def yaml_header(schema: pa.Schema, split: str, pattern: str, stats: dict[str, Any],
                num_bytes: int, download_size: int) -> dict[str, Any]:
    langs = sorted({k.split("-")[0] for k in stats["by_lang"] if k != UNKNOWN})
    head: dict[str, Any] = {"license": hub_licence(stats["licences"])}
    if langs:
        head["language"] = langs
    head["configs"] = [{"config_name": "default",
                        "data_files": [{"split": split, "path": pattern}]}]
    head["dataset_info"] = {
        "features": [{"name": f.name, "dtype": hf_dtype(f.type)} for f in schema],
        "splits": [{"name": split, "num_bytes": num_bytes, "num_examples": stats["docs"]}],
        "download_size": download_size, "dataset_size": num_bytes}
    return head


def _table(head: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "_none_\n"
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(md_escape(c) if isinstance(c, str) else f"{c:,}"
                              if isinstance(c, int) else str(c) for c in r) + " |"
            for r in rows]
    return "\n".join(out) + "\n"


def _counts(by: dict[str, dict[str, Any]], tokens: bool, label: str) -> str:
    head = [label, "documents"] + (["tokens"] if tokens else [])
    return _table(head, [[k, v["docs"]] + ([v["tokens"]] if tokens else [])
                         for k, v in by.items()])


def render(*, title: str, run: dict[str, Any], fmt: str, what: str, split: str,
           stats: dict[str, Any], recipe: dict[str, Any] | None, inputs: dict[str, str],
           digest: str, header: dict[str, Any] | None, usage: str) -> str:
    """The card's text; ``header`` (the YAML front matter) only for formats ``datasets``
    loads from the card."""
    from tasks.catalog import scrub_secrets

    tokens = stats["tokens"] is not None
    parts: list[str] = []
    if header is not None:
        parts.append("---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True)
                     + "---\n")
    parts.append(f"# {md_escape(title)}\n")
    parts.append(
        f"Exported by datamill from run {md_code(run['run_id'])} of recipe "
        f"{md_code(run['recipe'])} (format `{fmt}`, export {md_code(digest)}). {what}\n")
    split_note = ("every kept document" if split == "all" else
                  "the training split: the kept documents less the held-out ones the run "
                  "evaluated on")
    tok_note = (" Tokens are counted with the run's tokenizer, one end-of-text token per "
                "document included, as the run trained on them." if tokens else "")
    parts.append(f"Documents: {stats['docs']:,} ({split_note})"
                 + (f"; tokens: {stats['tokens']:,}." if tokens else ".") + tok_note + "\n")
    parts.append(f"## Usage\n\n{usage}\n")
    parts.append("## Documents per source\n\n" + _counts(stats["by_source"], tokens, "source"))
    parts.append("## Documents per language\n\n" + _counts(stats["by_lang"], tokens,
                                                           "language"))
    lic_rows = [[src, li, n] for src, per in stats["licences"].items() for li, n in per.items()]
    parts.append("## Licences\n\nAs the input records named them (their `license` field); "
                 f"`{UNKNOWN}` where a record named none. Redistribution follows each "
                 "source's licence.\n\n" + _table(["source", "licence", "documents"], lic_rows))
    funnel = [[s["stage"], s["version"], int(s["docs_in"]), int(s["docs_kept"]),
               int(s["docs_rejected"])] for s in run["stages"]]
    parts.append("## Funnel\n\nDocuments in, kept and rejected by each stage of the run "
                 "(from the catalog).\n\n"
                 + _table(["stage", "version", "in", "kept", "rejected"], funnel))
    rej = [[r["stage"], r["rule"], int(r["docs"]), int(r["docs_alone"])]
           for r in run["rejections"] if r["docs"] or r["docs_alone"]]
    parts.append("### Rejections by rule\n\n`dropped first`: documents this rule was the "
                 "first to drop; `would drop alone`: documents failing it at all.\n\n"
                 + _table(["stage", "rule", "dropped first", "would drop alone"], rej))
    body = (scrub_secrets(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))
            if recipe is not None else "# not recorded in the catalog\n")
    parts.append(f"## Recipe\n\n```yaml\n{body}```\n")
    parts.append("## Provenance\n\n" + _table(["stage", "version"],
                                              [[k, v] for k, v in inputs.items()]))
    return "\n".join(parts)
