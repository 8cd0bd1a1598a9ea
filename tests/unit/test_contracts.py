"""Data contracts (great-expectations): a corpus that breaks each contract is caught, with the
expectation named and the offending rows counted; a good one passes."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.contracts import ContractError, Limits, check_documents, check_tokens
from tasks.schema import DOC_SCHEMA


def docs(n: int = 6, **override: list) -> pa.Table:
    cols = {"id": [f"d{i}" for i in range(n)], "text": [f"text number {i}" for i in range(n)],
            "source": ["s"] * n, "url": [None] * n, "fetched_at": [None] * n,
            "lang": ["en", "fr", "pt-BR", "zh-cn", None, "en"][:n] + ["en"] * max(0, n - 6),
            "lang_score": [0.9] * n, "meta": [None] * n}
    cols.update(override)
    schema = DOC_SCHEMA
    if "id" in override and override["id"] and not isinstance(override["id"][0], str):
        schema = schema.set(0, pa.field("id", pa.int64()))
    table = pa.table(cols, schema=pa.schema([f.with_nullable(True) for f in schema]))
    return table


def write(tmp: Path, *tables: pa.Table) -> list[Path]:
    out = []
    for i, t in enumerate(tables):
        p = tmp / f"part-{i}.parquet"
        pq.write_table(t, p)
        out.append(p)
    return out


def broken(report: object) -> dict[tuple[str, str | None], int]:
    return {(c.expectation, c.column): c.offending for c in report.violations}  # type: ignore


def test_good_documents_pass(tmp_path: Path) -> None:
    scores = docs().append_column("gopher_quality_alpha_words_frac",
                                  pa.array([0.5] * 6, pa.float32()))
    rep = check_documents("filter", write(tmp_path, scores, docs().set_column(
        0, "id", pa.array([f"e{i}" for i in range(6)]))))
    assert rep.ok, rep.message()
    assert rep.rows == 12 and rep.files == 2
    assert len(rep.checks) > 15


@pytest.mark.parametrize(("table", "expected"), [
    (docs(id=["a", "b", "a", "c", "c", "c"]), ("expect_column_values_to_be_unique", "id", 5)),
    (docs(text=["ok", None, "ok", None, "ok", "ok"]),
     ("expect_column_values_to_not_be_null", "text", 2)),
    (docs(id=["a", None, "b", "c", "d", "e"]),
     ("expect_column_values_to_not_be_null", "id", 1)),
    (docs(text=["x" * 50, "ok", "", "ok", "ok", "ok"]),
     ("expect_column_value_lengths_to_be_between", "text", 2)),
    (docs(lang=["en", "English", "fr", "EN", "en", "x"]),
     ("expect_column_values_to_match_regex", "lang", 3)),
    (docs(lang_score=[0.5, 1.5, -0.1, 0.2, 0.3, 0.4]),
     ("expect_column_values_to_be_between", "lang_score", 2)),
    (docs(id=[1, 2, 3, 4, 5, 6]), ("expect_column_values_to_be_of_type", "id", 6)),
    (docs().drop_columns(["source"]), ("expect_column_to_exist", "source", 6)),
])
def test_each_contract_breaks(tmp_path: Path, table: pa.Table,
                              expected: tuple[str, str, int]) -> None:
    rep = check_documents("ingest", write(tmp_path, table), Limits(max_text_chars=40))
    assert not rep.ok
    exp, col, n = expected
    assert broken(rep).get((exp, col)) == n, rep.message()
    with pytest.raises(ContractError, match=exp):
        raise ContractError(rep)


def test_a_broken_check_shows_offending_values(tmp_path: Path) -> None:
    """GX answers in its BASIC result format (its default also lists the offending rows'
    indices, slowly); the report still names examples of what broke the contract."""
    rep = check_documents("ingest", write(tmp_path, docs(lang=["en", "English", "fr", "EN",
                                                             "en", "x"])))
    (check,) = rep.violations
    assert check.observed is not None
    assert {"English", "EN", "x"} <= set(ast.literal_eval(check.observed))
    assert "English" in rep.message()


def test_ids_unique_across_shards(tmp_path: Path) -> None:
    rep = check_documents("filter", write(tmp_path, docs(), docs()))
    assert broken(rep) == {("expect_column_values_to_be_unique", "id"): 12}


def test_score_columns_in_range(tmp_path: Path) -> None:
    t = docs().append_column("gopher_quality_bullet_lines_frac",
                             pa.array([0.0, 0.5, 1.0, 1.2, 0.1, 0.1], pa.float32()))
    t = t.append_column("gopher_quality_n_words", pa.array([3, 4, -1, None, 2, 2], pa.int32()))
    # a selector's score may be negative (MiniPLM: reference loss minus teacher loss)
    t = t.append_column("miniplm_score", pa.array([-0.5, 0.1, -2.0, 0.0, 1.0, -0.1]))
    rep = check_documents("filter", write(tmp_path, t))
    assert broken(rep) == {
        ("expect_column_values_to_be_between", "gopher_quality_bullet_lines_frac"): 1,
        ("expect_column_values_to_be_between", "gopher_quality_n_words"): 1}


def _token_dir(tmp: Path, rows: np.ndarray, vocab: int, n_seq: int | None = None) -> Path:
    (tmp / "train").mkdir(parents=True)
    np.save(tmp / "train" / "part-0.npy", rows)
    (tmp / "meta.json").write_text(json.dumps({
        "vocab_size": vocab, "seq_len": rows.shape[1],
        "train_shards": [{"path": "train/part-0.npy", "n_seq": n_seq or len(rows)}]}))
    return tmp


def test_token_ids_below_vocab(tmp_path: Path) -> None:
    rows = np.arange(40, dtype=np.uint16).reshape(5, 8)  # max id 39
    assert check_tokens(_token_dir(tmp_path / "a", rows, vocab=40)).ok
    rep = check_tokens(_token_dir(tmp_path / "b", rows, vocab=30))  # rows 3 and 4 reach 39
    assert broken(rep) == {("expect_column_values_to_be_between", "max_token_id"): 2}
    rep = check_tokens(_token_dir(tmp_path / "c", rows, vocab=40, n_seq=7))
    assert broken(rep) == {("expect_table_row_count_to_equal", None): 5}


@pytest.mark.parametrize("batch_rows", [4, 6, 250_000])
def test_batches_count_as_shards_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    batch_rows: int) -> None:
    """Shards validated in batches (several per GX call, or split over calls) give the counts
    shard-by-shard checks give: a column one shard lacks is missing for that shard's rows only,
    and ids repeated across batches are still caught."""
    import tasks.contracts as contracts

    monkeypatch.setattr(contracts, "BATCH_ROWS", batch_rows)
    shards = write(tmp_path, docs(text=["ok", None, "ok", "ok", "ok", "ok"]),
                   docs(id=[f"e{i}" for i in range(6)]).drop_columns(["source"]),
                   docs(id=["d0", "x1", "x2", "x3", "x4", "x5"]))
    rep = check_documents("filter", shards)
    assert rep.rows == 18 and rep.files == 3
    assert broken(rep) == {("expect_column_values_to_not_be_null", "text"): 1,
                           ("expect_column_to_exist", "source"): 6,
                           ("expect_column_values_to_be_unique", "id"): 2}
