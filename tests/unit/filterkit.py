"""Helpers shared by the filter modules' tests: a one-column document table, probes that
score one text and read its stats, its rule decisions and the rules that fired, and
``check_filter_module``: the whole contract of tasks/filters/base.py, checked on real text.
It needs no pytest (plain asserts with messages), so a filter module kept outside ``tasks/``
can be checked from a script too: ``check_filter_module(my_filter, my_filter.Config())``
with ``tests/unit`` on ``sys.path``."""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from tasks.filters.base import FilterConfig
from tasks.schema import DOC_SCHEMA


def table(texts: list[str | None], langs: list[str | None] | None = None) -> pa.Table:
    if langs is None:
        langs = ["en"] * len(texts)
    return pa.table(
        {"text": pa.array(texts, pa.large_string()), "lang": pa.array(langs, pa.string())}
    )


def probe(module: ModuleType, config_cls: type) -> tuple[Callable[..., Any], ...]:
    """(stats, decisions, fired) for one filter module."""

    def stats(text: str | None, lang: str | None = "en", config: Any = None) -> dict:
        row = module.score(table([text], [lang]), config or config_cls()).to_pylist()[0]
        return {k.removeprefix(module.NAME + "_"): v for k, v in row.items()}

    def decisions(text: str, lang: str | None = "en", config: Any = None) -> dict:
        config = config or config_cls()
        out = module.rules(module.score(table([text], [lang]), config), config)
        return {name: arr[0].as_py() for name, arr in out.items()}

    def fired(text: str, lang: str | None = "en", config: Any = None) -> set[str]:
        return {k for k, v in decisions(text, lang, config).items() if v is True}

    return stats, decisions, fired


SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "sample.jsonl"


def sample_records() -> list[dict]:
    with SAMPLE.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def write_blocklists(folder: Path) -> tuple[Path, Path]:
    """A tiny UT1-style domain list and a word list (both hit some sample documents)."""
    urls = folder / "domains.txt"
    urls.write_text("# UT1-style list\nexample.com\nhttps://www.Bad.org/path\nwikipedia.org\n\n")
    words = folder / "words.txt"
    words.write_text("darn\nfoo bar\nmaldito\n禁止词\nvanadium\n")
    return urls, words


# --------------------------------------------------------------------------- conformance

SAMPLE_STRIDE = 10  # every 10th sample document (a few hundred, every source) ...
MAIN_LANGS = ("en", "fr", "es")  # ... and every document in another language
# (text, lang, url): texts and labels the sample lacks
EDGE_CASES: tuple[tuple[str | None, str | None, str | None], ...] = (
    ("", "en", None),
    (None, "en", None),
    (None, None, None),
    (" \n\t \r\n ", "en", ""),
    ("word", "en", "https://example.com/"),
    ("Word.", None, "not a url at all"),
    ("长城是中国古代的军事防御工程，修筑历史可上溯到西周时期。", "zh-CN", "https://zh.wikipedia.org/"),
    ("富士山は日本で最も高い山です。\n富士山は日本で最も高い山です。", "ja", None),
    ("東京 大阪", "en", None),  # CJK labelled English
    ("😀 🎉 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ½ — ### …", "", None),
    ("Line one.\r\nLine one.\r\n\r\nLine one...", "FR_fr", "http://ads.example.com:8080/x"),
    ("Mail jane.roe@mail.example.org or (555) 123-4567 at 10.0.0.1, darn.", "en",
     "https://www.bad.org/a"),
    ("Lorem ipsum dolor. Enable JavaScript. Set {x} here. Our privacy policy.[1]", "en", None),
    ("the " * 3000, "en", None),
    ("\n" * 500 + "x", "th", None),
)


def doc_table(texts: list[str | None], langs: list[str | None],
              urls: list[str | None]) -> pa.Table:
    """Documents with the document contract's columns and types (tasks/schema.py)."""
    n = len(texts)
    cols = {"id": [f"doc-{i}" for i in range(n)], "text": texts, "source": ["test"] * n,
            "url": urls, "lang": langs}
    schema = pa.schema([f.with_nullable(True) for f in DOC_SCHEMA])  # null text is an edge case
    return pa.table({f.name: pa.array(cols.get(f.name, [None] * n), f.type) for f in schema},
                    schema=schema)


