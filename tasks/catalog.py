"""The run catalog: one DuckDB file, ``<data_root>/catalog.duckdb``.

DuckDB locks the file: one read-write process, or any number of read-only ones, never both.
So only the flow process writes (workers return statistics), each call opens and closes the
file, and a write that finds it held waits and retries (``DATAMILL_CATALOG_WAIT_S``, default
300 s) instead of failing the run. After each write the writer publishes a copy,
``catalog.read.duckdb``, by ``os.replace`` (a new inode: a reader holding the old copy keeps
it and blocks nothing). Readers outside the flow (the CLI, a user's DuckDB session) open that
snapshot read-only (``Catalog(path, snapshot=True)``, ``Catalog.read()``); the flow's own
reads use the live file, so they see its writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from tasks.catalog_file import (
    CatalogBusy,
    insert_rows,
    open_duckdb,
    process_lock,
    publish_snapshot,
    snapshot_of,
    wait_budget,
)

__all__ = ["Catalog", "CatalogBusy", "scrub_secrets", "wait_budget"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id VARCHAR PRIMARY KEY, recipe VARCHAR, recipe_path VARCHAR, started_at TIMESTAMPTZ,
  finished_at TIMESTAMPTZ, status VARCHAR, report VARCHAR, error VARCHAR, config JSON);
CREATE TABLE IF NOT EXISTS stages (
  run_id VARCHAR, stage VARCHAR, version VARCHAR, docs_in BIGINT, docs_kept BIGINT,
  docs_rejected BIGINT, seconds DOUBLE, output_path VARCHAR, cached BOOLEAN);
CREATE TABLE IF NOT EXISTS rejections (
  run_id VARCHAR, stage VARCHAR, rule VARCHAR, docs BIGINT, docs_alone BIGINT);
CREATE TABLE IF NOT EXISTS metrics (
  run_id VARCHAR, step BIGINT, name VARCHAR, value DOUBLE);
CREATE TABLE IF NOT EXISTS evals (
  run_id VARCHAR, checkpoint VARCHAR, task VARCHAR, metric VARCHAR, value DOUBLE);
ALTER TABLE metrics ADD COLUMN IF NOT EXISTS seed BIGINT;
ALTER TABLE evals ADD COLUMN IF NOT EXISTS seed BIGINT;
CREATE TABLE IF NOT EXISTS inputs (
  run_id VARCHAR, recipe VARCHAR, ingest_version VARCHAR, path VARCHAR, size BIGINT,
  mtime_ns BIGINT, sha256 VARCHAR, consumed_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS decisions (
  decided_at TIMESTAMPTZ, run_a VARCHAR, run_b VARCHAR, task VARCHAR, metric VARCHAR,
  a DOUBLE, b DOUBLE, diff DOUBLE, ci_low DOUBLE, ci_high DOUBLE, mde DOUBLE, items BIGINT,
  seeds BIGINT, verdict VARCHAR);
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS signal DOUBLE;
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS noise DOUBLE;
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS snr DOUBLE;
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS note VARCHAR;
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS ablation VARCHAR;
CREATE TABLE IF NOT EXISTS dedup_index (
  name VARCHAR, seq BIGINT, stage_version VARCHAR, upstream VARCHAR, files JSON, docs BIGINT,
  run_id VARCHAR, added_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS contracts (
  run_id VARCHAR, stage VARCHAR, version VARCHAR, suite VARCHAR, expectation VARCHAR,
  column_name VARCHAR, success BOOLEAN, offending BIGINT, observed VARCHAR, rows BIGINT,
  checked_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS promotions (
  decided_at TIMESTAMPTZ, recipe VARCHAR, run_id VARCHAR, baseline_run VARCHAR,
  promoted BOOLEAN, rule VARCHAR, reason VARCHAR, checkpoints JSON, stats JSON);
CREATE TABLE IF NOT EXISTS exports (
  exported_at TIMESTAMPTZ, run_id VARCHAR, format VARCHAR, path VARCHAR, hash VARCHAR,
  docs BIGINT, tokens BIGINT, options JSON, inputs JSON);
"""

STAGE_COLUMNS = ["stage", "version", "docs_in", "docs_kept", "docs_rejected", "seconds",
                 "output_path"]


def now() -> datetime:
    return datetime.now(UTC)


def scrub_secrets(text: str) -> str:
    """``text`` without the credentials, query strings and fragments of the URLs in it (a
    run's error may quote a database or LLM endpoint URL: it is stored and shown in reports).
    The one URL scrubber is the LLM client's (tasks/llm/redact.py)."""
    from tasks.llm.redact import scrub_urls

    return scrub_urls(text)


