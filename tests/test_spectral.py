"""Spectral tools and the theory: rank measures on hand-computed cases, rank growth of sin(omega U V^T),
Proposition 1's bound against the measured rank and stable rank, bad input, and the spectra recipe."""
import math

import pytest
import torch

from sinelr import spectral as sp


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---- rank measures on cases computed by hand --------------------------------------------------

def test_identity_has_full_numerical_stable_and_effective_rank():
    eye = torch.eye(7, dtype=torch.float64)
    assert sp.numerical_rank(eye) == 7
    assert sp.stable_rank(eye) == pytest.approx(7.0)
    assert sp.effective_rank(eye) == pytest.approx(7.0)


def test_rank_one_matrix_has_every_rank_equal_to_one():
    u = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    v = torch.tensor([4.0, -1.0, 0.5, 2.0], dtype=torch.float64)
    A = torch.outer(u, v)
    assert sp.numerical_rank(A) == 1
    assert sp.stable_rank(A) == pytest.approx(1.0)
    assert sp.effective_rank(A) == pytest.approx(1.0)


def test_diagonal_matrix_ranks_match_the_formulas():
    d = torch.tensor([3.0, 2.0, 1.0, 0.0], dtype=torch.float64)
    A = torch.diag(d)
    assert sp.numerical_rank(A) == 3
    assert sp.stable_rank(A) == pytest.approx((9 + 4 + 1) / 9)
    p = torch.tensor([3.0, 2.0, 1.0]) / 6
    assert sp.effective_rank(A) == pytest.approx(float(torch.exp(-(p * p.log()).sum())))
    assert sp.singular_values(A).tolist() == [3.0, 2.0, 1.0, 0.0]


def test_numerical_rank_tolerances_and_zero_matrix():
    A = torch.diag(torch.tensor([1.0, 1e-3, 1e-9], dtype=torch.float64))
    assert sp.numerical_rank(A) == 3
    assert sp.numerical_rank(A, rtol=1e-6) == 2
    assert sp.numerical_rank(A, tol=0.5) == 1
    assert sp.numerical_rank(torch.zeros(3, 4)) == 0
    assert sp.stable_rank(torch.zeros(3, 4)) == 0.0
    assert sp.effective_rank(torch.zeros(3, 4)) == 0.0


