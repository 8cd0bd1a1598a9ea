"""``datamill server``, ``datamill serve`` and ``datamill trigger``: Prefect's scheduling side."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from flows.cli.common import fail


def add_parser(sub: argparse._SubParsersAction) -> None:
    srv = sub.add_parser("server", help="start/stop a local Prefect server (UI, schedules)")
    srv.add_argument("action", choices=["start", "stop", "status"])
    srv.add_argument("--port", type=int, default=4200)
    srv.add_argument("--data-root", help="its database lives in <data-root>/prefect")
    srv.set_defaults(handler=cmd_server)

    se = sub.add_parser("serve", help="serve the deployments of deployments/prefect.yaml")
    se.add_argument("--file", default="deployments/prefect.yaml")
    se.set_defaults(handler=cmd_serve)

    tr = sub.add_parser("trigger", help="start a deployment's run, e.g. from CI")
    tr.add_argument("deployment", help="FLOW/DEPLOYMENT, e.g. datamill-run/sample")
    tr.add_argument("--param", action="append", default=[], metavar="K=V",
                    help="a flow parameter (V parsed as JSON when it can be)")
    tr.add_argument("--wait", action="store_true", help="wait for the run to finish")
    tr.add_argument("--timeout", type=float, default=3600, help="seconds to wait (with --wait)")
    tr.set_defaults(handler=cmd_trigger)


def cmd_server(args: argparse.Namespace) -> int:
    from infra import prefect_server
    from infra.env import data_root

    root = data_root(args.data_root)
    if args.action == "start":
        info = prefect_server.start(root, port=args.port)
        print(f"Prefect server up: UI {info['ui_url']}  (pid {info['pid']}, log {info['log']})")
        print("Point datamill at it:")
        print(f"  export PREFECT_API_URL={info['api_url']} "
              f"PREFECT_SERVER_UI_API_URL={info['api_url']}")
    elif args.action == "stop":
        print("stopped" if prefect_server.stop(root) else "no server recorded under " + str(root))
    else:
        info = prefect_server.status(root)
        if not info:
            print("no server recorded")
            return 1
        print(json.dumps(info, indent=2))
        return 0 if info["healthy"] else 1
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from infra.env import apply_defaults

    apply_defaults()
    from flows.serve import serve

    serve(Path(args.file))
    return 0


def _param(kv: str) -> tuple[str, Any]:
    if "=" not in kv:
        raise ValueError(f"--param needs K=V, got {kv!r}")
    k, v = kv.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v


def cmd_trigger(args: argparse.Namespace) -> int:
    """Exit 0 only when the run completed (with --wait) or was created (without)."""
    try:
        params = dict(_param(kv) for kv in args.param)
    except ValueError as e:
        return fail(str(e))
    import os

    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    if not PREFECT_API_URL.value():
        return fail("PREFECT_API_URL is not set: start a server (datamill server start)")
    run = run_deployment(args.deployment, parameters=params, as_subflow=False,
                         timeout=args.timeout if args.wait else 0)
    ui = PREFECT_UI_URL.value() or os.environ.get("PREFECT_API_URL", "").removesuffix("/api")
    print(f"flow run {run.name} ({run.id}): {run.state_name}")
    print(f"{ui}/runs/flow-run/{run.id}")
    if not args.wait:
        return 0
    if run.state is not None and run.state.is_completed():
        return 0
    if run.state is not None and not run.state.is_final():
        print(f"still {run.state_name} after {args.timeout:.0f}s", file=sys.stderr)
        return 3
    return 1
