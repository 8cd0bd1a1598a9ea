"""A reader of the catalog never fails a run: writes wait out another process's lock on the
live file, and readers use the published snapshot, which blocks nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.catalog import Catalog, CatalogBusy
from tasks.catalog_file import WAIT_ENV

ROOT = Path(__file__).resolve().parents[2]
# Another process with a DuckDB connection on a file: "rw" opens a transaction (a writer
# mid-write), "ro" just reads. It holds the file for SECONDS, or until a line on stdin, then
# prints how many runs it sees.
HOLDER = """
import sys, time, duckdb
path, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
con = duckdb.connect(path, read_only=mode == "ro")
if mode == "rw":
    con.execute("BEGIN TRANSACTION")
    con.execute("INSERT INTO runs (run_id, status) VALUES ('holder', 'running')")
print("ready", flush=True)
time.sleep(seconds) if seconds >= 0 else sys.stdin.readline()
print(con.execute("SELECT count(*) FROM runs").fetchone()[0], flush=True)
"""


def hold(path: Path, mode: str, seconds: float = -1) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), mode, str(seconds)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    c = Catalog(tmp_path / "catalog.duckdb")
    c.start_run("r0", "sample", "recipes/sample.yaml", {})
    yield c


def test_a_write_waits_for_a_lock_holder_then_succeeds(cat: Catalog,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    holder = hold(cat.path, "rw", 3.0)
    try:
        monkeypatch.setenv(WAIT_ENV, "0.3")  # bounded: a clear error once the budget is spent
        t0 = time.monotonic()
        with pytest.raises(CatalogBusy, match="Conflicting lock.*catalog.read.duckdb"):
            cat.finish_run("r0", "failed", error="boom")
        assert time.monotonic() - t0 < 2.5
        monkeypatch.setenv(WAIT_ENV, "30")
        cat.finish_run("r0", "failed", error="boom")  # waits for the holder, then writes
        waited = time.monotonic() - t0
    finally:
        out, _ = holder.communicate(timeout=30)
    assert holder.returncode == 0 and out.strip() == "2"  # it held the file the whole time
    assert waited > 1.5
    assert cat.show("r0")["status"] == "failed"
    assert Catalog(cat.path, snapshot=True).show("r0")["error"] == "boom"  # published


def test_a_reader_holding_the_snapshot_blocks_no_write(cat: Catalog,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WAIT_ENV, "0")  # any lock conflict would fail at once
    reader = hold(cat.snapshot_path, "ro")
    try:
        for i in range(1, 6):
            t0 = time.monotonic()
            cat.start_run(f"r{i}", "sample", "recipes/sample.yaml", {})
            assert time.monotonic() - t0 < 5
        assert reader.poll() is None  # still holding its snapshot
        assert len(Catalog(cat.path, snapshot=True).runs()) == 6  # the new snapshot
    finally:
        out, _ = reader.communicate("\n", timeout=30)
    assert reader.returncode == 0 and out.strip() == "1"  # its copy never changed under it


def test_datamill_runs_while_a_writer_is_mid_write(cat: Catalog) -> None:
    env = {**os.environ, WAIT_ENV: "0"}
    with cat.connect() as con:  # this process writes: the live file is locked read-write
        con.execute("BEGIN TRANSACTION")
        con.execute("INSERT INTO runs (run_id, status) VALUES ('r1', 'running')")
        out = subprocess.run([sys.executable, "-m", "flows.cli", "runs", "--data-root",
                              str(cat.path.parent)], capture_output=True, text=True, cwd=ROOT,
                             env=env, timeout=120)
        con.execute("COMMIT")
    assert out.returncode == 0, out.stderr
    assert "r0" in out.stdout and "r1" not in out.stdout  # the last published state
    assert {r["run_id"] for r in Catalog(cat.path, snapshot=True).runs()} == {"r0", "r1"}


def test_a_catalog_without_snapshot_gets_one_and_a_failed_publish_fails_no_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cat = Catalog(tmp_path / "catalog.duckdb")
    cat.start_run("r0", "sample", "recipes/sample.yaml", {})
    cat.snapshot_path.unlink()  # as written by a datamill from before snapshots
    assert [r["run_id"] for r in Catalog(cat.path, snapshot=True).runs()] == ["r0"]

    import tasks.catalog_file as cf

    def no_space(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cf.os, "replace", no_space)
    cat.start_run("r1", "sample", "recipes/sample.yaml", {})  # written; snapshot kept
    monkeypatch.undo()
    assert len(cat.runs()) == 2 and len(Catalog(cat.path, snapshot=True).runs()) == 1
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