def test_bad_input_is_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="2-D tensor"):
        sp.singular_values(torch.ones(3))
    with pytest.raises(ValueError, match="2-D tensor"):
        sp.stable_rank([[1.0, 2.0]])
    with pytest.raises(ValueError, match="no non-zero entry"):
        sp.prop1_printed_bound(torch.zeros(2, 2), 1.0)
    A = torch.tensor([[0.5, 1.0], [1.0, 2.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="omega must be"):
        sp.prop1_printed_bound(A, -1.0)
    with pytest.raises(ValueError, match="omega must be"):
        sp.sine_matrix(torch.ones(2, 1), torch.ones(2, 1), float("nan"))
    with pytest.raises(TypeError, match="omega"):
        sp.prop1_printed_bound(A, "10")
    with pytest.raises(ValueError, match="pi / \\(3 A_min0\\)"):
        sp.prop1_printed_bound(A, 10 * sp.prop1_max_omega(A))


def test_prop1_formula_on_a_hand_computed_matrix():
    A = torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    # A_min0 = 1, ||sqrt|A| ||_op = 2, so the bound is omega / 4 and the range is omega <= pi / 3.
    assert sp.prop1_max_omega(A) == pytest.approx(math.pi / 3)
    assert sp.prop1_printed_bound(A, 1.0) == pytest.approx(0.25)


# ---- the theory -----------------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 4])
def test_rank_of_sine_lowrank_grows_with_omega_and_exceeds_k(k):
    """Paper Fig. 3 setting: 128x128 Kaiming-initialised U V^T (SineLowRankLinear's init)."""
    U, V = sp.kaiming_factors(128, 128, k, generator=gen(k))
    assert sp.numerical_rank(U @ V.T) == k
    ranks = [sp.numerical_rank(sp.sine_matrix(U, V, w)) for w in (1.0, 10.0, 100.0, 1000.0)]
    assert all(b >= a for a, b in zip(ranks, ranks[1:])), ranks
    assert ranks[-1] > ranks[0]
    assert ranks[-1] > k
    assert sp.numerical_rank(sp.sine_matrix(U, V, 100.0)) > k  # sinelr's default omega already lifts the rank
    stable = [sp.stable_rank(sp.sine_matrix(U, V, w)) for w in (10.0, 100.0, 1000.0)]
    assert stable[-1] > stable[0]


def _prop1_cases():
    """Random matrices of several kinds and shapes, with omega spread over Prop. 1's validity range."""
    cases = []
    for seed in range(12):
        g = gen(seed)
        m = int(torch.randint(2, 40, (1,), generator=g))
        n = int(torch.randint(2, 40, (1,), generator=g))
        k = int(torch.randint(1, min(m, n) + 1, (1,), generator=g))
        U, V = sp.kaiming_factors(m, n, k, generator=g)
        dense_lowrank = U @ V.T
        # entries bounded away from zero (A_min0 large), where the bound is largest for dense matrices
        positive = (torch.rand(m, 1, generator=g, dtype=torch.float64) + 0.5) @ (
            torch.rand(1, n, generator=g, dtype=torch.float64) + 0.5)
        # sparse: diagonal / partial permutation with random magnitudes (bound closest to 1 here)
        diag = torch.zeros(m, n, dtype=torch.float64)
        r = min(m, n)
        diag[torch.arange(r), torch.randperm(n, generator=g)[:r]] = torch.rand(r, generator=g, dtype=torch.float64) + 0.1
        sparse = diag * (torch.rand(m, n, generator=g, dtype=torch.float64) < 0.9)
        for A in (dense_lowrank, positive, diag, sparse):
            if not (A != 0).any():
                continue
            w_max = sp.prop1_max_omega(A)
            for frac in (1e-3, 0.1, 0.5, 0.9, 1.0):
                cases.append((A, frac * w_max))
    return cases


def test_prop1_bound_never_exceeds_rank_or_stable_rank_on_random_matrices():
    """Prop. 1 states rank(sin(omega A)) >= bound; we also check the stronger stable-rank version."""
    cases = _prop1_cases()
    assert len(cases) > 150
    for A, w in cases:
        S = torch.sin(w * A)
        bound = sp.prop1_printed_bound(A, w)
        assert bound <= sp.numerical_rank(S), (tuple(A.shape), w, bound)
        assert bound <= sp.stable_rank(S) + 1e-12, (tuple(A.shape), w, bound, sp.stable_rank(S))


def test_prop1_bound_is_at_most_pi_over_3_per_non_zero_of_the_fullest_row():
    """||sqrt|A| ||_op^2 >= sum_j |A_ij| >= A_min0 * nnz(row i), hence bound <= (pi/3) / max_i nnz(row i)."""
    for A, w in _prop1_cases():
        nnz = int(max((A != 0).sum(1).max(), (A != 0).sum(0).max()))
        assert sp.prop1_printed_bound(A, w) <= math.pi / 3 / nnz * (1 + 1e-9)


def test_prop1_bound_exceeds_the_rank_of_a_single_entry_matrix_at_the_top_of_its_range():
    """The one kind of counterexample (documented in docs/theory.md): A = a e_1 e_1^T, omega in (1/a, pi/(3a)].

    sin(omega A) has rank 1 while the bound is omega * a, up to pi/3 ~ 1.047. It exceeds the rank by < 5%.
    """
    A = torch.zeros(5, 6, dtype=torch.float64)
    A[2, 3] = 0.25
    w = sp.prop1_max_omega(A)
    S = torch.sin(w * A)
    assert sp.numerical_rank(S) == 1 and sp.stable_rank(S) == pytest.approx(1.0)
    assert sp.prop1_printed_bound(A, w) == pytest.approx(math.pi / 3)
    assert sp.prop1_printed_bound(A, 0.9 / 0.25) <= 1.0  # below omega = 1/a the statement holds


# ---- the recipe -----------------------------------------------------------------------------

def test_spectra_recipe_writes_its_files(tmp_path):
    from sinelr.recipes.spectra import Config, run

    out = tmp_path / "theory"
    res = run(Config(size=24, ranks=[1, 2], fig_rank=2, omegas=[1.0, 100.0, 1000.0], heatmap_omegas=[100.0],
                     prop1_points=4, omega0_shapes=["16x16", "12x20"], omega0_ranks=[1, 2, 12],
                     omega0_seeds=[0, 1], out_dir=str(out)))
    for name in ("fig1_spectra", "fig2_activations", "fig3_omega_sweep", "prop1_bound"):
        assert (out / f"{name}.csv").stat().st_size > 0
        assert (out / f"{name}.png").stat().st_size > 0
    assert (out / "fig3_heatmaps.png").stat().st_size > 0
    text = (out / "summary.md").read_text()
    assert "command:" in text and "seed: 0" in text and "Prop. 1" in text
    assert len(res["sweep"]) == 6
    assert all(r["prop1_printed_bound"] <= r["numerical_rank"] for r in res["prop1"])


@pytest.mark.parametrize("bad, match", [
    ({"size": 1}, "size"),
    ({"ranks": []}, "ranks"),
    ({"ranks": [0]}, "rank"),
    ({"fig_rank": 500}, "rank"),
    ({"omegas": [10.0, -1.0]}, "omegas"),
    ({"heatmap_omegas": [float("inf")]}, "heatmap_omegas"),
    ({"prop1_points": 1}, "prop1_points"),
])
def test_spectra_recipe_rejects_bad_config(tmp_path, bad, match):
    from sinelr.recipes.spectra import Config, run

    with pytest.raises(ValueError, match=match):
        run(Config(out_dir=str(tmp_path / "x"), **bad))
    assert not (tmp_path / "x").exists()
