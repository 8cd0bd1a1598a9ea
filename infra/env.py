"""Defaults for where things run. Environment variables say *where* (addresses, data root),
never what a recipe means. Call ``apply_defaults()`` before importing prefect or ray."""

from __future__ import annotations

import os
import re
import sys
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
    """CLI flag > $DATAMILL_DATA_ROOT > the recipe's data_root > .datamill. A URL
    (``s3://bucket/prefix``) gives its local working copy, attached to the bucket
    (tasks/remote.py: the flows pull before a run and push after each stage)."""
    root = explicit or os.environ.get("DATAMILL_DATA_ROOT") or recipe_root or ".datamill"
    if "://" in root and not root.startswith("file://"):
        from tasks.remote import Mirror, local_copy

        local = local_copy(root)
        Mirror(root, local).attach()
        return local
    return Path(root.removeprefix("file://")).expanduser().resolve()


# Flow parameters that become paths: a deployment trigger must not choose where files go.
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class UnsafeParameter(ValueError):
    """A flow parameter that would put files outside where this deployment may write."""


def check_id(value: str, what: str = "run_id") -> str:
    """A run or ablation id: it names folders under the data root, so one path component."""
    if not isinstance(value, str) or not SAFE_ID.fullmatch(value) or ".." in value:
        raise UnsafeParameter(f"{what} {value!r} is not allowed: use 1-128 letters, digits, "
                              "'_', '.', '-' (starting with a letter or digit; no '..', no '/')")
    return value


def allowed_roots() -> list[Path]:
    """``$DATAMILL_ALLOWED_ROOTS`` (os.pathsep-separated), else the working directory and
    ``$DATAMILL_DATA_ROOT``."""
    raw = os.environ.get("DATAMILL_ALLOWED_ROOTS")
    parts = raw.split(os.pathsep) if raw else [os.getcwd(),
                                                os.environ.get("DATAMILL_DATA_ROOT", "")]
    return [Path(p).expanduser().resolve() for p in parts if p.strip()]


def check_data_root(root: str | Path) -> Path:
    """``root`` resolved (symlinks too), if it lies under an allowed base."""
    resolved = Path(root).expanduser().resolve()
    bases = allowed_roots()
    if not any(resolved == b or resolved.is_relative_to(b) for b in bases):
        raise UnsafeParameter(
            f"data_root {str(root)!r} resolves to {resolved}, outside the allowed roots "
            f"{[str(b) for b in bases]} (set DATAMILL_ALLOWED_ROOTS, separated by "
            f"{os.pathsep!r}, on the serving process)")
    return resolved


def _deployment_run() -> bool:
    """Whether the current flow run was started from a deployment (a trigger, a schedule)."""
    if "prefect" not in sys.modules:
        return False
    from prefect.runtime import deployment

    return deployment.id is not None


def check_flow_params(run_id: str | None = None, ablation_id: str | None = None,
                      data_root: str | Path | None = None) -> None:
    """Validate the flow parameters that become paths: ids always; the data root when the
    run came from a deployment (the CLI's ``--data-root`` is its user's own choice)."""
    if run_id is not None:
        check_id(run_id, "run_id")
    if ablation_id is not None:
        check_id(ablation_id, "ablation_id")
    if data_root is not None and _deployment_run():
        check_data_root(data_root)
