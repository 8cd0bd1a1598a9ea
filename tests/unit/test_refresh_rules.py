"""The refresh's pieces without engines: the promotion rule, the derived recipe, the lock."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from flows.refresh import decide, derive, refresh_lock
from tasks.recipe import parse_recipe


def row(task: str, metric: str, verdict: str, diff: float = 0.0) -> dict:
    return {"task": task, "metric": metric, "verdict": verdict, "diff": diff,
            "ci_low": diff - 0.01, "ci_high": diff + 0.01}


def test_promotion_rule() -> None:
    bpb = ["heldout/bpb"]
    assert decide([row("heldout", "bpb", "can't tell")], bpb, "not_worse")[0]
    assert not decide([row("heldout", "bpb", "can't tell")], bpb, "better")[0]
    assert decide([row("heldout", "bpb", "better", -0.1)], bpb, "better")[0]
    ok, why = decide([row("heldout", "bpb", "worse", 0.2)], bpb, "not_worse")
    assert not ok and "worse" in why and "+0.2000" in why
    # only the deciding metrics count; a missing one never promotes
    rows = [row("heldout", "bpb", "better"), row("final_word", "acc", "worse")]
    assert decide(rows, bpb, "not_worse")[0]
    assert not decide(rows, [*bpb, "final_word/acc"], "not_worse")[0]
    assert not decide(rows, ["next_sentence/acc"], "not_worse")[0]


def test_derived_recipe() -> None:
    r = parse_recipe({"name": "n", "input": {"paths": ["x/*.jsonl"]},
                      "stages": {"train": {"replay": 0.1}}, "refresh": {"replay": 0.25}})
    first = derive(r, None)
    assert first.stages.ingest.incremental
    assert first.stages.filter.dedup_index == "refresh-n"
    assert first.train_config().init_from is None and first.train_config().replay == 0.1
    later = derive(r, {"run_id": "RUN1"})
    assert later.train_config().init_from == "RUN1" and later.train_config().replay == 0.25
    assert r.stages.ingest.incremental is False  # the user's recipe is left alone


def test_lock_is_exclusive_and_waits(tmp_path: Path) -> None:
    with refresh_lock(tmp_path, "r") as a:
        with refresh_lock(tmp_path, "r") as b:
            assert a and not b
        with refresh_lock(tmp_path, "other") as c:
            assert c  # per recipe
    held = threading.Event()

    def hold() -> None:
        with refresh_lock(tmp_path, "r"):
            held.set()
            time.sleep(1.0)

    t = threading.Thread(target=hold)
    t.start()
    held.wait(5)
    t0 = time.monotonic()
    with refresh_lock(tmp_path, "r", wait_s=10) as d:
        assert d and time.monotonic() - t0 > 0.3
    t.join()
