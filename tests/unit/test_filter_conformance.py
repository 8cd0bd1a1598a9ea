"""Every registered filter keeps the filter contract of tasks/filters/base.py, checked on real
text by ``filterkit.check_filter_module``. A filter added to ``REGISTRY`` is checked with no
line here, unless its Config has required parameters: give them in ``PARAMS``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from filterkit import EDGE_CASES, check_filter_module, doc_table, write_blocklists

from tasks.filters.base import REGISTRY, FilterConfig, get_filter
from tasks.schema import DOC_COLUMNS

# required Config parameters (every other filter is checked with its defaults)
PARAMS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "url_blocklist": lambda folder: {"path": str(write_blocklists(folder)[0])},
    "word_blocklist": lambda folder: {"path": str(write_blocklists(folder)[1])},
}


def make_config(name: str, folder: Path) -> FilterConfig:
    return get_filter(name).Config(**(PARAMS[name](folder) if name in PARAMS else {}))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_filter_keeps_the_contract(name: str, tmp_path: Path) -> None:
    check_filter_module(get_filter(name), make_config(name, tmp_path))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_entry_is_the_module_of_that_name(name: str) -> None:
    module = get_filter(name)
    assert module is importlib.import_module(REGISTRY[name])
    assert module.NAME == name


def test_filters_share_no_column(tmp_path: Path) -> None:
    """The score step stores every filter's columns beside the documents; the decide step
    picks a filter's columns by their ``<NAME>_`` prefix. (Rule names cannot clash:
    ``<NAME>.<rule>`` with a NAME without dots.)"""
    docs = doc_table(*(list(col) for col in zip(*EDGE_CASES, strict=True)))
    columns = {name: get_filter(name).score(docs, make_config(name, tmp_path)).column_names
               for name in REGISTRY}
    for name, cols in columns.items():
        assert not set(cols) & set(DOC_COLUMNS), name
        for other, other_cols in columns.items():
            taken = [c for c in other_cols if c.startswith(f"{name}_")]
            assert other == name or not taken, f"{other}'s {taken} look like {name}'s columns"


def test_a_plug_in_filter_meets_the_same_contract() -> None:
    """A user's filter outside tasks/ (tests/plugins/acme_data/shouting.py), named by import
    path, is checked the same way."""
    import sys

    plugins = str(Path(__file__).resolve().parents[1] / "plugins")
    if plugins not in sys.path:
        sys.path.insert(0, plugins)
    module = get_filter("acme_data.shouting")
    check_filter_module(module, module.Config())
