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


def test_energy_beyond_k_matches_hand_computed_shares_and_the_truncation_error():
    A = torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.0], dtype=torch.float64))
    assert [sp.energy_beyond(A, k) for k in range(5)] == pytest.approx([1.0, 5 / 14, 1 / 14, 0.0, 0.0])
    assert sp.energy_beyond(torch.eye(6), 2) == pytest.approx(4 / 6)
    assert sp.energy_beyond(torch.zeros(3, 5), 1) == 0.0
    low = torch.randn(9, 3, generator=gen(0), dtype=torch.float64) @ torch.randn(3, 7, generator=gen(1), dtype=torch.float64)
    assert sp.energy_beyond(low, 3) < 1e-24 and sp.energy_beyond(low, 2) > 1e-3
    M = torch.randn(12, 8, generator=gen(2), dtype=torch.float64)
    for k in (0, 1, 3, 8):  # Eckart-Young: the best rank-k error is exactly the energy outside the top k
        T = sp.truncate_rank(M, k)
        assert sp.numerical_rank(T) == k if k else T.abs().max() == 0
        assert float((M - T).pow(2).sum() / M.pow(2).sum()) == pytest.approx(sp.energy_beyond(M, k), abs=1e-12)
    assert torch.allclose(sp.truncate_rank(low, 3), low, atol=1e-10)
    assert sp.truncate_rank(M.float(), 2).dtype == torch.float32
    # no rank-2 matrix is closer to M than the truncation (checked against random rank-2 perturbations of it)
    best = float((M - sp.truncate_rank(M, 2)).norm())
    for seed in range(20):
        other = sp.truncate_rank(M, 2) + 1e-2 * torch.randn(12, 2, generator=gen(seed), dtype=torch.float64) \
            @ torch.randn(2, 8, generator=gen(seed + 100), dtype=torch.float64)
        assert float((M - sp.truncate_rank(other, 2)).norm()) >= best - 1e-12
    for bad in (-1, 1.5, True, "2", None):
        with pytest.raises(ValueError, match="k must be a non-negative int"):
            sp.energy_beyond(A, bad)
        with pytest.raises(ValueError, match="k must be a non-negative int"):
            sp.truncate_rank(A, bad)


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