def conformance_docs() -> pa.Table:
    recs = [r for i, r in enumerate(sample_records())
            if i % SAMPLE_STRIDE == 0 or r["lang"].lower()[:2] not in MAIN_LANGS]
    rows = [(r["text"], r["lang"], r.get("url")) for r in recs] + list(EDGE_CASES)
    return doc_table(*(list(col) for col in zip(*rows, strict=True)))


def _bits(t: pa.Table) -> list[list[Any]]:
    """Column values with floats as their bit patterns: equal means equal to the bit."""
    out = []
    for col in t.columns:
        a = col.combine_chunks()
        if pa.types.is_floating(a.type):
            a = a.view(getattr(pa, f"uint{a.type.bit_width}")())
        out.append(a.to_pylist())
    return out


def assert_same_scores(got: pa.Table, want: pa.Table, what: str) -> None:
    assert got.schema == want.schema, f"{what}: schema\n{got.schema}\n!=\n{want.schema}"
    for name, a, b in zip(want.column_names, _bits(got), _bits(want), strict=True):
        bad = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), None)
        assert bad is None, f"{what}: {name} differs at row {bad}: {a[bad]!r} != {b[bad]!r}"


def _score(module: ModuleType, config: Any, docs: pa.Table) -> pa.Table:
    """``module.score`` with the checks every call must pass."""
    name = module.NAME
    out = module.score(docs, config)
    assert isinstance(out, pa.Table), f"{name}.score returned {type(out).__name__}, not a Table"
    assert out.num_rows == docs.num_rows, f"{name}.score: {out.num_rows} rows for {docs.num_rows}"
    names = out.column_names
    assert names and len(set(names)) == len(names), f"{name}.score: columns {names}"
    bad = [c for c in names if not c.startswith(f"{name}_") or c == f"{name}_"]
    assert not bad, f"{name}.score: columns {bad} are not named {name}_<stat>"
    bad = [f.name for f in out.schema if pa.types.is_null(f.type)]
    assert not bad, f"{name}.score: columns {bad} have type null"
    schema = getattr(module, "SCORE_SCHEMA", None)
    if schema is not None:
        assert out.schema == schema, f"{name}.score: schema\n{out.schema}\n!= SCORE_SCHEMA"
    return out


def _rules(module: ModuleType, config: Any, scores: pa.Table,
           names: list[str] | None = None) -> dict[str, pa.Array]:
    """``module.rules`` with the checks every call must pass (``names``: the expected rules)."""
    name = module.NAME
    out = module.rules(scores, config)
    assert isinstance(out, dict), f"{name}.rules returned {type(out).__name__}, not a dict"
    for rule, fails in out.items():
        assert isinstance(rule, str) and rule.startswith(f"{name}.") and rule != f"{name}.", \
            f"{name}.rules: rule {rule!r} is not named {name}.<rule>"
        assert isinstance(fails, pa.BooleanArray), \
            f"{rule}: {type(fails).__name__}, not a BooleanArray"
        assert len(fails) == scores.num_rows, f"{rule}: {len(fails)} rows for {scores.num_rows}"
    if names is not None:
        assert list(out) == names, f"{name}.rules: rules {list(out)} != {names}"
    return out


def _same_rules(got: dict[str, pa.Array], want: dict[str, pa.Array], what: str) -> None:
    assert list(got) == list(want), f"{what}: rules {list(got)} != {list(want)}"
    for rule, fails in want.items():
        assert got[rule].to_pylist() == fails.to_pylist(), f"{what}: {rule} decides differently"


