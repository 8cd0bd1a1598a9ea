"""A data root in object storage: the mirror between a bucket and its local working copy,
against a real S3-protocol server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3kit import make_bucket, s3_env, s3_server

from tasks.remote import Mirror, is_url, local_copy


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    with s3_server() as env, s3_env(env):
        make_bucket("unit")
        yield env


def _stage(root: Path, name: str, data: bytes) -> None:
    d = root / "stages" / name / "v1"
    (d / "kept").mkdir(parents=True)
    (d / "kept" / "part-00000.parquet").write_bytes(data)
    (d / "manifest.json").write_text(json.dumps({"stage": name}))


def test_urls_and_local_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_url("s3://b/x") and is_url("gs://b") and not is_url("/data/x")
    assert not is_url("file:///data/x") and not is_url("rel/dir")
    monkeypatch.setenv("DATAMILL_CACHE_DIR", str(tmp_path))
    a, b = local_copy("s3://b/root"), local_copy("s3://b/root2")
    assert a != b and a == local_copy("s3://b/root") and a.is_relative_to(tmp_path)


def test_push_commits_data_before_manifests_before_catalog(
        s3: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "copy"
    _stage(local, "filter", b"x" * 1000)
    (local / "catalog.duckdb").write_bytes(b"db")
    (local / "stages" / ".v1.lock").write_text("")  # locks stay local
    m = Mirror("s3://unit/order", local)
    sent: list[str] = []
    real = m.fs.put_file
    monkeypatch.setattr(m.fs, "put_file", lambda src, dst, **kw: (
        sent.append(dst.split("order/", 1)[1]), real(src, dst, **kw))[1])
    assert m.push() == 3
    assert sent == ["stages/filter/v1/kept/part-00000.parquet",
                    "stages/filter/v1/manifest.json", "catalog.duckdb"]
    assert m.push() == 0  # nothing changed: nothing sent
    (local / "catalog.duckdb").write_bytes(b"db2")
    assert m.push() == 1 and m.fs.cat("unit/order/catalog.duckdb") == b"db2"


def test_a_fresh_copy_pulls_everything_and_finds_its_mirror(s3: dict[str, str],
                                                            tmp_path: Path) -> None:
    first = tmp_path / "first"
    _stage(first, "ingest", b"y" * 5000)
    Mirror("s3://unit/fresh", first).push()
    second = tmp_path / "second"
    m = Mirror("s3://unit/fresh", second)
    assert m.pull() == 2
    assert (second / "stages/ingest/v1/kept/part-00000.parquet").read_bytes() == b"y" * 5000
    assert Mirror.of(second).url == "s3://unit/fresh" and Mirror.of(tmp_path) is None
    assert m.pull() == 0 and m.push() == 0  # in step both ways


def test_a_push_killed_half_way_leaves_no_complete_looking_stage(
        s3: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "copy"
    _stage(local, "score", b"z" * 100)
    m = Mirror("s3://unit/killed", local)
    real = m.fs.put_file

    def dies_at_manifest(src: str, dst: str, **kw: object) -> None:
        if dst.endswith("manifest.json"):
            raise ConnectionResetError("killed")
        real(src, dst, **kw)

    monkeypatch.setattr(m.fs, "put_file", dies_at_manifest)
    with pytest.raises(ConnectionResetError):
        m.push()
    assert not m.fs.exists("unit/killed/stages/score/v1/manifest.json")  # not complete
    monkeypatch.setattr(m.fs, "put_file", real)
    assert m.push() == 1  # only what is missing: the manifest
    assert m.fs.exists("unit/killed/stages/score/v1/manifest.json")


def test_export_to_a_bucket_uploads_the_marker_last_and_replaces_old_files(
        s3: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fsspec
    from test_export_kit import make_run

    from tasks.export import export_run

    monkeypatch.setenv("DATAMILL_CACHE_DIR", str(tmp_path / "cache"))
    run = make_run(tmp_path / "root", n_docs=30)
    url = "s3://unit/exports/slice"
    first = export_run(run["catalog"], run["run_id"], url, "jsonl", max_shard_rows=10)
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    names = sorted(p.rsplit("/", 1)[1] for p in fs.find("unit/exports/slice"))
    assert first["status"] == "exported" and first["to"] == url and first["uploaded"] > 3
    assert "export.json" in names and "README.md" in names
    listed = json.loads(fs.cat("unit/exports/slice/export.json"))
    lines = [line for p in fs.find("unit/exports/slice/data")
             for line in fs.cat(p).decode().splitlines()]
    assert len(lines) == 30 == listed["docs"]
    assert {json.loads(x)["id"] for x in lines} == {d["id"] for d in run["docs"]}
    again = export_run(run["catalog"], run["run_id"], url, "jsonl", max_shard_rows=10)
    assert again["status"] == "up to date" and again["uploaded"] == 0
    # a new export with fewer, larger shards: the old shards are gone from the bucket
    export_run(run["catalog"], run["run_id"], url, "jsonl", max_shard_rows=30)
    assert len(fs.find("unit/exports/slice/data")) == 1
