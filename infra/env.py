"""Defaults for where things run. Environment variables say *where* (addresses, data root),
never what a recipe means. Call ``apply_defaults()`` before importing prefect or ray."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # the first ephemeral start builds Prefect's database: 20-27 s on 2 cores > default 20 s
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    "PREFECT_LOGGING_TO_API_BATCH_INTERVAL": "0.5",
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",  # models ship in packages or checkpoints; never wait on a hub
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
}


def apply_defaults() -> None:
    for k, v in DEFAULTS.items():
        os.environ.setdefault(k, v)
    if not os.environ.get("DATAMILL_RAY_ADDRESS"):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local runs only


def data_root(explicit: str | None = None, recipe_root: str | None = None) -> Path:
    """CLI flag > $DATAMILL_DATA_ROOT > the recipe's data_root > .datamill"""
    root = explicit or os.environ.get("DATAMILL_DATA_ROOT") or recipe_root or ".datamill"
    return Path(root).expanduser().resolve()