def check_filter_module(module: ModuleType, config: FilterConfig, *,
                        docs: pa.Table | None = None,
                        variants: Mapping[str, Iterable[Any]] | None = None) -> None:
    """Assert that ``module`` keeps the filter contract (tasks/filters/base.py) with ``config``.

    ``docs``: documents with the document contract's columns (default: a few hundred sample
    documents and ``EDGE_CASES``). ``variants``: field -> other valid values, for Config
    fields whose type the check cannot vary by itself (bool, numbers, str, lists, dicts,
    Literals and ``None`` it can)."""
    _check_declarations(module, config)
    docs = conformance_docs() if docs is None else docs
    scores = _score(module, config, docs)
    rule_names = list(_rules(module, config, scores))
    _check_rows(module, config, docs, scores, rule_names)
    _check_nulls(module, config, docs, rule_names)
    _check_stored(module, config, docs, scores)
    _check_wrong_config(module, config, docs, scores)
    if hasattr(module, "edit"):
        _check_edit(module, config, docs, scores)
    _check_parameters(module, config, docs, scores, rule_names, variants or {})


def _check_declarations(module: ModuleType, config: FilterConfig) -> None:
    name = getattr(module, "NAME", None)
    assert isinstance(name, str) and re.fullmatch(r"[a-z][a-z0-9_]*", name), \
        f"{module.__name__}.NAME must be a lowercase identifier, got {name!r}"
    version = getattr(module, "SCORE_VERSION", None)
    assert type(version) is int and version >= 1, f"{name}.SCORE_VERSION: {version!r}"
    for fn in ("score", "rules"):
        assert callable(getattr(module, fn, None)), f"{name} has no {fn}()"
    cls = getattr(module, "Config", None)
    assert isinstance(cls, type) and issubclass(cls, FilterConfig), \
        f"{name}.Config must subclass FilterConfig"
    assert isinstance(config, cls), f"config is a {type(config).__name__}, not {name}.Config"
    fields = set(cls.model_fields)
    assert cls.SCORE_FIELDS <= fields, f"{name}: SCORE_FIELDS {cls.SCORE_FIELDS - fields} unknown"
    # a recipe's YAML comes back as JSON types
    assert cls.model_validate(json.loads(config.model_dump_json())) == config, \
        f"{name}.Config does not survive a recipe round trip"
    typos = {"not_a_parameter"} | {f + "x" for f in fields} | {f[:-1] for f in fields}
    for key in sorted(typos - fields - {""}):
        try:
            cls(**config.model_dump(), **{key: 1})
        except ValidationError as e:
            assert key in str(e), f"{name}.Config: the error for {key!r} does not name it"
        else:
            raise AssertionError(f"{name}.Config accepted the unknown key {key!r}")
    params = config.score_params()
    assert isinstance(params, dict) and "score_version" not in params, \
        f"{name}.score_params() must be a dict without 'score_version': {params!r}"
    json.dumps(params, sort_keys=True, default=str)  # it goes into the score step's version
    if type(config).score_params is FilterConfig.score_params:
        assert set(params) == cls.SCORE_FIELDS, f"{name}: score_params() {set(params)}"
    if hasattr(module, "edit"):
        assert callable(module.edit), f"{name}.edit is not callable"
        assert isinstance(getattr(module, "SCORE_SCHEMA", None), pa.Schema), \
            f"edit step {name} declares no SCORE_SCHEMA"


