"""An export folder: content-addressed (the same export again is a no-op, reported), swapped in
whole (a killed export never leaves a folder that looks complete), recorded in the catalog;
the CLI; and the refresh's decision to export a promoted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from test_export_kit import make_run

from flows.cli import main
from tasks.export import ExportError, export_run
from tasks.export.folder import MANIFEST
from tasks.export.refresh import export_dir, export_due, export_promoted
from tasks.recipe import RecipeError, RefreshConfig, parse_recipe

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(tmp_path: Path) -> dict[str, Any]:
    return make_run(tmp_path / "root", n_docs=30)


def _exports(cat: Any) -> list[tuple[Any, ...]]:
    with cat.connect(read_only=True) as con:
        return con.execute("SELECT run_id, format, path, hash, docs FROM exports "
                           "ORDER BY exported_at").fetchall()


def _state(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_same_export_again_is_a_no_op(run: dict[str, Any], tmp_path: Path) -> None:
    dest = tmp_path / "out"
    first = export_run(run["catalog"], run["run_id"], dest, "parquet")
    before = _state(dest)
    again = export_run(run["catalog"], run["run_id"], dest, "parquet")
    assert first["status"] == "exported" and again["status"] == "up to date"
    assert again["hash"] == first["hash"] and again["docs"] == first["docs"] == 30
    assert _state(dest) == before  # nothing rewritten
    manifest = json.loads((dest / MANIFEST).read_text())
    assert manifest["run_id"] == run["run_id"] and manifest["format"] == "parquet"
    assert manifest["inputs"] == {"filter": "f00d", "tokenize": "70ce"}
    assert manifest["hash"] == first["hash"]
    assert _exports(run["catalog"]) == [(run["run_id"], "parquet", str(dest.resolve()),
                                         first["hash"], 30)]  # the no-op is not recorded
    # another option that changes the bytes is another export: the folder is replaced
    other = export_run(run["catalog"], run["run_id"], dest, "parquet", max_shard_rows=10)
    assert other["status"] == "exported" and other["hash"] != first["hash"]
    assert len(list((dest / "data").iterdir())) == 3
    assert len(_exports(run["catalog"])) == 2


def test_a_missing_file_is_exported_again(run: dict[str, Any], tmp_path: Path) -> None:
    dest = tmp_path / "out"
    export_run(run["catalog"], run["run_id"], dest, "jsonl")
    shard = next((dest / "data").iterdir())
    shard.unlink()
    assert export_run(run["catalog"], run["run_id"], dest, "jsonl")["status"] == "exported"
    assert shard.is_file()


def test_a_failed_export_leaves_the_previous_one(run: dict[str, Any], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "out"
    good = export_run(run["catalog"], run["run_id"], dest, "parquet")
    before = _state(dest)

    def broken(src: Any, out: Path, *args: Any) -> dict[str, Any]:
        (out / "data").mkdir()
        (out / "data" / "train-00000.parquet").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr("tasks.export.hf.write_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        export_run(run["catalog"], run["run_id"], dest, "parquet", max_shard_rows=7)
    assert _state(dest) == before
    assert json.loads((dest / MANIFEST).read_text())["hash"] == good["hash"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.export-lock", "out", "root"]


def test_a_killed_export_leaves_no_folder(run: dict[str, Any], tmp_path: Path) -> None:
    """SIGKILL in the middle of writing: the destination does not exist, only the temporary
    sibling does (without a manifest); the next export clears it and completes."""
    dest, flag = tmp_path / "out", tmp_path / "writing"
    code = f"""
import sys, time
sys.path[:0] = [{str(ROOT)!r}]
from pathlib import Path
import tasks.export.hf as hf
from tasks.catalog import Catalog
from tasks.export import export_run
real = hf.write_parquet
def slow(*a, **k):
    out = real(*a, **k)
    Path({str(flag)!r}).touch()
    time.sleep(120)
    return out
hf.write_parquet = slow
export_run(Catalog(Path({str(run['root'] / 'catalog.duckdb')!r})), {run['run_id']!r},
           {str(dest)!r}, "parquet")
