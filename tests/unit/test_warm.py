"""flows/warm.py: the gates' and the report's libraries loaded on a thread, failures kept there."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import sys
from flows import warm
from tasks import contracts
assert "great_expectations" not in sys.modules and "matplotlib.pyplot" not in sys.modules
thread = warm.start({contracts})
thread.join()
print("great_expectations" in sys.modules, contracts._GX._inst is not None,
      "matplotlib.pyplot" in sys.modules, "tasks.report" in sys.modules)
"""


@pytest.mark.parametrize("contracts", [True, False])
def test_start_loads_what_the_run_will_need(contracts: bool) -> None:
    """In a fresh interpreter: GX imported and its context made only when the gates are on;
    matplotlib and the report's modules always."""
    out = subprocess.run([sys.executable, "-c", CHILD.format(contracts=contracts)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == [str(contracts), str(contracts), "True", "True"]


def test_a_failed_import_stays_on_the_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import warm
    from tasks import contracts

    def broken() -> None:
        raise ImportError("no great_expectations here")

    raised: list[BaseException] = []
    monkeypatch.setattr(contracts, "load", broken)
    monkeypatch.setattr(threading, "excepthook", lambda a: raised.append(a.exc_value))
    thread = warm.start(True)
    thread.join(timeout=120)
    assert not thread.is_alive() and raised == []
    assert "matplotlib.pyplot" in sys.modules  # the report's part still loaded
