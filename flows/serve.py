"""``datamill serve``: serve every deployment of ``deployments/prefect.yaml`` from one process.

The same file works with ``prefect deploy`` and a process work pool; serving needs no pool or
worker. Each deployment keeps its schedules, parameters and concurrency limit.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml


def load_deployments(path: Path) -> list[Any]:
    spec = yaml.safe_load(path.read_text())
    deployments = []
    for d in spec.get("deployments") or []:
        file, func = d["entrypoint"].split(":")
        module = importlib.import_module(file.removesuffix(".py").replace("/", "."))
        flow = getattr(module, func)
        crons = [s["cron"] for s in d.get("schedules") or [] if "cron" in s]
        deployments.append(flow.to_deployment(
            name=d["name"],
            description=d.get("description"),
            parameters=d.get("parameters") or {},
            cron=crons or None,
            concurrency_limit=d.get("concurrency_limit"),
            tags=["datamill"],
        ))
    if not deployments:
        raise ValueError(f"{path}: no deployments")
    return deployments


def serve(path: Path) -> None:
    from prefect import serve as prefect_serve

    prefect_serve(*load_deployments(path))
