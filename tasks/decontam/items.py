"""Evaluation items to decontaminate against, from three places:

- **datamill's own** (``own_items``): the held-out documents the ``heldout`` bits-per-byte task
  scores, and the multiple-choice items ``tasks/evalsets.py`` builds from them, exactly as the
  ``evaluate`` stage builds them (same documents, ``max_items`` and seed). A multiple-choice
  item's text is its context followed by its correct choice: what a leak would contain.
- **lm-evaluation-harness tasks** (``harness_items``) that load offline: task YAML files in
  ``include`` folders over local data (docs/evaluation.md). An item's text is the task's
  ``doc_to_text`` followed by its target (for multiple choice, the correct choice's text).
- **files** (``file_items``): JSONL (plain or gzip; one item per line, its text the string
  values of ``fields`` joined by a space) or text (one item per non-empty line). Each file is
  a task named ``file/<file name without extensions>``. A line that is not a JSON object, or a
  record with none of the fields, is skipped and counted.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tasks.select.reference import expand

HELDOUT = "heldout"


@dataclass(frozen=True)
class Item:
    task: str
    source: str  # the held-out document's source; the file's name; the harness task
    id: str
    text: str


def own_items(heldout: Iterable[dict[str, Any]], tasks: list[str], max_items: int,
              seed: int) -> list[Item]:
    """The ``heldout`` documents as items, and each multiple-choice task's items built from
    them by ``tasks.evalsets.build`` (``heldout``: {id, text, source, lang}, in id order)."""
    from tasks import evalsets

    docs = list(heldout)
    out = [Item(HELDOUT, d["source"], d["id"], d["text"]) for d in docs]
    for task in tasks:
        for it in evalsets.build(task, docs, max_items, seed):
            out.append(Item(task, it["source"], it["id"],
                            it["context"] + it["choices"][it["gold"]]))
    return out


def _open(path: str) -> IO[str]:
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    if gz:
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def task_of_file(path: str) -> str:
    name = Path(path).name
    return "file/" + name.split(".", 1)[0]


def file_items(paths: list[str], fields: list[str]) -> tuple[list[Item], int]:
    """Items of the files (globs allowed) and how many lines were skipped."""
    items: list[Item] = []
    skipped = 0
    for path in expand(paths):
        task = task_of_file(path)
        jsonl = any(s in (".jsonl", ".json", ".ndjson") for s in Path(path).suffixes)
        with _open(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                if not jsonl:
                    items.append(Item(task, Path(path).name, f"{task}:{lineno}", line.strip()))
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    skipped += 1
                    continue
                parts = [rec[f] for f in fields if isinstance(rec, dict)
                         and isinstance(rec.get(f), str)]
                if not parts:
                    skipped += 1
                    continue
                rid = rec.get("id")
                items.append(Item(task, Path(path).name,
                                  str(rid) if rid is not None else f"{task}:{lineno}",
                                  " ".join(parts)))
    return items, skipped


def harness_items(tasks: list[str], include: list[str], limit: int | None = None
                  ) -> list[Item]:
    """Items of lm-evaluation-harness tasks (test split, else validation, else train) that
    load without the network: task YAML in ``include`` folders over local files."""
    try:
        from lm_eval.tasks import TaskManager, get_task_dict
    except ImportError as e:
        raise RuntimeError("harness tasks need lm-evaluation-harness: "
                           "pip install 'datamill[lmeval]'") from e
    manager = TaskManager(include_path=include or None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ValueError(f"unknown harness task(s) {unknown}; add their YAML folder to "
                         "harness_include")
    out: list[Item] = []
    for name, task in get_task_dict(tasks, manager).items():
        docs = (task.test_docs() if task.has_test_docs() else task.validation_docs()
                if task.has_validation_docs() else task.training_docs())
        for i, doc in enumerate(docs or []):
            if limit is not None and i >= limit:
                break
            text = str(task.doc_to_text(doc))
            target = task.doc_to_target(doc)
            if task.OUTPUT_TYPE == "multiple_choice":
                choices = task.doc_to_choice(doc)
                target = choices[target] if isinstance(target, int) else target
            target = target[0] if isinstance(target, list) and target else target
            delim = getattr(task.config, "target_delimiter", " ")
            out.append(Item(f"harness/{name}", name, f"harness/{name}:{i}",
                            f"{text}{delim}{target}"))
    return out
