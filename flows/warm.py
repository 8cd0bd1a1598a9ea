"""The flow process's heavy libraries, loaded on a thread while a run's first stages work.

great-expectations (the contract gates) takes 4-5 CPU s to import and make its context, and
matplotlib with the report's modules (the report) about 1 s: a run in a new process (``datamill
run``, a deployment's run) paid both on its critical path, at its first gate and at its
report. The stages run on the Dask workers meanwhile, while this process waits, so the
imports go on a thread started with the run. Python's import locks make a second import of a
module wait for the first, so the gate or the report that needs a library before the thread
is done waits for it, and nothing is imported twice. A failure here is ignored: the gate or the
report imports again and raises the error where it belongs.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


def start(contracts: bool) -> threading.Thread:
    """Load the report's libraries, and great-expectations when ``contracts`` (the gates are
    on), on a daemon thread; ``join`` it before the process can end."""
    thread = threading.Thread(target=_load, args=(contracts,), name="datamill-warm", daemon=True)
    thread.start()
    return thread


def _load(contracts: bool) -> None:
    from tasks import contracts as gates
    from tasks import plots

    for load in ([gates.load] if contracts else []) + [plots.load]:
        try:
            load()
        except Exception as e:  # noqa: BLE001 - retried, and raised, where it is used
            log.debug("warm-up import failed: %s", e)