class Catalog:
    def __init__(self, path: Path, snapshot: bool = False):
        """``snapshot``: reads go to the published snapshot (readers outside the flow)."""
        self.path = Path(path)
        self.snapshot = snapshot

    @property
    def snapshot_path(self) -> Path:
        return snapshot_of(self.path)

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[Any]:
        """A write (read_only=False: the schema, then the caller's statements, then the
        snapshot is published), or a read (of the snapshot if ``self.snapshot``, else of the
        live file). Opens wait for another process's lock (``open_duckdb``)."""
        if read_only and self.snapshot:
            with self.read() as con:
                yield con
            return
        if read_only and not self.path.exists():
            raise FileNotFoundError(f"no catalog at {self.path} (has anything run here?)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with process_lock(self.path):
            con = open_duckdb(self.path, read_only)
            src: IO[bytes] | None = None
            try:
                if not read_only:
                    con.execute(SCHEMA)
                yield con
                if not read_only:
                    src = publish_snapshot(con, self.path)
            finally:
                con.close()
                if src is not None:  # only now: see publish_snapshot
                    src.close()

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A short-lived read-only connection to the snapshot: it never waits for a writer and
        never blocks one. A catalog without a snapshot yet (written by an older datamill) has
        one published first."""
        if not self.snapshot_path.exists():
            if not self.path.exists():
                raise FileNotFoundError(f"no catalog at {self.path} (has anything run here?)")
            self.publish()
        con = open_duckdb(self.snapshot_path, read_only=True)  # waits only for a user's rw
        try:
            yield con
        finally:
            con.close()

    def publish(self) -> None:
        """Publish the snapshot now (an empty write: the schema, then the copy)."""
        with self.connect():
            pass

    @contextmanager
    def _write(self, con: Any = None) -> Iterator[Any]:
        """A write on ``con`` (inside a caller's transaction) or on a connection of its own."""
        if con is not None:
            yield con
            return
        with self.connect() as own:
            yield own

    # --- writes (flow process only) ---
    def start_run(self, run_id: str, recipe: str, recipe_path: str, config: dict) -> None:
        with self.connect() as con:
            con.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, NULL, 'running', NULL, NULL, ?)",
                [run_id, recipe, recipe_path, now(), json.dumps(config, default=str)],
            )

    def finish_run(self, run_id: str, status: str, report: str | None = None,
                   error: str | None = None) -> None:
        with self.connect() as con:
            con.execute(
                "UPDATE runs SET finished_at = ?, status = ?, report = coalesce(?, report), "
                "error = ? WHERE run_id = ?",
                [now(), status, report, scrub_secrets(error) if error else error, run_id],
            )

    def complete_run(self, run_id: str, report: str | None,
                     deferred: list[tuple[str, tuple[Any, ...]]]) -> None:
        """One transaction: what a run may only commit once it completed — the inputs it
        consumed, its dedup-index parts, a refresh's promotion (``deferred``: method name and
        arguments) — and its status. A run that fails before this leaves none of them."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                for name, args in deferred:
                    getattr(self, name)(*args, con=con)
                con.execute("UPDATE runs SET finished_at = ?, status = 'completed', "
                            "report = coalesce(?, report), error = NULL WHERE run_id = ?",
                            [now(), report, run_id])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    def record_stage(self, run_id: str, manifest: dict[str, Any], seconds: float,
                     output_path: str, cached: bool) -> None:
        with self.connect() as con:
            con.execute(
                "INSERT INTO stages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, manifest["stage"], manifest["version"], manifest["docs_in"],
                 manifest["docs_kept"], manifest["docs_rejected"], seconds, output_path, cached],
            )
            rows = [[run_id, manifest["stage"], rule, c["first"], c["alone"]]
                    for rule, c in sorted(manifest.get("rejections", {}).items())]
            if rows:
                insert_rows(con, "INSERT INTO rejections", rows)

    def record_metrics(self, run_id: str, rows: list[tuple[int, str, float]],
                       seed: int = 0) -> None:
        if rows:
            with self.connect() as con:
                insert_rows(con, "INSERT INTO metrics (run_id, step, name, value, seed)",
                            [[run_id, s, n, v, seed] for s, n, v in rows])

    def record_evals(self, run_id: str, checkpoint: str,
                     rows: list[tuple[str, str, float]], seed: int = 0) -> None:
        if rows:
            with self.connect() as con:
                insert_rows(
                    con, "INSERT INTO evals (run_id, checkpoint, task, metric, value, seed)",
                    [[run_id, checkpoint, t, m, v, seed] for t, m, v in rows])

    def record_decisions(self, run_a: str, run_b: str, rows: list[dict[str, Any]],
                         ablation: str | None = None) -> None:
        """Verdicts of B vs A with their statistics (tasks/compare.py rows); ``ablation``
        groups the pairs of one ablation flow run."""
        if rows:
            with self.connect() as con:
                insert_rows(
                    con, "INSERT INTO decisions (decided_at, run_a, run_b, task, metric, a, b, "
                    "diff, ci_low, ci_high, mde, items, seeds, verdict, signal, noise, snr, note, "
                    "ablation)",
                    [[now(), run_a, run_b, r["task"], r["metric"], r["a"], r["b"], r["diff"],
                      r["ci_low"], r["ci_high"], r["mde"], r["items"], r["seeds"],
                      r["verdict"], r.get("signal"), r.get("noise"), r.get("snr"),
                      r.get("note") or None, ablation] for r in rows])

    def decisions(self, ablation: str | None = None) -> list[dict[str, Any]]:
        with self.connect(read_only=True) as con:
            where, args = ("WHERE ablation = ?", [ablation]) if ablation else ("", [])
            return _dicts(con.execute(f"SELECT * FROM decisions {where} ORDER BY rowid", args))

    def record_inputs(self, run_id: str, recipe: str, ingest_version: str,
                      files: list[dict[str, Any]], con: Any = None) -> None:
        """The input files an incremental ingest consumed (its deltas' memory)."""
        if files:
            with self._write(con) as con:
                insert_rows(con, "INSERT INTO inputs",
                            [[run_id, recipe, ingest_version, f["path"], f["size"],
                              f["mtime_ns"], f["sha256"], now()] for f in files])

    def record_contracts(self, run_id: str, stage: str, version: str, suite: str, rows: int,
                         checks: list[dict[str, Any]]) -> None:
        """A data contract's checks on one stage output (tasks/contracts.py)."""
        if checks:
            with self.connect() as con:
                insert_rows(
                    con, "INSERT INTO contracts",
                    [[run_id, stage, version, suite, c["expectation"], c["column"],
                      c["success"], c["offending"], c["observed"], rows, now()]
                     for c in checks])

    def contract_held(self, stage: str, version: str, suite: str) -> bool:
        """Whether every check of ``suite`` held each time it ran on this stage output."""
        if not self.path.exists():
            return False
        with self.connect(read_only=True) as con:
            row = con.execute(
                "SELECT count(*), bool_and(success) FROM contracts WHERE stage = ? "
                "AND version = ? AND suite = ?", [stage, version, suite]).fetchone()
        return bool(row and row[0] and row[1])

    def dedup_parts(self, name: str) -> list[tuple[int, str, str, str, int]]:
        """The persistent dedup index ``name``'s parts, in the order they were added:
        (seq, stage_version, upstream, files JSON, docs)."""
        if not self.path.exists():
            return []
        with self.connect(read_only=True) as con:
            return con.execute("SELECT seq, stage_version, upstream, files, docs FROM "
                               "dedup_index WHERE name = ? ORDER BY seq", [name]).fetchall()

    def add_dedup_part(self, name: str, stage_version: str, upstream: str, files: str,
                       docs: int, run_id: str, con: Any = None) -> bool:
        """Register a filter output's kept keys as the index's next part; False if it is in
        the index already."""
        with self._write(con) as con:
            if con.execute("SELECT 1 FROM dedup_index WHERE name = ? AND stage_version = ?",
                           [name, stage_version]).fetchone():
                return False
            seq = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM dedup_index WHERE "
                              "name = ?", [name]).fetchone()[0]
            con.execute("INSERT INTO dedup_index VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [name, seq, stage_version, upstream, files, docs, run_id, now()])
        return True

    def record_promotion(self, recipe: str, run_id: str, baseline_run: str | None,
                         promoted: bool, rule: str, reason: str,
                         checkpoints: list[str], stats: list[dict[str, Any]],
                         con: Any = None) -> None:
        """A refresh's promotion decision and the statistics behind it."""
        with self._write(con) as con:
            con.execute("INSERT INTO promotions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [now(), recipe, run_id, baseline_run, promoted, rule, reason,
                         json.dumps(checkpoints), json.dumps(stats, default=str)])

    def record_export(self, run_id: str, fmt: str, path: str, digest: str, docs: int,
                      tokens: int | None, options: dict[str, Any],
                      inputs: dict[str, str]) -> None:
        """A finished ``datamill export`` (tasks/export/): where, in which format, its hash."""
        with self.connect() as con:
            con.execute("INSERT INTO exports VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [now(), run_id, fmt, path, digest, docs, tokens, json.dumps(options),
                         json.dumps(inputs)])

    def promoted(self, recipe: str) -> dict[str, Any] | None:
        """The recipe's promoted run (its latest promotion), or None."""
        if not self.path.exists():
            return None
        with self.connect(read_only=True) as con:
            have = con.execute("SELECT count(*) FROM information_schema.tables "
                               "WHERE table_name = 'promotions'").fetchone()
            if not have or not have[0]:
                return None
            rows = _dicts(con.execute(
                "SELECT decided_at, recipe, run_id, baseline_run, rule, reason, checkpoints, "
                "stats FROM promotions WHERE recipe = ? AND promoted "
                "ORDER BY decided_at DESC LIMIT 1", [recipe]))
        if not rows:
            return None
        row = rows[0]
        row["checkpoints"] = json.loads(row["checkpoints"])
        row["stats"] = json.loads(row["stats"])
        return row

    def promotions(self, recipe: str) -> list[dict[str, Any]]:
        with self.connect(read_only=True) as con:
            return _dicts(con.execute(
                "SELECT decided_at, run_id, baseline_run, promoted, rule, reason FROM "
                "promotions WHERE recipe = ? ORDER BY decided_at", [recipe]))

    def contracts(self, run_id: str) -> list[dict[str, Any]]:
        with self.connect(read_only=True) as con:
            return _dicts(con.execute(
                "SELECT stage, version, suite, expectation, column_name, success, offending, "
                "observed, rows FROM contracts WHERE run_id = ? ORDER BY rowid", [run_id]))

    def consumed_hashes(self, recipe: str) -> set[str]:
        if not self.path.exists():
            return set()
        with self.connect(read_only=True) as con:
            # only runs that finished: a crashed run's files are taken again
            rows = con.execute(
                "SELECT DISTINCT i.sha256 FROM inputs i JOIN runs r USING (run_id) "
                "WHERE i.recipe = ? AND r.status = 'completed'", [recipe]).fetchall()
        return {r[0] for r in rows}

    # --- reads ---
    def runs(self) -> list[dict[str, Any]]:
        with self.connect(read_only=True) as con:
            cur = con.execute(
                "SELECT run_id, recipe, started_at, finished_at, status, report FROM runs "
                "ORDER BY started_at DESC"
            )
            return _dicts(cur)

    def stage_versions(self, run_id: str, stages: list[str]) -> list[tuple[str, str]]:
        """(stage, version) of the run's stages named in ``stages``, in the order recorded."""
        marks = ", ".join("?" * len(stages))
        with self.connect(read_only=True) as con:
            return con.execute(
                f"SELECT stage, version FROM stages WHERE run_id = ? AND stage IN ({marks}) "
                "ORDER BY rowid", [run_id, *stages]).fetchall()

    def resolve(self, run: str) -> str:
        if run != "latest":
            return run
        runs = self.runs()
        if not runs:
            raise LookupError("no runs in the catalog")
        return runs[0]["run_id"]

    def run_config(self, run: str) -> dict[str, Any]:
        """The recipe a run ran with (every default filled in), as recorded at its start."""
        run_id = self.resolve(run)
        with self.connect(read_only=True) as con:
            row = con.execute("SELECT config FROM runs WHERE run_id = ?", [run_id]).fetchone()
        if row is None:
            raise LookupError(f"no run {run_id!r} in the catalog")
        return json.loads(row[0]) if isinstance(row[0], str) else row[0]

    def show(self, run: str) -> dict[str, Any]:
        run_id = self.resolve(run)
        with self.connect(read_only=True) as con:
            head = _dicts(con.execute(
                "SELECT run_id, recipe, status, report, started_at, finished_at, error "
                "FROM runs WHERE run_id = ?", [run_id]))
            if not head:
                raise LookupError(f"no run {run_id!r} in the catalog")
            stages = _dicts(con.execute(
                f"SELECT {', '.join(STAGE_COLUMNS)}, cached FROM stages WHERE run_id = ? "
                "ORDER BY rowid", [run_id]))
            rejections = _dicts(con.execute(
                "SELECT stage, rule, docs, docs_alone FROM rejections WHERE run_id = ? "
                "ORDER BY rowid", [run_id]))
            metrics = _dicts(con.execute(
                "SELECT seed, step, name, value FROM metrics WHERE run_id = ? "
                "ORDER BY seed, step, name",
                [run_id]))
            evals = _dicts(con.execute(
                "SELECT seed, checkpoint, task, metric, value FROM evals WHERE run_id = ? "
                "ORDER BY rowid", [run_id]))
        return {**head[0], "stages": stages, "rejections": rejections, "metrics": metrics,
                "evals": evals}


def _dicts(cur: Any) -> list[dict[str, Any]]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
