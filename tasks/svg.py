"""The report's score histograms and corpus-size bars as SVG documents, written directly (no
plotting library).

``histogram_grid``: a grid of panels (``COLS`` per row), one per score column: the documents
stacked per bin as kept / dropped by the panel's rule(s) / dropped by another rule, the
thresholds dashed, the x axis linear, log or symlog (linear from 0 to ``linthresh``, which
takes one decade's width, then log), a legend below. ``hbar_panels``: panels side by side of
horizontal bars per name, one per series. Every bar carries a ``<title>`` (what it counts: a
browser shows it on hover). All text is XML-escaped.

Both were drawn with matplotlib until the run report's cost was measured: the 12 histogram
panels of the filters benchmark took 0.5-0.7 s per run (tick and text layout), the bars
~0.2 s; written here, a few milliseconds each.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

import numpy as np

SVG_NS = "http://www.w3.org/2000/svg"
COLS = 3
W, H = 380, 250  # one panel, px
LEFT, RIGHT, TOP, BOTTOM = 46, 12, 24, 30  # the plot area's margins in a panel
LEGEND = 30
FONT = "font-family:system-ui,sans-serif"
CHAR_W = 5.2  # a 9 px character's mean width, to centre the legend


def _num(v: float) -> str:
    """A tick label: short, no float noise (0.30000000000000004 -> 0.3, 1e+06 -> 1e6)."""
    s = f"{v:.4g}"
    if "e" in s:
        mant, exp = s.split("e")
        s = f"{mant}e{int(exp)}"
    return s


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round values (1, 2, 2.5, 5 x 10^k steps) covering [lo, hi], about ``n`` of them."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    out, k = [], 0
    while first + k * step <= hi + step * 1e-9:
        out.append(round(first + k * step, 12))
        k += 1
    return out


class Scale:
    """Data -> [0, 1] along x: linear, log (base 10) or symlog (linear up to ``linthresh``,
    one decade wide, then log)."""

    def __init__(self, scale: dict[str, Any], lo: float, hi: float):
        self.kind = scale.get("value", "linear")
        self.lin = float(scale.get("linthresh", 1.0))
        self.a, self.b = self._f(lo), self._f(hi)
        if not self.b > self.a:
            self.b = self.a + 1.0

    def _f(self, x: float) -> float:
        if self.kind == "log":
            return math.log10(max(x, 1e-300))
        if self.kind == "symlog":
            return x / self.lin if x <= self.lin else 1.0 + math.log10(x / self.lin)
        return x

    def __call__(self, x: float) -> float:
        return (self._f(x) - self.a) / (self.b - self.a)

    def ticks(self, lo: float, hi: float) -> list[float]:
        if self.kind == "linear":
            return [t for t in nice_ticks(lo, hi) if lo - 1e-12 <= t <= hi + 1e-12]
        floor = self.lin if self.kind == "symlog" else lo
        e0 = math.ceil(math.log10(max(floor, 1e-300)) - 1e-9)
        e1 = math.floor(math.log10(max(hi, 1e-300)) + 1e-9)
        every = max(1, math.ceil((e1 - e0 + 1) / 6))  # at most ~6 decades labelled
        decades = [10.0 ** e for e in range(e0, e1 + 1, every)]
        return ([0.0] if self.kind == "symlog" and lo <= 0 else []) + decades


def _text(x: float, y: float, s: str, size: int = 9, anchor: str = "middle",
          extra: str = "") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{extra}>'
            f"{escape(s)}</text>")


def _panel(x0: float, y0: float, title: str, h: dict[str, Any],
           colours: dict[str, str]) -> list[str]:
    e = np.asarray(h["edges"], dtype=np.float64)
    parts = [k for k in colours if k in h["counts"]]
    counts = np.array([np.asarray(h["counts"][k], dtype=np.float64) for k in parts])
    top = float(counts.sum(axis=0).max()) if counts.size else 0.0
    yticks = nice_ticks(0.0, top or 1.0, 4)
    if yticks[-1] < top:  # the axis ends on a tick above the tallest bar
        yticks.append(2 * yticks[-1] - yticks[-2] if len(yticks) > 1 else top)
    ymax = max(yticks[-1], 1.0)
    sx = Scale(h["scale"], float(e[0]), float(e[-1]))
    px, py = x0 + LEFT, y0 + TOP
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def X(v: float) -> float:
        return px + pw * sx(v)

    def Y(c: float) -> float:
        return py + ph * (1 - c / ymax)

    out = [_text(x0 + W / 2, y0 + 14, title, 10)]
    bottom = np.zeros(len(e) - 1)
    for k, row in zip(parts, counts, strict=True):
        for i in np.flatnonzero(row):
            xa, xb = X(e[i]), X(e[i + 1])
            ya, yb = Y(bottom[i] + row[i]), Y(bottom[i])
            out.append(f'<rect x="{xa:.2f}" y="{ya:.2f}" width="{max(xb - xa, 0.5):.2f}" '
                       f'height="{max(yb - ya, 0.5):.2f}" fill="{colours[k]}">'
                       f"<title>{escape(k)}: {int(row[i])} docs in "
                       f"[{_num(e[i])}, {_num(e[i + 1])})</title></rect>")
        bottom += row
    for t in h["thresholds"]:
        xt = X(float(t))
        out.append(f'<line x1="{xt:.2f}" y1="{py:.1f}" x2="{xt:.2f}" y2="{py + ph:.1f}" '
                   f'stroke="#111" stroke-width="1" stroke-dasharray="4 3">'
                   f"<title>threshold {escape(_num(float(t)))}</title></line>")
    axis = 'stroke="#333" stroke-width="1"'
    out.append(f'<line x1="{px}" y1="{py + ph}" x2="{px + pw}" y2="{py + ph}" {axis}/>')
    out.append(f'<line x1="{px}" y1="{py}" x2="{px}" y2="{py + ph}" {axis}/>')
    for t in sx.ticks(float(e[0]), float(e[-1])):
        xt = X(t)
        out.append(f'<line x1="{xt:.2f}" y1="{py + ph}" x2="{xt:.2f}" y2="{py + ph + 4}" '
                   f"{axis}/>")
        out.append(_text(xt, py + ph + 14, _num(t), 8))
    for t in yticks:
        yt = Y(t)
        out.append(f'<line x1="{px - 4}" y1="{yt:.2f}" x2="{px}" y2="{yt:.2f}" {axis}/>')
        out.append(_text(px - 6, yt + 3, f"{t:,.0f}" if t == int(t) else _num(t), 8, "end"))
    if h.get("nulls"):
        out.append(_text(px + pw - 2, py + 10, f"{h['nulls']} null", 8, "end"))
    return out


def histogram_grid(panels: dict[str, tuple[str, dict[str, Any]]],
                   colours: dict[str, str]) -> str:
    """One SVG document: per key, (title, histogram) as ``tasks.plots.histogram_data`` gives
    it (``edges``, ``counts`` per part, ``scale``, ``thresholds``, ``nulls``)."""
    n = len(panels)
    cols = min(COLS, max(n, 1))
    rows = math.ceil(n / cols)
    width, height = cols * W, rows * H + LEGEND
    out = [f'<svg xmlns="{SVG_NS}" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" style="{FONT}">',
           f'<rect width="{width}" height="{height}" fill="#fff"/>']
    for i, (title, h) in enumerate(panels.values()):
        out += _panel((i % cols) * W, (i // cols) * H, title, h, colours)
    spans = [14 + CHAR_W * len(k) + 24 for k in colours]  # swatch, label, gap
    x = (width - sum(spans)) / 2
    for (k, colour), span in zip(colours.items(), spans, strict=True):  # legend, centred
        out.append(f'<rect x="{x:.1f}" y="{rows * H + 10}" width="10" height="10" '
                   f'fill="{colour}"/>')
        out.append(_text(x + 14, rows * H + 19, k, 9, "start"))
        x += span
    out.append("</svg>")
    return "\n".join(out)


Series = tuple[str, str, list[float]]  # label, colour, one value per name


def hbar_panels(panels: list[tuple[str, list[str], list[Series]]], width: int = 420) -> str:
    """One SVG document: panels side by side, each horizontal bars per name (top to bottom),
    one bar per series side by side within a name, a linear x axis from 0 and the series'
    legend under the panel. Each bar's ``<title>`` names its series, name and value."""
    names_w, pad = 150, 12
    rows = max((len(names) for _, names, _ in panels), default=1)
    slot = max((6 + 8 * len(series) for _, _, series in panels), default=14)  # per name
    plot_h = max(rows, 1) * slot
    height = TOP + plot_h + BOTTOM + LEGEND
    total = width * len(panels)
    out = [f'<svg xmlns="{SVG_NS}" width="{total}" height="{height}" '
           f'viewBox="0 0 {total} {height}" style="{FONT}">',
           f'<rect width="{total}" height="{height}" fill="#fff"/>']
    axis = 'stroke="#333" stroke-width="1"'
    for p, (title, names, series) in enumerate(panels):
        x0 = p * width
        px, pw = x0 + names_w, width - names_w - pad
        py = TOP
        top = max((v for _, _, vals in series for v in vals), default=0.0)
        ticks = nice_ticks(0.0, top or 1.0, 4)
        if ticks[-1] < top:
            ticks.append(2 * ticks[-1] - ticks[-2] if len(ticks) > 1 else top)
        xmax = max(ticks[-1], 1e-12)
        out.append(_text(x0 + width / 2, 14, title, 10))
        bar = (slot - 6) / max(len(series), 1)
        for i, name in enumerate(names):
            yc = py + i * slot
            out.append(_text(px - 6, yc + slot / 2 + 3, name, 8, "end"))
            for j, (lab, colour, vals) in enumerate(series):
                v = float(vals[i])
                out.append(f'<rect x="{px}" y="{yc + 3 + j * bar:.2f}" '
                           f'width="{pw * v / xmax:.2f}" height="{bar:.2f}" fill="{colour}">'
                           f"<title>{escape(lab)}, {escape(name)}: {_num(v)}</title></rect>")
        out.append(f'<line x1="{px}" y1="{py}" x2="{px}" y2="{py + plot_h}" {axis}/>')
        out.append(f'<line x1="{px}" y1="{py + plot_h}" x2="{px + pw}" y2="{py + plot_h}" '
                   f"{axis}/>")
        for t in ticks:
            xt = px + pw * t / xmax
            out.append(f'<line x1="{xt:.2f}" y1="{py + plot_h}" x2="{xt:.2f}" '
                       f'y2="{py + plot_h + 4}" {axis}/>')
            out.append(_text(xt, py + plot_h + 14, _num(t), 8))
        x = px
        for lab, colour, _ in series:  # the legend, under the plot
            out.append(f'<rect x="{x:.1f}" y="{py + plot_h + BOTTOM}" width="10" height="10" '
                       f'fill="{colour}"/>')
            out.append(_text(x + 14, py + plot_h + BOTTOM + 9, lab, 9, "start"))
            x += 14 + CHAR_W * len(lab) + 24
    out.append("</svg>")
    return "\n".join(out)
