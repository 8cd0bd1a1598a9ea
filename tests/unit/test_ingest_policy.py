"""The keep/reject policy over Arrow (tasks/ingest/policy.py ``decide``) decides every batch
as the row-by-row policy over Python strings (``decide_rows``, which a batch holding a lone
surrogate still takes) does: the same kept table, rejections with the same reasons in the
same order, the same quarantine, across batches."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.ingest.policy import decide, decide_rows
from tasks.ingest.records import Batch, ReadContext
from tasks.recipe import IngestConfig

FUZZ = settings(max_examples=int(os.environ.get("DATAMILL_FUZZ_EXAMPLES", 40)), deadline=None,
                database=None, suppress_health_check=[HealthCheck.too_slow])
TEXTS = st.sampled_from([
    "A plain English sentence about ships and the sea, long enough to be identified.",
    "Une phrase française sur la mer et les bateaux, assez longue pour être reconnue.",
    "", " ", " \t\n\u3000\u00a0", "\x1c\x1d", "x", "ab", "caf\u00c3\u00a9 cr\u00c3\u00a8me",
    "line one  \r\nline two\t\n\n", "&amp; entity", "e\u0301t\u00e9", "\x00\x07 controls",
    "MOSTLY UPPER CASE ENGLISH TEXT WRITTEN IN CAPITALS", "a" * 300,
])
RECORD = st.fixed_dictionaries({
    "id": st.sampled_from(["a", "b", "c", "", None, 7]),
    "text": TEXTS,
    "lang": st.sampled_from([None, "en", "EN", "fr_FR", "English", " ", "zz-Hant"]),
    "lang_score": st.sampled_from([None, 0.2, 0.9, 95]),
})
CONFIG = st.fixed_dictionaries({
    "max_doc_chars": st.sampled_from([40, 1000]),
    "min_doc_chars": st.sampled_from([0, 1, 3]),
    "normalize": st.booleans(),
    "lang_id": st.sampled_from(["off", "missing", "always"]),
    "min_lang_score": st.sampled_from([0.0, 0.5]),
    "languages": st.sampled_from([None, ["en"], ["fr", "de"]]),
})


def _batches(recs: list[list[dict[str, Any]]], ctx: ReadContext) -> list[Batch]:
    out = []
    for j, rs in enumerate(recs):
        b = Batch()
        for i, r in enumerate(rs):
            ctx.add_record({k: v for k, v in r.items() if v is not None}, 100 * j + i, b)
        out.append(b)
    return out


@FUZZ
@given(recs=st.lists(st.lists(RECORD, max_size=12), min_size=1, max_size=3), cfg=CONFIG)
def test_arrow_policy_decides_as_the_row_policy(recs: list[list[dict[str, Any]]],
                                                cfg: dict[str, Any]) -> None:
    config = IngestConfig(**cfg)
    results = []
    for fn in (decide, decide_rows):
        ctx = ReadContext(Path("in.jsonl"), {}, config, "in")
        results.append([fn(b, ctx) for b in _batches(copy.deepcopy(recs), ctx)])
    for a, b in zip(*results, strict=True):
        assert (a.kept is None) == (b.kept is None)
        assert a.kept is None or a.kept.equals(b.kept)
        assert a.rejected == b.rejected
        assert a.quarantine == b.quarantine


def test_a_lone_surrogate_batch_takes_the_row_policy() -> None:
    ctx = ReadContext(Path("in.jsonl"), {}, IngestConfig(lang_id="off"), "in")
    b = _batches([[{"id": "s", "text": "lone \ud800 text"}, {"id": "t", "text": "fine"}]],
                 ctx)[0]
    d = decide(b, ctx)
    assert d.kept is not None and d.kept.column("text").to_pylist() == ["lone \ufffd text",
                                                                         "fine"]


VALUE = st.none() | st.sampled_from(["", " ", "\u3000", "en", "x", "\t\n"]) | st.text(max_size=5) \
    | st.integers(-3, 3) | st.booleans()
FLAT = st.dictionaries(st.sampled_from(["id", "text", "source", "url", "lang"]), VALUE)


@FUZZ
@given(rec=FLAT)
def test_a_plain_record_maps_as_the_general_mapping_maps_it(rec: dict[str, Any]) -> None:
    """Records of contract fields only take a short path in `add_record`; its row is the one
    `_row` (every other record's mapping) makes, or the record is quarantined by both."""
    ctx = ReadContext(Path("in.jsonl"), {}, IngestConfig(), "in")
    b = Batch()
    ctx.add_record(dict(rec), 7, b)
    want = ctx._row(dict(rec), 7)
    if isinstance(want, str):
        assert not len(b) and want in b.quarantine[0]["error"]
    else:
        assert {k: v[0] for k, v in b.cols.items()} == want and b.pos == [7]