def _check_rows(module: ModuleType, config: Any, docs: pa.Table, scores: pa.Table,
                rule_names: list[str]) -> None:
    """Deterministic, row by row: no row's scores depend on the other rows or on chunking."""
    n = docs.num_rows
    assert_same_scores(_score(module, config, docs), scores, "scored twice")
    back = pa.array(range(n - 1, -1, -1))
    assert_same_scores(_score(module, config, docs.take(back)), scores.take(back), "reversed")
    chunked = pa.concat_tables([docs.slice(0, n // 2), docs.slice(n // 2)])
    assert_same_scores(_score(module, config, chunked), scores, "two chunks")
    halves = pa.concat_tables([_score(module, config, docs.slice(0, n // 2)),
                               _score(module, config, docs.slice(n // 2))])
    assert_same_scores(halves, scores, "two halves scored apart")
    for i in [*range(min(n, 3)), *range(max(3, n - len(EDGE_CASES)), n)]:
        assert_same_scores(_score(module, config, docs.slice(i, 1)), scores.slice(i, 1),
                           f"row {i} ({docs['text'][i].as_py()!r:.40}) scored alone")
    empty = _score(module, config, docs.slice(0, 0))
    assert empty.schema == scores.schema, f"{module.NAME}: empty table, other column types"
    _rules(module, config, empty, rule_names)
    out = _rules(module, config, scores, rule_names)
    _same_rules(_rules(module, config, scores, rule_names), out, "rules run twice")
    halves = pa.concat_tables([scores.slice(0, n // 3), scores.slice(n // 3)])
    _same_rules(_rules(module, config, halves, rule_names), out, "chunked scores")


def _check_nulls(module: ModuleType, config: Any, docs: pa.Table, rule_names: list[str]) -> None:
    """A null text scores as the empty string; a null score never rejects."""
    n, i = docs.num_rows, docs.schema.get_field_index("text")
    text = docs.schema.field("text").type
    nulls = _score(module, config, docs.set_column(i, "text", pa.nulls(n, text)))
    blank = _score(module, config, docs.set_column(i, "text", pa.array([""] * n, text)))
    assert_same_scores(nulls, blank, "null text vs empty text")
    unknown = pa.table({f.name: pa.nulls(3, f.type) for f in nulls.schema})
    for rule, fails in _rules(module, config, unknown, rule_names).items():
        assert True not in fails.to_pylist(), f"{rule} rejects a document whose scores are null"


def _check_stored(module: ModuleType, config: Any, docs: pa.Table, scores: pa.Table) -> None:
    """Scores survive Parquet, and rules read them as the decide step does: among the
    documents' and other filters' columns, in any order and chunking."""
    sink = pa.BufferOutputStream()
    pq.write_table(scores, sink)
    stored = pq.read_table(pa.BufferReader(sink.getvalue()))
    assert_same_scores(stored.replace_schema_metadata(None), scores, "read back from Parquet")
    wide = docs.append_column("other_filter_stat", pa.array(range(docs.num_rows), pa.int32()))
    for col in scores.column_names:
        wide = wide.append_column(col, scores.column(col))
    wide = wide.select(wide.column_names[::-1])
    wide = pa.concat_tables([wide.slice(0, 5), wide.slice(5)])
    _same_rules(_rules(module, config, wide), _rules(module, config, scores), "stored layout")


def _check_wrong_config(module: ModuleType, config: Any, docs: pa.Table,
                        scores: pa.Table) -> None:
    """Another config is a TypeError naming the filter (rules may also ignore the config)."""
    name = module.NAME
    steps = [("score", lambda c: module.score(docs.slice(0, 3), c)),
             ("rules", lambda c: module.rules(scores, c))]
    if hasattr(module, "edit"):
        steps.append(("edit", lambda c: module.edit(docs.slice(0, 3), c)))
    for bad in (object(), FilterConfig()):
        if isinstance(bad, module.Config):
            continue
        for step, call in steps:
            try:
                out = call(bad)
            except TypeError as e:
                assert name in str(e), f"{name}.{step}: the TypeError does not name {name}"
                continue
            except Exception as e:
                raise AssertionError(f"{name}.{step} with a {type(bad).__name__}: "
                                     f"{type(e).__name__}, not a TypeError") from e
            assert step == "rules", f"{name}.{step} accepted a {type(bad).__name__}"
            _same_rules(out, module.rules(scores, config), f"rules with a {type(bad).__name__}")


def _check_edit(module: ModuleType, config: Any, docs: pa.Table, scores: pa.Table) -> None:
    name, schema = module.NAME, module.SCORE_SCHEMA
    for f in schema:  # their totals go to the manifest and the catalog as edits.<column>
        assert pa.types.is_integer(f.type), f"edit step {name}: {f.name} is not a count"
    edits = [module.edit(part, config) for part in (docs, docs, docs.slice(0, 0))]
    for (text, counts), part in zip(edits, (docs, docs, docs.slice(0, 0)), strict=True):
        assert isinstance(text, pa.Array | pa.ChunkedArray), f"{name}.edit: text is not Arrow"
        assert len(text) == part.num_rows, f"{name}.edit: {len(text)} texts for {part.num_rows}"
        assert text.type == DOC_SCHEMA.field("text").type, f"{name}.edit: text is {text.type}"
        assert isinstance(counts, pa.Table) and counts.schema == schema, \
            f"{name}.edit: scores do not match SCORE_SCHEMA"
    assert edits[0][0].equals(edits[1][0]), f"{name}.edit is not deterministic"
    assert_same_scores(edits[0][1], scores, f"{name}.edit's scores vs {name}.score")


def _candidates(value: Any, annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) is typing.Literal:
        return [a for a in typing.get_args(annotation) if a != value]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, 0, 1, None]
    if isinstance(value, float):
        return [value * 2 + 0.5, value / 2, 0.0, 1.0, None]
    if isinstance(value, str):
        return [value + "x", value[:-1], None]
    if isinstance(value, list | tuple):
        return [list(value[:-1]), [*value, *value[:1]], []]
    if isinstance(value, dict):
        return [dict(list(value.items())[:-1]), {}]
    return [1, 0.5, "x", True] if value is None else []  # an Optional left at None


def _variants(cls: type[FilterConfig], base: dict[str, Any], field: str,
              extra: Iterable[Any]) -> list[FilterConfig]:
    """Up to two valid configs that differ from ``base`` in ``field`` only."""
    out: list[FilterConfig] = []
    for value in [*extra, *_candidates(base[field], cls.model_fields[field].annotation)]:
        try:
            cfg = cls(**{**base, field: value})
        except ValidationError:
            continue
        if getattr(cfg, field) != base[field] and cfg not in out:
            out.append(cfg)
    return out[:2]


def _check_parameters(module: ModuleType, config: FilterConfig, docs: pa.Table,
                      scores: pa.Table, rule_names: list[str],
                      variants: Mapping[str, Iterable[Any]]) -> None:
    """A change of a threshold (a non-score field) changes neither ``score_params()`` nor a
    score, nor an edit step's text; a change of a score field changes ``score_params()``."""
    name, cls = module.NAME, type(config)
    base = config.model_dump()
    params = json.dumps(config.score_params(), sort_keys=True, default=str)
    firsts: dict[str, Any] = {}
    lasts: dict[str, Any] = {}
    for field in cls.model_fields:
        configs = _variants(cls, base, field, variants.get(field, ()))
        scored = field in cls.SCORE_FIELDS
        assert configs or scored, \
            f"{name}: cannot vary {field!r}; pass variants={{{field!r}: [...]}}"
        for cfg in configs:
            now = json.dumps(cfg.score_params(), sort_keys=True, default=str)
            assert (now != params) == scored, f"{name}: {field}={getattr(cfg, field)!r} " + (
                "changed no score_params()" if scored else "changed score_params()")
            if not scored:
                _rules(module, cfg, scores, rule_names)
                firsts.setdefault(field, getattr(cfg, field))
                lasts[field] = getattr(cfg, field)
    edited = module.edit(docs, config)[0] if hasattr(module, "edit") else None
    # every threshold changed at once (twice): one rescoring each, not one per field
    for changed in filter(None, [firsts, lasts] if lasts != firsts else [firsts]):
        error: AssertionError | None = None
        try:
            _same_output(module, cls(**{**base, **changed}), docs, scores, edited,
                         f"thresholds {sorted(changed)} changed")
            continue
        except ValidationError:
            pass  # thresholds that constrain each other: one at a time
        except AssertionError as e:
            error = e
        for field, value in changed.items():  # one at a time, which names the culprit
            _same_output(module, cls(**{**base, field: value}), docs, scores, edited,
                         f"threshold {field}={value!r}")
        if error is not None:
            raise error  # only their combination changes the output


def _same_output(module: ModuleType, cfg: FilterConfig, docs: pa.Table, scores: pa.Table,
                 edited: pa.Array | pa.ChunkedArray | None, what: str) -> None:
    assert_same_scores(_score(module, cfg, docs), scores, f"{module.NAME}: {what}")
    if edited is not None:
        assert module.edit(docs, cfg)[0].equals(edited), f"{module.NAME}: {what}: other text"
