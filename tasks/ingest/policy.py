"""The keep/reject policy, per batch: length limit, normalisation, emptiness, language
(identified where the recipe asks), language score and allow-list, repeated ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from tasks import langid
from tasks.ingest.config import opt
from tasks.ingest.ids import id_hashes, repeated
from tasks.ingest.records import Batch, ReadContext, doc_table, qrow, raw_record
from tasks.normalize import normalize_texts
from tasks.schema import DOC_SCHEMA


@dataclass
class Decided:
    """A batch decided: the kept documents' table, the rejected rows with their reasons, the
    quarantine rows."""

    kept: pa.Table | None
    rejected: list[tuple[dict[str, Any], str]]
    quarantine: list[dict[str, Any]]


def decide(batch: Batch, ctx: ReadContext) -> Decided:
    """Length check, normalisation, emptiness, language: decide each candidate document."""
    cfg = ctx.cfg
    cols, n = batch.cols, len(batch)
    texts = cols["text"]
    why: list[str | None] = [None] * n
    for i, t in enumerate(texts):
        if len(t) > cfg.max_doc_chars:
            why[i] = "ingest.too_long"
    live = [i for i in range(n) if why[i] is None]
    if live and opt(cfg, "normalize"):
        for i, t in zip(live, normalize_texts([texts[i] for i in live]).to_pylist(),
                        strict=True):
            texts[i] = t
    min_chars = cfg.min_doc_chars
    for i in live:
        if len(texts[i].strip()) < min_chars:
            why[i] = "ingest.empty_text"
    live = [i for i in live if why[i] is None]
    mode = opt(cfg, "lang_id")
    for i in live:  # the record's own tag, in the contract's form
        tag = cols["lang"][i]
        if tag is not None:
            norm = langid.normalize_tag(tag)
            if norm is not None or mode == "always":  # always: identified below anyway
                cols["lang"][i] = norm
            else:
                why[i] = "ingest.bad_lang"
    live = [i for i in live if why[i] is None]
    _identify(cols, live, mode)
    min_score = float(opt(cfg, "min_lang_score") or 0.0)
    allowed = opt(cfg, "languages")
    allowed = {langid.primary(x) for x in allowed} if allowed else None
    for i in live:
        score = cols["lang_score"][i]
        if min_score > 0 and score is not None and score < min_score:
            why[i] = "ingest.lang_score"
        elif allowed is not None and langid.primary(cols["lang"][i]) not in allowed:
            why[i] = "ingest.language"
    live = [i for i in live if why[i] is None]
    keys = id_hashes(cols["id"][i] for i in live)
    for i, dup in zip(live, repeated(keys, ctx.kept_ids).tolist(), strict=True):
        if dup:
            why[i] = "ingest.duplicate_id"
    rejected = list(batch.rejected)
    keep = []
    for i in range(n):
        if why[i] is None:
            keep.append(i)
        else:
            rejected.append(({k: cols[k][i] for k in DOC_SCHEMA.names}, why[i]))
    quarantine = list(batch.quarantine)
    if not keep:
        return Decided(None, rejected, quarantine)
    sub = {k: [cols[k][i] for i in keep] for k in DOC_SCHEMA.names} if len(keep) < n else cols
    kept = _storable(sub, keep, batch, ctx, quarantine)
    if kept is not None:  # remembered once stored: a quarantined row's id stays free
        ctx.kept_ids.add(id_hashes(kept.column("id").to_pylist()))
    return Decided(kept, rejected, quarantine)


def decide_safely(batch: Batch, ctx: ReadContext) -> Decided:
    """`decide`, and if a batch fails anyway, each of its records on its own: one that still
    fails is quarantined with the error, the others are decided as usual."""
    try:
        return decide(batch, ctx)
    except Exception:  # noqa: BLE001 - find the record; never fail the file for it
        pass
    out = Decided(None, list(batch.rejected), list(batch.quarantine))
    kept = []
    for j in range(len(batch)):
        one = Batch(cols={k: [v[j]] for k, v in batch.cols.items()}, pos=[batch.pos[j]])
        try:
            d = decide(one, ctx)
        except Exception as e:  # noqa: BLE001
            row = {k: v[j] for k, v in batch.cols.items()}
            out.quarantine.append(qrow(ctx.label, batch.pos[j], None,
                                       f"record cannot be decided: {type(e).__name__}: "
                                       f"{str(e)[:300]}", raw_record(row)))
            continue
        out.rejected += d.rejected
        out.quarantine += d.quarantine
        if d.kept is not None:
            kept.append(d.kept)
    out.kept = pa.concat_tables(kept) if kept else None
    return out


def _identify(cols: dict[str, list[Any]], live: list[int], mode: str) -> None:
    """Fill lang / lang_score: for every live row (``always``) or those without a lang
    (``missing``); ``off`` keeps the records' own."""
    if mode == "off":
        return
    todo = [i for i in live if mode == "always" or cols["lang"][i] is None]
    if todo:
        langs, scores = langid.identify([cols["text"][i] for i in todo])
        for i, lang, score in zip(todo, langs, scores, strict=True):
            cols["lang"][i], cols["lang_score"][i] = lang, float(score)


def _storable(sub: dict[str, list[Any]], keep: list[int], batch: Batch, ctx: ReadContext,
              quarantine: list[dict[str, Any]]) -> pa.Table | None:
    """The kept rows as a table; rows Arrow cannot store go to `quarantine`."""
    try:
        return doc_table(sub)
    except Exception:  # noqa: BLE001 - found row by row below
        pass
    # a lone surrogate ("\ud800" escaped in JSON) cannot be stored: find the rows
    good = []
    for j, i in enumerate(keep):
        try:
            doc_table({k: [sub[k][j]] for k in DOC_SCHEMA.names})
            good.append(j)
        except Exception as e:  # noqa: BLE001 - bad Unicode, a value Arrow cannot store
            row = {k: sub[k][j] for k in DOC_SCHEMA.names}
            quarantine.append(qrow(ctx.label, batch.pos[i], None,
                                   f"record is not valid Unicode: {type(e).__name__}: {e}",
                                   raw_record(row)))
    if not good:
        return None
    return doc_table({k: [sub[k][j] for j in good] for k in DOC_SCHEMA.names})
