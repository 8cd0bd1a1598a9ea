"""docs/selection.md lists every recipe key of the selectors with the default the code has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from tasks.select import dsir
from tasks.select.fasttext_stage import Config as FastTextConfig
from tasks.select.reference import Reference

DOC = (Path(__file__).resolve().parents[2] / "docs" / "selection.md").read_text()


def _rows(model: type[BaseModel]) -> dict[str, str]:
    """Key -> default cell of the doc's table rows naming the model's fields."""
    out = {}
    for name in model.model_fields:
        m = re.search(rf"^\| `{name}`(?: \(`with:`\))? \| ([^|]+) \|", DOC, re.M)
        assert m, f"docs/selection.md has no row for {model.__name__}.{name}"
        out[name] = m.group(1).strip()
    return out


@pytest.mark.parametrize("model", [Reference, dsir.Config, FastTextConfig],
                         ids=lambda m: m.__module__)
def test_every_key_is_documented_with_its_default(model: type[BaseModel]) -> None:
    for name, cell in _rows(model).items():
        field = model.model_fields[name]
        if field.is_required():
            assert cell == "—", name
            continue
        default = field.get_default(call_default_factory=True)
        want = {"`null`", "—"} if default is None else {f"`{default}`"}
        assert cell in want, (name, cell, want)
