"""The statistics behind verdicts: intervals cover planted effects and stay calm without one."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.stats import paired_bootstrap, snr, verdict


def test_planted_accuracy_effect_is_detected() -> None:
    rng = np.random.default_rng(0)
    n = 2000
    a = (rng.random((2, n)) < 0.50).astype(float)
    b = (rng.random((2, n)) < 0.58).astype(float)
    c = paired_bootstrap(a, np.ones_like(a), b, np.ones_like(b), higher_is_better=True,
                         n_boot=500)
    assert c.verdict == "better" and c.ci_low > 0 and 0.05 < c.diff < 0.11
    assert c.items == n and c.seeds == 2 and c.mde < 0.08


def test_no_effect_cannot_tell_and_interval_is_calibrated() -> None:
    # the same model twice, scored on different draws: most intervals must cover 0
    covered = 0
    for s in range(40):
        rng = np.random.default_rng(100 + s)
        a = (rng.random((1, 400)) < 0.6).astype(float)
        b = (rng.random((1, 400)) < 0.6).astype(float)
        c = paired_bootstrap(a, np.ones_like(a), b, np.ones_like(b), True, n_boot=300, seed=s)
        covered += c.ci_low <= 0 <= c.ci_high
    assert covered >= 34  # ~95 % nominal


def test_pairing_removes_item_difficulty() -> None:
    # items vary a lot in difficulty; B is uniformly a bit better: paired resampling sees it
    rng = np.random.default_rng(1)
    difficulty = rng.uniform(1, 5, size=300)
    bits_a = difficulty * 100
    bits_b = bits_a * 0.98
    den = np.full(300, 100.0)
    c = paired_bootstrap(bits_a, den, bits_b, den, higher_is_better=False, n_boot=300)
    assert c.verdict == "better" and c.diff < 0


def test_items_must_align() -> None:
    with pytest.raises(ValueError, match="items differ"):
        paired_bootstrap(np.ones(3), np.ones(3), np.ones(4), np.ones(4), True)


def test_verdict_direction() -> None:
    assert verdict(0.1, 0.2, True) == "better" and verdict(0.1, 0.2, False) == "worse"
    assert verdict(-0.2, -0.1, False) == "better" and verdict(-0.1, 0.1, True) == "can't tell"


def test_snr() -> None:
    out = snr({"a": [0.50, 0.51, 0.49], "b": [0.60, 0.61, 0.59]})
    assert out["signal"] == pytest.approx(0.1 / 0.55)
    assert out["noise"] == pytest.approx(0.01 / 0.55)
    assert out["snr"] == pytest.approx(10.0)
