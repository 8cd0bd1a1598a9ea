"""The SVG score histograms (tasks/svg.py): ticks, scales, bar geometry and inert text."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from tasks import svg

NS = f"{{{svg.SVG_NS}}}"
COLOURS = {"kept": "#2563eb", "dropped": "#dc2626"}


def _hist(edges: list[float], kept: list[int], dropped: list[int], **kw: object
          ) -> dict[str, object]:
    return {"edges": np.array(edges), "counts": {"kept": np.array(kept, float),
                                                 "dropped": np.array(dropped, float)},
            "scale": {"value": "linear"}, "thresholds": [], "nulls": 0, **kw}


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert svg.nice_ticks(0, 1) == [0, 0.25, 0.5, 0.75, 1]
    assert svg.nice_ticks(0, 13000, 4) == [0, 5000, 10000]
    assert svg.nice_ticks(0.7, 1.0) == [0.7, 0.8, 0.9, 1.0]
    assert svg.nice_ticks(3, 3) == [3]


@pytest.mark.parametrize("scale, lo, hi, ticks", [
    ({"value": "linear"}, 0.0, 100.0, [0, 25, 50, 75, 100]),
    ({"value": "log"}, 3.0, 2e5, [10.0, 100.0, 1e3, 1e4, 1e5]),
    ({"value": "symlog", "linthresh": 2.0}, 0.0, 5e3, [0.0, 10.0, 100.0, 1e3]),
])
def test_scales_map_the_range_monotonically(scale: dict[str, object], lo: float, hi: float,
                                            ticks: list[float]) -> None:
    s = svg.Scale(scale, lo, hi)
    assert s(lo) == pytest.approx(0) and s(hi) == pytest.approx(1)
    xs = np.linspace(lo, hi, 200)
    assert all(b > a for a, b in zip(map(s, xs[:-1]), map(s, xs[1:]), strict=True))
    assert s.ticks(lo, hi) == ticks
    if scale["value"] == "symlog":  # the linear part takes one decade's width
        assert s(2.0) == pytest.approx(s(20.0) - s(2.0))


def test_bars_stack_in_proportion_to_their_counts() -> None:
    h = _hist([0, 1, 2, 3], [10, 0, 5], [10, 4, 0], thresholds=[1.5], nulls=3)
    root = ET.fromstring(svg.histogram_grid({"c": ("c (rule)", h)}, COLOURS))
    bars = [(r, r.find(f"{NS}title").text) for r in root.iter(f"{NS}rect")
            if r.find(f"{NS}title") is not None]
    assert sorted(t for _, t in bars) == sorted([
        "kept: 10 docs in [0, 1)", "kept: 5 docs in [2, 3)", "dropped: 10 docs in [0, 1)",
        "dropped: 4 docs in [1, 2)"])
    height = {t: float(r.get("height")) for r, t in bars}
    assert height["kept: 10 docs in [0, 1)"] == pytest.approx(
        2.5 * height["dropped: 4 docs in [1, 2)"], rel=1e-3)
    y = {t: float(r.get("y")) for r, t in bars}  # dropped sits on kept in the first bin
    assert y["kept: 10 docs in [0, 1)"] == pytest.approx(
        y["dropped: 10 docs in [0, 1)"] + height["dropped: 10 docs in [0, 1)"], abs=0.02)
    width = {t: float(r.get("width")) for r, t in bars}
    assert len({round(w, 2) for w in width.values()}) == 1  # equal bins, equal widths
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert "c (rule)" in texts and "3 null" in texts and "kept" in texts
    assert [ln.find(f"{NS}title").text for ln in root.iter(f"{NS}line")
            if ln.get("stroke-dasharray")] == ["threshold 1.5"]


def test_titles_and_parts_are_inert_text() -> None:
    evil = '<script>alert("x")</script> & "q"'
    h = _hist([0, 1], [1], [0])
    out = svg.histogram_grid({"c": (evil, h)}, {evil: "#000", "kept": "#111",
                                                  "dropped": "#222"})
    assert "<script" not in out
    root = ET.fromstring(out)
    assert evil in [t.text for t in root.iter(f"{NS}text")]  # shown as the text it is
