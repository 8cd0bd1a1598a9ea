"""Ingest's batch and read sizes, and the defaults of the recipe's ingest parameters."""

from __future__ import annotations

from typing import Any

from tasks import extract as html_extract

BATCH_DOCS = 2_000
BATCH_CHARS = 4 * 2**20  # a batch also ends at this many characters: the batch, not the
# corpus, sets the memory (32 MB batches of long pages peaked at 1.8x the 4 MB input's RSS);
# each batch pays a few ms of fixed cost (Arrow compiles the normalisation gate's patterns)
RAW_SNIPPET = 500  # bytes of a bad record kept in quarantine for a person to look at
SIDE_ROWS = 50_000  # rejected / quarantine rows held before a part is written
READ_CHUNK = 1 * 2**20
ARROW_BATCH_BYTES = 8 * 2**20  # Parquet / Arrow rows decoded at once (estimated bytes)

HTML_EXTS = (".html", ".htm")
TEXT_EXTS = (".txt",)

# defaults of the recipe's ingest parameters (read with getattr so an IngestConfig without
# them still works)
DEFAULTS: dict[str, Any] = {
    "normalize": True,
    "lang_id": "missing",  # off | missing (records without a lang) | always
    "min_lang_score": 0.0,
    "languages": None,
    "extractor": "trafilatura",
    "max_html_bytes": html_extract.MAX_HTML_BYTES,
    "max_html_depth": html_extract.MAX_HTML_DEPTH,
    "max_line_bytes": 16 * 2**20,
}


def opt(cfg: Any, name: str) -> Any:
    """An ingest parameter of `cfg`, or its default."""
    return getattr(cfg, name, DEFAULTS[name])
