"""A data root in object storage (``s3://bucket/prefix``, ``gs://…``, any fsspec URL).

Stages, locks and DuckDB need a POSIX directory, so a remote root has a local working copy
(``$DATAMILL_CACHE_DIR``, default ``~/.cache/datamill``, one folder per URL) and a ``Mirror``
between the two:

- ``pull`` before a run: what the bucket has and the copy lacks comes down (a fresh machine
  resumes, or finds the cache, from the bucket alone).
- ``push`` after every stage and at the end of a run: what changed in the copy goes up.
  (``datamill export --to s3://…`` uses the same mirror: built locally, then uploaded.)

Object stores have no rename, but a single PUT is all-or-nothing: readers see the old object
or the new one. So the commit order carries the crash-safety promises: a stage's data files go
up first, then its manifest (the object that says "this stage is complete"; ``export.json`` for an
export), then the catalog.
A push killed half way leaves data files without a manifest, which no run trusts (the stage
reruns, or the next push finishes the upload). Credentials and endpoints come from the
environment (``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, …), never from a recipe.

One writer per bucket root at a time: the per-stage locks are local, so two machines writing
the same root concurrently are not coordinated (the later push of the catalog wins).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from tasks.store import atomic_write_json

LEDGER = ".remote.json"  # in the local copy: the URL, and what was pushed (size, mtime)
_SKIP = re.compile(r"(^|/)(\.[^/]*\.lock|[^/]*\.tmp[^/]*|[^/]*\.wal|catalog\.read\.duckdb)$"
                   r"|^(prefect|\.remote\.json)")
_LAST = ("catalog.duckdb",)


def is_url(root: str | Path) -> bool:
    """Whether ``root`` names object storage (``s3://…``) rather than a local folder."""
    s = str(root)
    return "://" in s and not s.startswith("file://")


def cache_base() -> Path:
    """Where local copies of remote things live: ``$DATAMILL_CACHE_DIR``, ``~/.cache/datamill``."""
    return Path(os.environ.get("DATAMILL_CACHE_DIR", "~/.cache/datamill")).expanduser()


def local_copy(url: str) -> Path:
    """The local working copy of a remote data root: one folder per URL."""
    base = cache_base()
    tail = re.sub(r"[^A-Za-z0-9_.-]+", "-", url.split("://", 1)[1]).strip("-")[-60:]
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return (base / "roots" / f"{tail}-{digest}").resolve()


def _order(rel: str) -> int:
    """Data first, then manifests (a stage's completion marker), then the catalog."""
    name = rel.rsplit("/", 1)[-1]
    if rel in _LAST:
        return 2
    marker = name == "export.json" or (name.startswith("manifest") and name.endswith(".json"))
    return 1 if marker else 0


class Mirror:
    """Keeps a remote data root and its local working copy in step."""

    def __init__(self, url: str, local: Path, ledger: Path | None = None):
        import fsspec

        self.url, self.local = url.rstrip("/"), Path(local)
        self.ledger = ledger or self.local / LEDGER
        # a fresh filesystem: fsspec's instance cache would keep an endpoint or credentials
        # the environment no longer names
        self.fs, self.base = fsspec.url_to_fs(self.url, skip_instance_cache=True)
        self.base = self.base.rstrip("/")

    @classmethod
    def of(cls, local: Path) -> Mirror | None:
        """The mirror a local working copy belongs to, or None for a plain local root."""
        ledger = Path(local) / LEDGER
        if not ledger.is_file():
            return None
        return cls(json.loads(ledger.read_text())["url"], Path(local))

    def _ledger(self) -> dict[str, Any]:
        path = self.ledger
        if path.is_file():
            return json.loads(path.read_text())
        return {"url": self.url, "pushed": {}}

    def _save(self, ledger: dict[str, Any]) -> None:
        self.ledger.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.ledger, ledger)

    def attach(self) -> None:
        """Mark the local folder as this URL's working copy (so later commands find it)."""
        self.local.mkdir(parents=True, exist_ok=True)
        if not self.ledger.is_file():
            self._save(self._ledger())

    def _remote_files(self) -> dict[str, int]:
        if not self.fs.exists(self.base):
            return {}
        out = {}
        for path, info in self.fs.find(self.base, detail=True).items():
            rel = path[len(self.base):].lstrip("/")
            if rel and info.get("type") != "directory" and not _SKIP.search(rel):
                out[rel] = int(info.get("size") or 0)
        return out

    def pull(self) -> int:
        """Download what the remote root has and the copy lacks (or has at another size);
        manifests and the catalog last. Returns the number of files fetched."""
        self.attach()
        ledger, n = self._ledger(), 0
        for rel, size in sorted(self._remote_files().items(), key=lambda kv: (_order(kv[0]),
                                                                              kv[0])):
            dst = self.local / rel
            if dst.is_file() and dst.stat().st_size == size:
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(dst.name + ".tmp-pull")
            self.fs.get_file(f"{self.base}/{rel}", str(tmp))
            os.replace(tmp, dst)
            st = dst.stat()
            ledger["pushed"][rel] = [st.st_size, st.st_mtime_ns]  # in step: no push needed
            n += 1
        self._save(ledger)
        return n

    def push(self) -> int:
        """Upload what changed in the copy since the last push; data, then manifests, then
        the catalog. Returns the number of files sent."""
        self.attach()
        ledger = self._ledger()
        pushed: dict[str, list[int]] = ledger["pushed"]
        todo = []
        for path in self.local.rglob("*"):
            rel = path.relative_to(self.local).as_posix()
            if not path.is_file() or _SKIP.search(rel):
                continue
            st = path.stat()
            if pushed.get(rel) != [st.st_size, st.st_mtime_ns]:
                todo.append((rel, [st.st_size, st.st_mtime_ns]))
        todo.sort(key=lambda t: (_order(t[0]), t[0]))
        try:
            for rel, sig in todo:
                self.fs.put_file(str(self.local / rel), f"{self.base}/{rel}")
                pushed[rel] = sig
        finally:  # what went up stays up: a failed push resumes with what is missing
            self._save(ledger)
        return len(todo)


    def prune(self) -> int:
        """Delete remote files the copy no longer has (an export replaced by a newer one):
        after ``push``, so the new files and their marker are up before the old ones go."""
        ledger = self._ledger()
        gone = [rel for rel in self._remote_files() if not (self.local / rel).is_file()]
        for rel in gone:
            self.fs.rm_file(f"{self.base}/{rel}")
            ledger["pushed"].pop(rel, None)
        self._save(ledger)
        return len(gone)
