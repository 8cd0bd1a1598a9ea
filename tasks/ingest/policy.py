"""The keep/reject policy, per batch: length limit, normalisation, emptiness, language
(identified where the recipe asks), language score and allow-list, repeated ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
    kept_keys: np.ndarray | None = None  # the kept ids' hashes, when known


# what ``str.strip()`` removes (``str.isspace``; none is above U+3000)
_SPACES = "".join(chr(c) for c in range(0x3001) if chr(c).isspace())
_NOT_SPACE = "[^" + "".join(f"\\x{{{ord(c):x}}}" for c in _SPACES) + "]"


def decide(batch: Batch, ctx: ReadContext) -> Decided:
    """Length check, normalisation, emptiness, language: decide each candidate document, the
    texts as one Arrow array (`decide_rows` for a batch whose texts Arrow cannot hold)."""
    try:
        arr = pa.array(batch.cols["text"], pa.large_string())
    except UnicodeEncodeError:  # a lone surrogate
        return decide_rows(batch, ctx)
    cfg, cols, n = ctx.cfg, batch.cols, len(batch)
    why: list[str | None] = [None] * n
    live = ~pc.greater(pc.utf8_length(arr), cfg.max_doc_chars).to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(~live).tolist():
        why[i] = "ingest.too_long"
    if opt(cfg, "normalize") and live.any():
        if live.all():
            arr = normalize_texts(arr)
        else:
            mask = pa.array(live)
            arr = pc.replace_with_mask(arr, mask, normalize_texts(pc.filter(arr, mask)))
    min_chars = cfg.min_doc_chars
    if min_chars > 0:
        if min_chars == 1:
            empty = pc.invert(pc.match_substring_regex(arr, _NOT_SPACE))
        else:
            empty = pc.less(pc.utf8_length(pc.utf8_trim(arr, _SPACES)), min_chars)
        for i in np.flatnonzero(empty.to_numpy(zero_copy_only=False) & live).tolist():
            why[i] = "ingest.empty_text"
            live[i] = False
    mode = opt(cfg, "lang_id")
    tags: dict[Any, str | None] = {}
    langs = cols["lang"]
    for i, tag in enumerate(langs):  # the record's own tag, in the contract's form
        if tag is None or not live[i]:
            continue
        norm = tags[tag] if tag in tags else tags.setdefault(tag, langid.normalize_tag(tag))
        if norm is not None or mode == "always":  # always: identified below anyway
            langs[i] = norm
        else:
            why[i] = "ingest.bad_lang"
            live[i] = False
    if mode != "off":
        todo = [i for i in np.flatnonzero(live).tolist() if mode == "always" or langs[i] is None]
        if todo:
            got, scores = langid.identify(arr.take(todo).to_pylist())
            for i, lang, score in zip(todo, got, scores.tolist(), strict=True):
                langs[i], cols["lang_score"][i] = lang, score
    _lang_rules(cols, live, why, cfg)
    idx = np.flatnonzero(live)
    keys = id_hashes(cols["id"][i] for i in idx.tolist())
    for i in idx[repeated(keys, ctx.kept_ids)].tolist():
        why[i] = "ingest.duplicate_id"
        live[i] = False
    rejected = list(batch.rejected)
    for i, reason in enumerate(why):
        if reason is not None:
            rejected.append(({k: arr[i].as_py() if k == "text" else cols[k][i]
                              for k in DOC_SCHEMA.names}, reason))
    quarantine = list(batch.quarantine)
    keep = np.flatnonzero(live)
    if not len(keep):
        return Decided(None, rejected, quarantine)
    kept_keys = keys[live[idx]]
    if len(keep) < n:
        sub = {k: [cols[k][i] for i in keep.tolist()] for k in DOC_SCHEMA.names if k != "text"}
        arr = arr.take(keep)
    else:
        sub = {k: cols[k] for k in DOC_SCHEMA.names if k != "text"}
    try:
        kept = doc_table(sub, arr)
    except Exception:  # noqa: BLE001 - a value Arrow cannot store: found row by row
        kept = _storable({**sub, "text": arr.to_pylist()}, keep.tolist(), batch, ctx, quarantine)
        kept_keys = None
    if kept is not None:  # remembered once stored: a quarantined row's id stays free
        if kept_keys is None:
            kept_keys = id_hashes(kept.column("id").to_pylist())
        ctx.kept_ids.add(kept_keys)
    return Decided(kept, rejected, quarantine, kept_keys)


def _lang_rules(cols: dict[str, list[Any]], live: np.ndarray, why: list[str | None],
                cfg: Any) -> None:
    """``min_lang_score`` and the ``languages`` allow-list, on the live rows."""
    min_score = float(opt(cfg, "min_lang_score") or 0.0)
    allowed = opt(cfg, "languages")
    if min_score <= 0 and not allowed:
        return
    allowed = {langid.primary(x) for x in allowed} if allowed else None
    for i in np.flatnonzero(live).tolist():
        score = cols["lang_score"][i]
        if min_score > 0 and score is not None and score < min_score:
            why[i] = "ingest.lang_score"
        elif allowed is not None and langid.primary(cols["lang"][i]) not in allowed:
            why[i] = "ingest.language"
        else:
            continue
        live[i] = False


def decide_rows(batch: Batch, ctx: ReadContext) -> Decided:
    """`decide`, row by row over Python strings (a batch with a lone surrogate in a text)."""
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
