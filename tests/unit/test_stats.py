"""The statistics behind verdicts: intervals cover planted effects and stay calm without one."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.stats import bootstrap_diffs, paired_bootstrap, snr, verdict


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


def _seed_noise_null(rng: np.random.Generator, seeds: int, n_items: int = 300
                     ) -> tuple[np.ndarray, ...]:
    """One recipe twice: per-item bits with item difficulty, plus a per-seed offset (one
    initialisation trains a little better overall) that dominates the paired difference."""
    difficulty = rng.uniform(1, 5, size=n_items)
    den = np.full((seeds, n_items), 100.0)

    def side() -> np.ndarray:
        offset = rng.normal(0, 0.02, size=(seeds, 1))  # seed noise
        return difficulty * 100 * (1 + offset) + rng.normal(0, 3, size=(seeds, n_items))

    return side(), den, side(), den


def test_few_seeds_null_stays_calibrated_where_the_plain_bootstrap_does_not() -> None:
    """With 3 seeds a side, resampling seeds underestimates seed noise: the plain percentile
    bootstrap calls a difference in ~20 % of nulls, the t interval with the seeds' spread in
    ~5 %."""
    from tasks.stats import bootstrap_diffs

    reps, ours, plain = 60, 0, 0
    for s in range(reps):
        rng = np.random.default_rng(1000 + s)
        arrays = _seed_noise_null(rng, seeds=3)
        c = paired_bootstrap(*arrays, higher_is_better=False, n_boot=200, seed=s)
        ours += c.verdict != "can't tell"
        d = bootstrap_diffs(*arrays, 200, np.random.default_rng(s))
        lo, hi = np.quantile(d, [0.025, 0.975])
        plain += verdict(lo, hi, False) != "can't tell"
        assert c.seeds == 3 and c.df < 10  # seed noise dominates: few degrees of freedom
    print(f"false 'better/worse' in {reps} nulls: t interval {ours}, plain bootstrap {plain}")
    assert ours <= 0.12 * reps
    assert plain >= 0.15 * reps


def test_seed_noise_widens_the_interval_and_mde() -> None:
    rng = np.random.default_rng(5)
    num_a, den, num_b, _ = _seed_noise_null(rng, seeds=4)
    c = paired_bootstrap(num_a, den, num_b, den, higher_is_better=False, n_boot=300)
    one = paired_bootstrap(num_a[:1], den[:1], num_b[:1], den[:1], False, n_boot=300)
    assert c.se > c.se_items > 0 and c.mde > one.mde
    assert c.ci_low <= c.diff <= c.ci_high


def test_aggregate_of_tasks() -> None:
    from tasks.stats import aggregate

    rng = np.random.default_rng(2)
    tasks = []
    for p_a, p_b in ((0.5, 0.6), (0.4, 0.5)):
        a = (rng.random((2, 1500)) < p_a).astype(float)
        b = (rng.random((2, 1500)) < p_b).astype(float)
        tasks.append((a, np.ones_like(a), b, np.ones_like(b)))
    c = aggregate(tasks, True, n_boot=300, scale=1 / 0.75)
    assert c.verdict == "better" and c.items == 3000
    assert c.diff == pytest.approx(c.b - c.a) and 0.08 < c.diff < 0.2  # ~0.1 / 0.75


def test_snr_ignores_nan_and_needs_two_values() -> None:
    assert np.isnan(snr({"a": [0.5], "b": [0.6]})["snr"])  # no noise measured
    out = snr({"a": [0.5, float("nan"), 0.52], "b": [0.6, 0.62]})
    assert out["snr"] > 1


def test_item_bootstrap_gathers_seed_totals_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path (seeds held fixed: per-item totals over seeds, resampled in blocks) gives
    the very replicates a loop over resamples gives, block boundaries included."""
    monkeypatch.setattr("tasks.stats.BLOCK_ELEMENTS", 1_000)  # blocks of 20 replicates
    rng = np.random.default_rng(3)
    num_a, num_b = rng.random((3, 50)) * 9, rng.random((2, 50)) * 9
    den_a, den_b = num_a + rng.random((3, 50)), num_b + rng.random((2, 50))
    fast = bootstrap_diffs(num_a, den_a, num_b, den_b, 250, np.random.default_rng(7),
                           resample_seeds=False)
    ref_rng = np.random.default_rng(7)
    ref = []
    for _ in range(250):
        items = ref_rng.integers(0, 50, 50)
        ref.append(num_b[:, items].sum() / den_b[:, items].sum()
                   - num_a[:, items].sum() / den_a[:, items].sum())
    np.testing.assert_allclose(fast, ref, rtol=1e-9)  # summation order only
