"""Security hygiene: flow parameters that become paths are validated, run errors stored in the
catalog carry no credentials, stage files are fsynced before their marker or manifest."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from infra.env import UnsafeParameter, check_data_root, check_flow_params, check_id
from tasks.catalog import Catalog, scrub_secrets

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = str(ROOT / "recipes" / "sample.yaml")


@pytest.mark.parametrize("ok", ["20240101-120000-abc123", "a", "ablation-x_1.2", "A" * 128])
def test_safe_ids(ok: str) -> None:
    assert check_id(ok) == ok


@pytest.mark.parametrize("bad", ["", "../x", "..", "a/b", "/etc", ".hidden", "-x", "a..b",
                                 "a\\b", "a b", "x\n", "A" * 129])
def test_unsafe_ids(bad: str) -> None:
    with pytest.raises(UnsafeParameter, match="run_id .* is not allowed"):
        check_id(bad)


def test_data_root_must_resolve_under_an_allowed_base(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    allowed.mkdir()
    other.mkdir()
    (allowed / "link").symlink_to(other)
    monkeypatch.setenv("DATAMILL_ALLOWED_ROOTS", str(allowed))
    assert check_data_root(allowed / "a" / "b") == allowed / "a" / "b"
    assert check_data_root(allowed) == allowed
    for bad in (other, allowed / ".." / "other", allowed / "link", Path("/etc")):
        with pytest.raises(UnsafeParameter, match="outside the allowed roots"):
            check_data_root(bad)
    # default: the working directory and $DATAMILL_DATA_ROOT
    monkeypatch.delenv("DATAMILL_ALLOWED_ROOTS")
    monkeypatch.setenv("DATAMILL_DATA_ROOT", str(other))
    monkeypatch.chdir(allowed)
    check_data_root(".datamill")
    check_data_root(other / "x")
    with pytest.raises(UnsafeParameter):
        check_data_root(tmp_path / "elsewhere")


def test_data_root_is_checked_for_deployment_runs_only(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import prefect.runtime  # noqa: F401 - deployment.id reads this override

    monkeypatch.setenv("DATAMILL_ALLOWED_ROOTS", str(tmp_path / "allowed"))
    check_flow_params(run_id="r1", data_root="/")  # the CLI's --data-root: its user's choice
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", "6f1c9d2e-0000-4000-8000-000000000000")
    with pytest.raises(UnsafeParameter, match="data_root '/' resolves to /"):
        check_flow_params(run_id="r1", data_root="/")
    check_flow_params(run_id="r1", data_root=tmp_path / "allowed" / "root")
    with pytest.raises(UnsafeParameter, match="ablation_id"):
        check_flow_params(ablation_id="../../x")


def test_flows_refuse_unsafe_parameters_before_writing(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.ablation import ablation
    from flows.pipeline import execute
    from flows.refresh import refresh
    from tasks.recipe import load_recipe

    root = tmp_path / "root"
    with pytest.raises(UnsafeParameter, match="run_id '../../etc' is not allowed"):
        execute(load_recipe(SAMPLE), SAMPLE, data_root=str(root), run_id="../../etc")
    with pytest.raises(UnsafeParameter, match="run_id 'a/b'"):
        refresh.fn(SAMPLE, data_root=str(root), run_id="a/b")
    with pytest.raises(UnsafeParameter, match="ablation_id"):
        ablation.fn([SAMPLE, SAMPLE], data_root=str(root), ablation_id="../x")
    monkeypatch.setenv("DATAMILL_ALLOWED_ROOTS", str(tmp_path / "allowed"))
    monkeypatch.setenv("PREFECT__RUNTIME__DEPLOYMENT__ID", "6f1c9d2e-0000-4000-8000-000000000000")
    with pytest.raises(UnsafeParameter, match="outside the allowed roots"):
        refresh.fn(SAMPLE, data_root=str(root), run_id="r1")
    assert not root.exists()  # nothing written: not even the refresh lock


def test_run_errors_are_stored_without_credentials(tmp_path: Path) -> None:
    msg = ("ConnectionError: postgresql+asyncpg://prefect:s3cr3t@db:5432/prefect refused; "
           "POST https://api.example.com/v1/chat?api_key=sk-123&x=1 failed, "
           "see https://example.com/docs and 'https://tok@git.example.com/r.git'")
    clean = scrub_secrets(msg)
    for secret in ("s3cr3t", "sk-123", "tok@", "prefect:"):
        assert secret not in clean
    assert "postgresql+asyncpg://***@db:5432/prefect refused" in clean
    assert "https://api.example.com/v1/chat?*** failed" in clean
    assert "https://example.com/docs and" in clean  # a URL without secrets is kept
    cat = Catalog(tmp_path / "catalog.duckdb")
    cat.start_run("r1", "x", "x.yaml", {})
    cat.finish_run("r1", "failed", error=msg)
    assert cat.show("r1")["error"] == clean


def test_stage_files_are_fsynced_before_their_rename(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks import store

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace",
                        lambda a, b: (events.append(f"replace {Path(b).name}"),
                                      real_replace(a, b))[1])
    sd = store.StageDir(tmp_path, "filter", "v1")
    store.write_parquet(pa.table({"id": ["a"]}), Path(sd.part("kept", "00000")))
    store.run_marked(str(sd.shard_marker("00000")), lambda: {"docs_in": 1})
    sd.finish({"docs_in": 1})
    # each file fsynced, renamed, then its folder fsynced: the data before its marker,
    # the marker before the manifest
    assert events == ["fsync", "replace part-00000.parquet", "fsync",
                      "fsync", "replace 00000.json", "fsync",
                      "fsync", "replace manifest.json", "fsync"]
    assert sd.done() and sd.shard_done("00000")["docs_in"] == 1
