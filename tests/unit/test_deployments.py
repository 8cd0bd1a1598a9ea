"""Deployment files are valid: Prefect deployments load, the compose file passes
`docker compose config` (client-side) and wires the variables datamill reads."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_prefect_yaml_deployments_load() -> None:
    from flows.serve import load_deployments

    deps = {d.name: d for d in load_deployments(ROOT / "deployments" / "prefect.yaml")}
    assert {"refresh", "sample"} <= set(deps) <= {"refresh", "sample", "ablation"}
    assert deps["sample"].parameters == {"recipe_path": "recipes/sample.yaml"}
    nightly = deps["refresh"]
    assert nightly.flow_name == "datamill-refresh"
    assert nightly.parameters["recipe_path"] == "recipes/sample.yaml"
    assert nightly.schedules and nightly.schedules[0].schedule.cron == "0 2 * * *"
    assert not deps["sample"].schedules  # on demand
    if "ablation" in deps:
        assert deps["ablation"].flow_name == "datamill-ablation" and not deps["ablation"].schedules
    assert all(d.concurrency_limit == 1 for d in deps.values())


def test_compose_file_wires_the_engines() -> None:
    compose = ROOT / "infra" / "compose.yaml"
    spec = yaml.safe_load(compose.read_text())
    services = spec["services"]
    assert {"postgres", "prefect-server", "dask-scheduler", "dask-worker", "ray-head",
            "datamill"} <= set(services)
    env = services["datamill"]["environment"]
    for var in ("PREFECT_API_URL", "DATAMILL_DASK_ADDRESS", "DATAMILL_RAY_ADDRESS",
                "DATAMILL_DATA_ROOT"):
        assert var in env
    assert "postgresql" in services["prefect-server"]["environment"][
        "PREFECT_API_DATABASE_CONNECTION_URL"]
    for svc in ("dask-scheduler", "dask-worker", "ray-head", "datamill"):
        assert services[svc]["environment"]["DATAMILL_DASK_ADDRESS"] == "tcp://dask-scheduler:8786"
    # every published port on the host's loopback (a bare "8787:8787" binds 0.0.0.0), and
    # Ray's dashboard (its Jobs API runs code) on the container's loopback
    for name, svc in services.items():
        for port in svc.get("ports") or []:
            host_ip = port.get("host_ip") if isinstance(port, dict) else (
                str(port).rsplit(":", 2)[0] if str(port).count(":") == 2 else "0.0.0.0")
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond the loopback"
    assert "--dashboard-host=127.0.0.1" in services["ray-head"]["command"]
    assert "0.0.0.0" not in services["ray-head"]["command"]
    # a client-side check: `docker compose config` (plugin) or the standalone docker-compose
    docker = shutil.which("docker")
    cmds = []
    plugin = docker and subprocess.run([docker, "compose", "version"],
                                       capture_output=True).returncode == 0
    if plugin:
        cmds.append([docker, "compose"])
    if shutil.which("docker-compose"):
        cmds.append([shutil.which("docker-compose")])
    if not cmds:
        pytest.skip("no docker compose client installed: structural checks only")
    out = subprocess.run([*cmds[0], "-f", str(compose), "config", "-q"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