"""
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    tmp = tmp_path / ".out.export-tmp"
    assert not dest.exists()
    assert list((tmp / "data").iterdir()) and not (tmp / MANIFEST).exists()
    assert export_run(run["catalog"], run["run_id"], dest, "parquet")["status"] == "exported"
    assert not tmp.exists() and (dest / MANIFEST).is_file()


def test_refuses_to_replace_what_is_not_an_export(run: dict[str, Any], tmp_path: Path) -> None:
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an export"):
        export_run(run["catalog"], run["run_id"], dest, "parquet")
    assert (dest / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_run(run["catalog"], run["run_id"], empty, "parquet")["status"] == "exported"


def test_unknown_or_unfinished_runs(run: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no run"):
        export_run(run["catalog"], "nope", tmp_path / "x", "parquet")
    run["catalog"].start_run("running-1", "unit", "r.yaml", {})
    with pytest.raises(ExportError, match="not completed"):
        export_run(run["catalog"], "running-1", tmp_path / "x", "parquet")
    with pytest.raises(ExportError, match="format"):
        export_run(run["catalog"], run["run_id"], tmp_path / "x", "csv")


def test_cli(run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, dest = str(run["root"]), tmp_path / "out"
    args = ["export", run["run_id"], "--to", str(dest), "--data-root", root]
    assert main([*args, "--format", "megatron"]) == 0
    said = capsys.readouterr().out
    assert said.startswith(f"exported run {run['run_id']} as megatron:")
    assert (dest / "text_document.idx").is_file()
    assert main([*args, "--format", "megatron"]) == 0
    assert capsys.readouterr().out.startswith("up to date:")
    assert main([*args, "--format", "jsonl", "--shard-size", "2KiB", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "exported" and out["files"] > 2  # shards of ~2 KiB, the card
    assert main(["export", "latest", "--to", str(tmp_path / "l"), "--data-root", root]) == 0
    assert json.loads((tmp_path / "l" / MANIFEST).read_text())["run_id"] == run["run_id"]
    assert main(["export", "missing", "--to", str(tmp_path / "m"), "--data-root", root]) == 1
    assert "no run 'missing'" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    assert main(["export", "latest", "--to", str(tmp_path / "mine"), "--data-root", root]) == 1
    assert "not an export" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([*args, "--shard-size", "lots"])
    assert e.value.code == 2


def test_refresh_exports_promoted_runs_only(run: dict[str, Any], tmp_path: Path) -> None:
    cfg = RefreshConfig(export={"to": "exports/latest"}).export
    done = {"run_id": run["run_id"], "status": "completed"}
    assert export_due(cfg, done, {"promoted": True})
    assert not export_due(cfg, done, {"promoted": False})
    assert not export_due(cfg, done, {})  # nothing to do: no promotion decided
    assert not export_due(cfg, {**done, "status": "failed"}, {"promoted": True})
    assert not export_due(None, done, {"promoted": True})
    assert export_dir(cfg, run["root"]) == run["root"] / "exports" / "latest"
    assert export_promoted(cfg, run["root"], done, {"promoted": False}) is None
    out = export_promoted(cfg, run["root"], done, {"promoted": True})
    assert out is not None and out["status"] == "exported" and out["format"] == "parquet"
    assert (run["root"] / "exports" / "latest" / "data").is_dir()
    bad = RefreshConfig(export={"to": str(tmp_path / "t"), "format": "megatron"}).export
    bare = make_run(tmp_path / "bare", n_docs=6, with_tokenize=False)
    failed = export_promoted(bad, bare["root"], {**done, "run_id": bare["run_id"]},
                             {"promoted": True})
    assert failed is not None and failed["status"] == "failed"
    assert "no tokenize stage" in failed["error"]


def test_refresh_export_in_the_recipe() -> None:
    base = {"name": "r", "input": {"paths": ["x.jsonl"]}}
    recipe = parse_recipe({**base, "refresh": {"export": {"to": "/srv/data"}}})
    assert recipe.refresh.export is not None and recipe.refresh.export.format == "parquet"
    assert parse_recipe(base).refresh.export is None
    with pytest.raises(RecipeError, match="refresh.export.format"):
        parse_recipe({**base, "refresh": {"export": {"to": "d", "format": "csv"}}})


def test_one_export_at_a_time_per_folder(run: dict[str, Any], tmp_path: Path) -> None:
    import threading

    from tasks.export.folder import export_lock

    dest = tmp_path / "out"
    results: list[dict[str, Any]] = []
    with export_lock(dest):  # another writer holds the folder
        worker = threading.Thread(target=lambda: results.append(
            export_run(run["catalog"], run["run_id"], dest, "jsonl", record=False)))
        worker.start()
        worker.join(timeout=1.5)
        assert worker.is_alive() and not dest.exists()  # waiting, nothing written
    worker.join(timeout=60)
    assert results and results[0]["status"] == "exported" and (dest / MANIFEST).is_file()