def test_prop1_formulas_on_a_hand_computed_matrix():
    A = torch.tensor([[1.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    # A_min0 = 1, ||sqrt|A| ||_op = 2: printed bound omega / 4, corrected omega / 16, range omega <= pi / 3.
    assert sp.prop1_max_omega(A) == pytest.approx(math.pi / 3)
    assert sp.prop1_printed_bound(A, 1.0) == pytest.approx(0.25)
    assert sp.prop1_stable_rank_bound(A, 1.0) == pytest.approx(1 / 16)
    with pytest.raises(ValueError, match="pi / \\(3 A_min0\\)"):
        sp.prop1_stable_rank_bound(A, 2.0)
    assert sp.prop1_stable_rank_bound(A, 2.0, check_range=False) == pytest.approx(2 / 16)


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


def test_printed_prop1_bound_holds_on_random_matrices_but_is_not_a_theorem():
    """The printed Prop. 1 (rank >= bound) holds on these random cases; its counterexample is the single-entry test."""
    cases = _prop1_cases()
    assert len(cases) > 150
    for A, w in cases:
        S = torch.sin(w * A)
        bound = sp.prop1_printed_bound(A, w)
        assert bound <= sp.numerical_rank(S), (tuple(A.shape), w, bound)
        assert bound <= sp.stable_rank(S) + 1e-12, (tuple(A.shape), w, bound, sp.stable_rank(S))


def test_printed_prop1_bound_is_at_most_pi_over_3_per_non_zero_of_the_fullest_row():
    """||sqrt|A| ||_op^2 >= sum_j |A_ij| >= A_min0 * nnz(row i), hence bound <= (pi/3) / max_i nnz(row i)."""
    for A, w in _prop1_cases():
        nnz = int(max((A != 0).sum(1).max(), (A != 0).sum(0).max()))
        assert sp.prop1_printed_bound(A, w) <= math.pi / 3 / nnz * (1 + 1e-9)


def test_printed_prop1_bound_exceeds_the_rank_of_a_single_entry_matrix_and_the_corrected_one_does_not():
    """The counterexample to the printed statement (docs/theory.md): A = a e_1 e_1^T, omega in (1/a, pi/(3a)].

    sin(omega A) has rank 1 while the printed bound is omega * a, up to pi/3 ~ 1.047; the corrected bound is a quarter
    of it, at most pi/12.
    """
    A = torch.zeros(5, 6, dtype=torch.float64)
    A[2, 3] = 0.25
    w = sp.prop1_max_omega(A)
    S = torch.sin(w * A)
    assert sp.numerical_rank(S) == 1 and sp.stable_rank(S) == pytest.approx(1.0)
    assert sp.prop1_printed_bound(A, w) == pytest.approx(math.pi / 3)
    assert sp.prop1_printed_bound(A, 0.9 / 0.25) <= 1.0  # below omega = 1/a the statement holds
    assert sp.prop1_printed_bound(A, w) > sp.numerical_rank(S)  # the printed statement fails here
    assert sp.prop1_stable_rank_bound(A, w) == pytest.approx(math.pi / 12)
    assert sp.prop1_stable_rank_bound(A, w) < sp.stable_rank(S)


def _adversarial_cases():
    """Matrices built to push the corrected bound up: single entries of any magnitude, sparse and partial-permutation
    matrices, near-degenerate ones (entries all close to A_min0, rank one plus a tiny perturbation) and entries over
    many scales, each at omega from 1e-6 to 1 times the top of the validity range."""
    cases = []
    for seed in range(40):
        g = gen(1000 + seed)
        m, n = (int(v) for v in torch.randint(1, 13, (2,), generator=g))
        scale = 10.0 ** float(torch.empty(1).uniform_(-8, 3, generator=g))
        single = torch.zeros(m, n, dtype=torch.float64)
        single[int(torch.randint(m, (1,), generator=g)), int(torch.randint(n, (1,), generator=g))] = scale
        density = float(torch.rand(1, generator=g))
        sparse = scale * torch.randn(m, n, generator=g, dtype=torch.float64) * (
            torch.rand(m, n, generator=g, dtype=torch.float64) < density)
        flat = scale * (1 + 1e-6 * torch.rand(m, n, generator=g, dtype=torch.float64))  # all entries ~ A_min0
        u, v = torch.randn(m, 1, generator=g, dtype=torch.float64), torch.randn(n, 1, generator=g, dtype=torch.float64)
        near_rank1 = scale * (u @ v.T + 1e-9 * torch.randn(m, n, generator=g, dtype=torch.float64))
        scales = scale * torch.randn(m, n, generator=g, dtype=torch.float64) * 10.0 ** torch.empty(m, n).uniform_(
            -6, 0, generator=g).double()
        perm = torch.zeros(m, n, dtype=torch.float64)
        r = min(m, n)
        perm[torch.randperm(m, generator=g)[:r], torch.randperm(n, generator=g)[:r]] = scale
        for A in (single, sparse, flat, near_rank1, scales, perm):
            if (A != 0).any():
                w_max = sp.prop1_max_omega(A)
                cases += [(A, f * w_max) for f in (1e-6, 1e-2, 0.3, 0.7, 0.99, 1.0)]
    return cases


def test_corrected_prop1_bound_never_exceeds_the_stable_rank_in_a_search_for_violations():
    """bound(A, omega) <= stable rank(sin(omega A)) <= rank, over random, adversarial and the paper's init cases."""
    cases = _prop1_cases() + _adversarial_cases()
    assert len(cases) > 1500
    worst = 0.0
    for A, w in cases:
        S = torch.sin(w * A)
        bound = sp.prop1_stable_rank_bound(A, w)
        stable = sp.stable_rank(S)
        assert bound <= stable * (1 + 1e-12), (tuple(A.shape), w, bound, stable)
        assert bound <= sp.numerical_rank(S)
        assert bound == pytest.approx(sp.prop1_printed_bound(A, w) / 4)
        worst = max(worst, bound / stable)
    # the search reached the tight end (single entries at the top of the range: (pi/12) / 1)
    assert worst == pytest.approx(math.pi / 12, rel=1e-9)


def test_the_two_lemmas_behind_the_corrected_bound():
    """Lemma 1: sin t >= t/2 on [0, pi/3], hence ||sin(omega A)||_F^2 >= omega^2 A_min0^2 / 4;
    Lemma 2: |sin t| <= sqrt|t|, hence ||sin(omega A)||_op^2 <= omega ||sqrt|A| ||_op^2."""
    t = torch.linspace(0, math.pi / 3, 10001, dtype=torch.float64)
    assert bool((torch.sin(t) >= t / 2).all())
    # sin t / (t/2) is smallest at t = pi/3, where it is 3 sqrt(3) / pi ~ 1.65: the constant 1/2 has room
    assert float((2 * torch.sin(t[1:]) / t[1:]).min()) == pytest.approx(3 * math.sqrt(3) / math.pi)
    s = torch.linspace(-50, 50, 20001, dtype=torch.float64)
    assert bool((torch.sin(s).abs() <= s.abs().sqrt() + 1e-15).all())
    for A, w in _prop1_cases()[::7] + _adversarial_cases()[::11]:
        S = torch.sin(w * A)
        a = sp.min_nonzero_abs(A)
        fro2 = float(torch.linalg.matrix_norm(S) ** 2)
        op2 = float(torch.linalg.matrix_norm(S, ord=2) ** 2)
        assert fro2 >= (w * a) ** 2 / 4 * (1 - 1e-12)
        assert op2 <= w * float(torch.linalg.matrix_norm(A.abs().sqrt(), ord=2)) ** 2 * (1 + 1e-12)


# ---- empirical omega_0 -----------------------------------------------------------------------

def _first_on_fine_grid(U, V, k, rtol, xs):
    """Brute force: the first x / rms on a fine log grid where rank > k and where stable rank > k."""
    A = U @ V.T
    rms = float(A.pow(2).mean().sqrt())
    first = {}
    for x in xs:
        S = sp.sine_matrix(U, V, x / rms)
        for c, ok in (("rank", sp.numerical_rank(S, rtol=rtol) > k), ("stable_rank", sp.stable_rank(S) > k)):
            if ok and c not in first:
                first[c] = x / rms
    return first


@pytest.mark.parametrize("m, n, k, seed", [(20, 24, 2, 0), (16, 30, 3, 1), (24, 24, 4, 2)])
def test_omega0_search_matches_a_brute_force_scan(m, n, k, seed):
    U, V = sp.kaiming_factors(m, n, k, generator=gen(seed))
    res = sp.omega0_search(U, V, k, rtol=1e-4, precision=0.005)
    brute = _first_on_fine_grid(U, V, k, 1e-4, torch.logspace(-2, 2, 1201, dtype=torch.float64).tolist())
    for c in ("rank", "stable_rank"):  # both within 0.5% (bisection) + 0.8% (grid step) of each other
        assert res[f"omega0_{c}"] == pytest.approx(brute[c], rel=0.014), c
        assert not res[f"{c}_at_x_min"]
    S = sp.sine_matrix(U, V, res["omega0_stable_rank"])
    assert sp.stable_rank(S) > k
    assert res["a_min0"] == sp.min_nonzero_abs(U @ V.T)


def test_omega0_is_nan_when_never_reached_and_flagged_when_reached_at_the_start():
    ones = torch.ones(6, 1, dtype=torch.float64)
    res = sp.omega0_search(ones, torch.ones(5, 1, dtype=torch.float64), 1)  # sin(omega) * all-ones: rank 1 forever
    assert math.isnan(res["omega0_rank"]) and math.isnan(res["omega0_stable_rank"])
    assert res["max_rank_seen"] == 1
    U, V = sp.kaiming_factors(12, 12, 1, generator=gen(0))
    res = sp.omega0_search(U, V, 1)  # stable rank of a rank-1 matrix is exactly 1; any lift exceeds it
    assert res["stable_rank_at_x_min"] and res["omega0_stable_rank"] == pytest.approx(1e-3 / res["rms"])
    assert not res["rank_at_x_min"] and res["omega0_rank"] > res["omega0_stable_rank"]


def test_omega0_of_the_theorem_init_is_the_kaiming_one_rescaled():
    """kaiming_factors and uniform_factors(1/N) draw the same U V^T up to the factor N^2 / sqrt(k n)."""
    m, n, k = 10, 18, 3
    N = max(m, n)
    Uk, Vk = sp.kaiming_factors(m, n, k, generator=gen(5))
    Ut, Vt = sp.uniform_factors(m, n, k, 1.0 / N, generator=gen(5))
    scale = N ** 2 / math.sqrt(k * n)
    torch.testing.assert_close(Uk @ Vk.T, scale * (Ut @ Vt.T), rtol=1e-12, atol=0)
    rk, rt = sp.omega0_search(Uk, Vk, k), sp.omega0_search(Ut, Vt, k)
    for c in ("omega0_rank", "omega0_stable_rank"):
        assert rt[c] == pytest.approx(rk[c] * scale, rel=1e-9)
    assert rt["a_min0"] * N ** 2 == pytest.approx(rk["a_min0"] * math.sqrt(k * n), rel=1e-12)


def test_omega0_search_and_uniform_factors_reject_bad_input():
    U, V = sp.kaiming_factors(6, 6, 2, generator=gen(0))
    with pytest.raises(ValueError, match="k must be an integer >= 0, got -1"):
        sp.omega0_search(U, V, -1)
    with pytest.raises(ValueError, match="x_max must exceed x_min"):
        sp.omega0_search(U, V, 2, x_min=10.0, x_max=1.0)
    with pytest.raises(ValueError, match="per_decade must be an integer >= 1, got 0"):
        sp.omega0_search(U, V, 2, per_decade=0)
    with pytest.raises(ValueError, match="rtol must be a finite number > 0, got nan"):
        sp.omega0_search(U, V, 2, rtol=float("nan"))
    with pytest.raises(ValueError, match="zero matrix"):
        sp.omega0_search(torch.zeros(4, 1), torch.ones(3, 1), 1)
    with pytest.raises(ValueError, match="bound must be a finite number > 0, got -1"):
        sp.uniform_factors(3, 3, 1, -1.0)


# ---- the recipe -----------------------------------------------------------------------------

def test_spectra_recipe_writes_its_files(tmp_path):
    import csv

    from sinelr.cli import load_recipe

    Config, run = load_recipe("spectra").Config, load_recipe("spectra").run

    out = tmp_path / "theory"
    res = run(Config(size=24, ranks=[1, 2], fig_rank=2, omegas=[1.0, 100.0, 1000.0], heatmap_omegas=[100.0],
                     prop1_points=4, omega0_shapes=["16x16", "12x20"], omega0_ranks=[1, 2, 12],
                     omega0_seeds=[0, 1], output_dir=str(out)))
    for name in ("fig1_spectra", "fig2_activations", "fig3_omega_sweep", "prop1_bound", "omega0"):
        assert (out / f"{name}.csv").stat().st_size > 0
        assert (out / f"{name}.png").stat().st_size > 0
    assert (out / "fig3_heatmaps.png").stat().st_size > 0
    text = (out / "summary.md").read_text()
    assert "command:" in text and "seed: 0" in text and "Prop. 1" in text and "skipped" in text and "12x20 k=12" in text
    assert len(res["sweep"]) == 6
    assert all(r["prop1_printed_bound"] <= r["numerical_rank"] for r in res["prop1"])
    assert all(r["prop1_stable_rank_bound"] <= r["stable_rank"] for r in res["prop1"])
    single = res["prop1_single_entry"]
    assert single["prop1_printed_bound"] > single["numerical_rank"] >= 1 > single["prop1_stable_rank_bound"]
    # omega0: 16x16 with k = 1, 2, 12 and 12x20 with k = 1, 2 (k=12 skipped), 2 seeds each
    seeds = list(csv.DictReader((out / "omega0_seeds.csv").open()))
    table = list(csv.DictReader((out / "omega0.csv").open()))
    assert len(seeds) == 10 and len(table) == 5 and [r["k"] for r in table] == ["1", "2", "12", "1", "2"]
    for r in seeds:  # the theorem-init columns are the Kaiming ones rescaled by N^2 / sqrt(k n)
        m, n, k = int(r["m"]), int(r["n"]), int(r["k"])
        scale = max(m, n) ** 2 / math.sqrt(k * n)
        assert float(r["omega0_rank_theorem"]) == pytest.approx(float(r["omega0_rank_kaiming"]) * scale, rel=1e-5)
        assert float(r["theorem_omega_bound"]) == pytest.approx(math.pi * max(m, n) ** 2 / 3, rel=1e-5)
    # a rerun into the same folder gives the same table (no stale rows, deterministic seeds)
    first = (out / "omega0.csv").read_text()
    run(Config(size=24, ranks=[1, 2], fig_rank=2, omegas=[1.0, 100.0, 1000.0], heatmap_omegas=[100.0],
               prop1_points=4, omega0_shapes=["16x16"], omega0_ranks=[2], omega0_seeds=[0, 1], output_dir=str(out)))
    rerun = list(csv.DictReader((out / "omega0.csv").open()))
    assert len(rerun) == 1 and rerun[0] == next(r for r in csv.DictReader(first.splitlines()) if r["k"] == "2"
                                                  and r["m"] == "16")


def test_spectra_recipe_functions_stay_under_80_lines():
    import ast
    import inspect

    from sinelr.cli import load_recipe

    spectra = load_recipe("spectra")

    tree = ast.parse(inspect.getsource(spectra))
    long = {f.name: f.end_lineno - f.lineno + 1 for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef) and f.end_lineno - f.lineno + 1 > 80}
    assert not long, long


@pytest.mark.parametrize("bad, match", [
    ({"size": 1}, "size"),
    ({"ranks": []}, "ranks"),
    ({"ranks": [0]}, "rank"),
    ({"fig_rank": 500}, "rank"),
    ({"omegas": [10.0, -1.0]}, "omegas"),
    ({"heatmap_omegas": [float("inf")]}, "heatmap_omegas"),
    ({"prop1_points": 1}, "prop1_points"),
    ({"omega0_shapes": ["384by1536"]}, "384by1536"),
    ({"omega0_shapes": []}, "omega0_shapes"),
    ({"omega0_ranks": [0]}, "omega0_ranks"),
    ({"omega0_seeds": [-1]}, "omega0_seeds"),
    ({"omega0_rtol": 2.0}, "omega0_rtol"),
    ({"omega0_x_range": [10.0, 1.0]}, "omega0_x_range"),
    ({"omega0_per_decade": 0}, "omega0_per_decade"),
])
def test_spectra_recipe_rejects_bad_config(tmp_path, bad, match):
    from sinelr.cli import load_recipe

    Config, run = load_recipe("spectra").Config, load_recipe("spectra").run

    with pytest.raises(ValueError, match=match):
        run(Config(output_dir=str(tmp_path / "x"), **bad))
    assert not (tmp_path / "x").exists()
