"""What a filter is: score columns first, decisions from thresholds later.

A filter module (one file in tasks/filters/) declares

- ``NAME``: the recipe key and the prefix of its rule names, e.g. ``"gopher_quality"``;
- ``Config``: a pydantic model of its parameters; defaults are the published values; the
  few parameters that change the *scores* are annotated ``Annotated[T, SCORED]`` (and a file
  they read ``BY_CONTENT``: tasks/identity.py); everything else is a threshold, so changing it
  re-runs only the decision step;
- ``score(table, config) -> pa.Table``: new columns (one row per input row), named
  ``<NAME>_<stat>``, computed once and stored with the documents;
- ``rules(scores, config) -> dict[str, pa.BooleanArray]``: for each rule, in order, the rows that
  FAIL it. Rule names are ``<NAME>.<rule>``. Null means "rule does not apply" (e.g. a word-count
  rule on a language written without spaces) and never rejects.

An *edit step* (``c4_lines``, ``pii``) is a filter module that also defines
``edit(table, config) -> (text, scores)``: it rewrites ``text`` before the steps after it in the
recipe score it, and its score columns record what it changed (lines removed, placeholders put
in; declared in its ``SCORE_SCHEMA``, whose totals go to the stage manifest and the catalog
as ``edits.<column>``). Its rules may reject (an edit that leaves nothing) or be empty. Every
parameter of an edit step that changes the text is a score parameter.

The registry below maps recipe keys to modules, so adding a filter is one file plus one line
here and one recipe line. A filter in a user's own package needs no registry line: the recipe
names it by import path (``filters: {my_pkg.my_filter: {...}}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

import pyarrow as pa
from pydantic import AfterValidator, BaseModel, ConfigDict

from tasks.identity import identity, is_scored
from tasks.stage import resolve


class FilterConfig(BaseModel):
    """Base of every filter's Config: unknown keys are errors that name the key."""

    model_config = ConfigDict(extra="forbid")
    # derived from the SCORED markers (read-only; for docs and tests)
    SCORE_FIELDS: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.SCORE_FIELDS = frozenset(n for n in cls.model_fields if is_scored(cls, n))

    def score_params(self) -> dict[str, Any]:
        """What changes the scores: the SCORED fields (files by content)."""
        return identity(self, "score")


def score_schema(name: str, **stats: pa.DataType) -> pa.Schema:
    """A filter's ``SCORE_SCHEMA``: one column ``<name>_<stat>`` per stat, in the order given."""
    return pa.schema([pa.field(f"{name}_{stat}", t) for stat, t in stats.items()])


def existing_file(name: str) -> AfterValidator:
    """The check of a file parameter, ``Annotated[str, ..., existing_file(NAME)]``: the file
    must exist when the recipe is read; the error names the filter."""

    def check(v: str) -> str:
        if not Path(v).is_file():
            raise ValueError(f"{name}: no such file {v!r}")
        return v

    return AfterValidator(check)


class FilterModule(Protocol):
    NAME: str
    Config: type[FilterConfig]
    SCORE_VERSION: int  # bump when the score code changes, so cached scores are recomputed

    def score(self, table: pa.Table, config: FilterConfig) -> pa.Table: ...

    def rules(self, scores: pa.Table, config: FilterConfig) -> dict[str, pa.Array]: ...


# recipe key -> module path. One line per filter.
REGISTRY: dict[str, str] = {
    "gopher_quality": "tasks.filters.gopher",
    "gopher_repetition": "tasks.filters.gopher_repetition",
    "fineweb_quality": "tasks.filters.fineweb",
    "c4_quality": "tasks.filters.c4",
    "c4_lines": "tasks.filters.c4_lines",
    "pii": "tasks.filters.pii",
    "url_blocklist": "tasks.filters.url_blocklist",
    "word_blocklist": "tasks.filters.word_blocklist",
}


def get_filter(name: str) -> FilterModule:
    """A registered filter by recipe key, or a user's by import path (package.module[:attr])."""
    return resolve(REGISTRY, name, "filter")  # type: ignore[no-any-return]
