"""The static mixing law (tasks/train/mixlaw.py): planted parameters recovered from synthetic
losses, the predicted optimum against a brute-force search, the points a search trains."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.train.mixlaw import (
    MixingLaw,
    NotEnoughPoints,
    SourceFit,
    dirichlet_points,
    fit_law,
    objective_weights,
    points_needed,
    predict_best,
    quality,
    simplex_grid,
    source_rows,
    weights_for,
)

SOURCES = ["a", "b", "c"]


def planted() -> MixingLaw:
    # each source's loss falls as its own share grows (t_ii most negative); sum_j t_ij = 0
    fits = [SourceFit(2.0, 0.6, np.array([-2.0, 1.2, 0.8])),
            SourceFit(1.5, 0.9, np.array([0.5, -1.5, 1.0])),
            SourceFit(3.0, 0.3, np.array([1.0, 1.5, -2.5]))]
    return MixingLaw(SOURCES, SOURCES, fits)


def test_fit_recovers_planted_parameters() -> None:
    law = planted()
    p = dirichlet_points(3, 8, seed=3)
    fitted = fit_law(p, law.predict(p), SOURCES, SOURCES)
    for want, got in zip(law.fits, fitted.fits, strict=True):
        assert got.c == pytest.approx(want.c, abs=1e-4)
        assert got.k == pytest.approx(want.k, rel=1e-4)
        np.testing.assert_allclose(got.t, want.t, atol=1e-4)
    q = quality(p, law.predict(p), fitted)
    assert min(q["r2"].values()) > 0.999999
    assert q["loo_mae_mean"] < 1e-4


def test_fit_with_noise_stays_close_and_loo_reports_it() -> None:
    law = planted()
    p = dirichlet_points(3, 16, seed=5)
    rng = np.random.default_rng(0)
    y = law.predict(p) + rng.normal(0, 0.005, (16, 3))
    fitted = fit_law(p, y, SOURCES, SOURCES)
    grid = simplex_grid(3, 200)
    assert np.abs(fitted.predict(grid) - law.predict(grid)).max() < 0.05
    q = quality(p, y, fitted)
    assert 0.001 < q["loo_mae_mean"] < 0.02  # about the noise: not zero, not large


def test_predicted_optimum_matches_brute_force() -> None:
    law = planted()
    fine = simplex_grid(3, 45_000)  # lattice step 1/299
    for weights in (None, objective_weights(SOURCES, {"a": 3.0, "c": 1.0})):
        w = np.full(3, 1 / 3) if weights is None else weights
        brute = law.predict(fine) @ w
        best, value = predict_best(law, weights)
        assert best.sum() == pytest.approx(1.0) and (best >= 0).all()
        assert value <= brute.min() + 1e-9  # at least as good as every grid point
        assert value == pytest.approx(brute.min(), abs=1e-4)
        np.testing.assert_allclose(best, fine[np.argmin(brute)], atol=0.01)


def test_optimum_on_the_boundary() -> None:
    # only source a's loss counts, and it falls monotonically with a's share: all of a
    law = MixingLaw(["a", "b"], ["a"], [SourceFit(1.0, 1.0, np.array([-1.0, 1.0]))])
    best, value = predict_best(law)
    np.testing.assert_allclose(best, [1.0, 0.0], atol=1e-9)
    assert value == pytest.approx(1.0 + np.exp(-1.0))


def test_too_few_points_is_a_clear_error() -> None:
    law = planted()
    assert points_needed(3) == 5
    p = dirichlet_points(3, 4, seed=1)
    with pytest.raises(NotEnoughPoints, match="needs at least 5 distinct mixtures; got 4"):
        fit_law(p, law.predict(p), SOURCES, SOURCES)
    # repeated mixtures (several seeds of one point) do not count twice
    p2 = np.vstack([p, p])
    with pytest.raises(NotEnoughPoints, match="got 4"):
        fit_law(p2, law.predict(p2), SOURCES, SOURCES)


def test_loo_needs_a_point_to_spare() -> None:
    law = MixingLaw(["a", "b"], ["a"], [SourceFit(1.0, 1.0, np.array([-1.0, 1.0]))])
    p = simplex_grid(2, 4)
    fitted = fit_law(p, law.predict(p), ["a", "b"], ["a"])
    assert quality(p, law.predict(p), fitted)["loo_mae"] is None  # 3 left: too few
    p5 = simplex_grid(2, 5)
    assert quality(p5, law.predict(p5), fitted)["loo_mae"] is not None


def test_grid_and_samples_are_distributions() -> None:
    g = simplex_grid(2, 4)
    np.testing.assert_allclose(g, [[1, 0], [2 / 3, 1 / 3], [1 / 3, 2 / 3], [0, 1]])
    g3 = simplex_grid(3, 7)  # lattices of 3 sources have 3, 6, 10, ... points
    assert len(g3) == 10 and np.allclose(g3.sum(axis=1), 1)
    d = dirichlet_points(3, 6, seed=2)
    assert d.shape == (6, 3) and np.allclose(d.sum(axis=1), 1) and (d > 0).all()
    np.testing.assert_array_equal(d, dirichlet_points(3, 6, seed=2))
    assert not np.array_equal(d, dirichlet_points(3, 6, seed=3))


def test_weights_give_the_proportions() -> None:
    rows = [300, 100]
    w = weights_for([0.5, 0.5], rows)
    share = np.array(w) * rows
    np.testing.assert_allclose(share / share.sum(), [0.5, 0.5])
    assert max(w) == 1.0
    meta = {"train_shards": [{"sources": {"a": [0, 5], "b": [5, 9]}},
                             {"sources": {"a": [0, 2]}}]}
    assert source_rows(meta) == {"a": 7, "b": 4}


def test_objective_weights() -> None:
    np.testing.assert_allclose(objective_weights(SOURCES, None), [1 / 3] * 3)
    np.testing.assert_allclose(objective_weights(SOURCES, {"a": 1, "b": 3}), [0.25, 0.75, 0])
    with pytest.raises(ValueError, match="fitted sources"):
        objective_weights(SOURCES, {"z": 1})
