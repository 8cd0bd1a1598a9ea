"""Inputs in object storage (``s3://bucket/dumps/*.jsonl.zst``, any fsspec URL): each matched
object is downloaded once into a local cache and ingested from there like any local file.

The cache is ``$DATAMILL_CACHE_DIR/inputs`` (default ``~/.cache/datamill``), laid out as the
bucket is; an object is fetched again only when its size or ETag changes, so a second run (or
a refresh over a bucket that gained files) downloads only what is new. A local copy carries the
object's modification time and is named by its URL in manifests (``url_of``), so a stage's
version is the same on every machine and a fresh machine finds the bucket's cached stages.
Downloads stream to a temporary file renamed into place: a killed download is never mistaken
for an input.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any

from tasks.store import atomic_write_json


def cache_dir() -> Path:
    from tasks.remote import cache_base

    return (cache_base() / "inputs").resolve()


def _tag(info: dict[str, Any]) -> str:
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or ""
    return f"{info.get('size')}:{str(etag).strip(chr(34))}"


def _modified(fs: Any, obj: str, info: dict[str, Any]) -> int | None:
    when = info.get("LastModified") or info.get("mtime")
    try:
        when = when or fs.modified(obj)
    except (NotImplementedError, OSError):
        return None
    if hasattr(when, "timestamp"):
        return int(when.timestamp() * 1_000_000_000)
    return int(float(when) * 1_000_000_000) if when else None


def url_of(path: Path) -> str | None:
    """The URL a fetched input came from (its identity in manifests and versions: the cache
    folder differs between machines), or None for a local input."""
    try:
        rel = Path(path).resolve().relative_to(cache_dir())
    except ValueError:
        return None
    protocol, *rest = rel.parts
    return f"{protocol}://{'/'.join(rest)}" if rest else None


def fetch_inputs(pattern: str) -> list[Path]:
    """The local copies of the objects ``pattern`` matches (sorted), fetched as needed."""
    import fsspec

    fs, path = fsspec.url_to_fs(pattern, skip_instance_cache=True)  # the current endpoint
    protocol = pattern.split("://", 1)[0]
    paths = sorted(fs.glob(path)) if glob.has_magic(path) else [path]
    base = cache_dir() / protocol
    ledger_path = base / ".tags.json"
    ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() else {}
    out = []
    for obj in paths:
        info = fs.info(obj)
        if info.get("type") == "directory":
            continue
        dst = base / obj.lstrip("/")
        tag = _tag(info)
        if not (dst.is_file() and ledger.get(obj) == tag):
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.fetching")
            fs.get_file(obj, str(tmp))
            modified = _modified(fs, obj, info)
            if modified is not None:  # the object's time, not the download's: the same
                os.utime(tmp, ns=(modified, modified))  # version on every machine
            os.replace(tmp, dst)
            ledger[obj] = tag
            atomic_write_json(ledger_path, ledger)
        out.append(dst)
    return out
