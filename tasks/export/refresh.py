"""``refresh: {export: {to: DIR, format: parquet}}``: at the end of a refresh, the run is
exported only if it completed and was promoted; the folder then always holds the promoted
run's data (each promotion replaces the previous export, atomically)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any


def export_due(cfg: Any, summary: dict[str, Any], promotion: dict[str, Any]) -> bool:
    """Whether a finished refresh exports: configured, completed, and promoted."""
    return (cfg is not None and summary.get("status") == "completed"
            and promotion.get("promoted") is True)


def export_dir(cfg: Any, data_root: Path) -> Path:
    """``refresh.export.to``; a relative path is under the data root (a scheduled refresh's
    working directory is not something to rely on)."""
    to = Path(cfg.to).expanduser()
    return to if to.is_absolute() else data_root / to


def export_promoted(cfg: Any, data_root: Path, summary: dict[str, Any],
                    promotion: dict[str, Any], log: Any = None) -> dict[str, Any] | None:
    """Export the refresh's run if due; the export's summary, or None when not due. A failed
    export is logged and returned (``status: failed``): the run stays completed and promoted,
    and ``datamill export RUN --to DIR`` can make it later."""
    from tasks.catalog import Catalog
    from tasks.export import ExportError, export_run

    log = log or logging.getLogger("datamill")
    if not export_due(cfg, summary, promotion):
        return None
    dest = export_dir(cfg, data_root)
    try:
        out = export_run(Catalog(data_root / "catalog.duckdb"), summary["run_id"], dest,
                         cfg.format)
    except (ExportError, OSError, ValueError) as e:
        log.error("export of promoted run %s to %s failed: %s", summary["run_id"], dest, e)
        return {"status": "failed", "to": str(dest), "format": cfg.format, "error": str(e)}
    log.info("promoted run %s exported as %s to %s (%s)", out["run_id"], out["format"],
             out["to"], out["status"])
    return out
