"""The shared update-matrix maths: hand-worked three-row cases, and the fast code against naive loops.

Every Krum in fedpoison calls :func:`fedpoison.core.rows.krum_scores`; the last
tests check that the attack's Krum (Fang et al.'s check) and the auditors'
Krum signal are the server's, not copies of it.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from fedpoison.core.draws import gaussian_like, permutation, random_subset, uniform_like
from fedpoison.core.rows import (
    clip_factors,
    coordinate_mean_std,
    cosine_similarity_matrix,
    cosine_to,
    cross_sq_distances,
    distances_to,
    exact_distances_to,
    finite_rows,
    gram,
    krum_neighbours,
    krum_scores,
    norm_quantile,
    pairwise_sq_distances,
    row_norms,
    sq_distances_from_gram,
)
from fedpoison.core.slices import ParamSlice

SETTINGS = settings(max_examples=25, deadline=None)

#: Three rows to check on paper: |x0| = 5, |x1| = 1, |x2| = 10; x2 = -2 x0.
X = torch.tensor([[3.0, 4.0], [0.0, 1.0], [-6.0, -8.0]])
#: Their squared distances: d01 = 9 + 9 = 18, d02 = 81 + 144 = 225, d12 = 36 + 81 = 117.
D = torch.tensor([[0.0, 18.0, 225.0], [18.0, 0.0, 117.0], [225.0, 117.0, 0.0]])


def matrix(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def naive_sq(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.tensor([[float((a[i].double() - b[j].double()).square().sum()) for j in range(len(b))]
                         for i in range(len(a))], dtype=torch.float64)


def naive_krum(x: torch.Tensor, f: int, valid: list[bool] | None = None) -> list[float]:
    """Blanchard et al.'s score with loops: the sum over the k nearest other valid rows, k = n - f - 2 clamped."""
    n = x.shape[0]
    ok = valid if valid is not None else [True] * n
    m = sum(ok)
    k = 0 if m <= 1 else min(max(m - f - 2, 1), m - 1)
    out = []
    for i in range(n):
        if not ok[i]:
            out.append(math.inf)
            continue
        dists = sorted(float((x[i] - x[j]).double().square().sum()) for j in range(n) if j != i and ok[j])
        out.append(sum(dists[:k]))
    return out


# ---- hand-worked cases -------------------------------------------------------------
def test_finite_rows_by_hand() -> None:
    inf = float("inf")
    x = torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [3e38, 3e38], [0.0, -inf], [inf, -inf]])
    # the 3e38 row's sum overflows, its entries do not; inf - inf sums to NaN
    assert finite_rows(x).tolist() == [True, False, True, False, False]
    assert finite_rows(torch.zeros(0, 3)).tolist() == []


def test_row_norms_by_hand() -> None:
    assert row_norms(X).tolist() == [5.0, 1.0, 10.0]
    assert_close(row_norms(torch.tensor([[3e30, 4e30], [0.0, 0.0]])), torch.tensor([5e30, 0.0]))


def test_gram_and_distances_by_hand() -> None:
    g = gram(X)
    assert g.tolist() == [[25.0, 4.0, -50.0], [4.0, 1.0, -8.0], [-50.0, -8.0, 100.0]]
    assert torch.equal(sq_distances_from_gram(g), D)
    assert torch.equal(pairwise_sq_distances(X), D)
    assert torch.equal(cross_sq_distances(X[:1], X), D[:1])
    assert torch.isinf(pairwise_sq_distances(torch.tensor([[3e30, 0.0], [-3e30, 0.0]]))[0, 1])


def test_cosines_by_hand() -> None:
    cos = cosine_similarity_matrix(X)
    assert_close(cos, torch.tensor([[1.0, 0.8, -1.0], [0.8, 1.0, -0.8], [-1.0, -0.8, 1.0]]))
    assert_close(cosine_to(X, torch.tensor([0.0, 1.0])), torch.tensor([0.8, 1.0, -0.8]))
    assert cosine_to(torch.zeros(1, 2), torch.tensor([1.0, 0.0])).tolist() == [0.0]


def test_distances_to_a_point_by_hand() -> None:
    z = torch.tensor([0.0, 1.0])
    want = torch.tensor([math.sqrt(18.0), 0.0, math.sqrt(117.0)])
    assert_close(distances_to(X, z), want)
    assert_close(exact_distances_to(X, z, chunk=1), want)  # one column per block


def test_clip_factors_and_norm_quantile_by_hand() -> None:
    assert_close(clip_factors(row_norms(X), 5.0), torch.tensor([1.0, 1.0, 0.5]))
    norms = row_norms(X)  # 5, 1, 10
    assert float(norm_quantile(norms, 0.5)) == 5.0
    assert float(norm_quantile(norms, 0.75)) == 7.5  # halfway between 5 and 10
    assert float(norm_quantile(torch.tensor([1.0, 4.0, 2.0, 10.0]), 0.5)) == 3.0


def test_krum_by_hand() -> None:
    # n = 3, f = 0: n - f - 2 = 1 neighbour each: 18, 18, min(225, 117).
    assert krum_scores(D, 0).tolist() == [18.0, 18.0, 117.0]
    # Row 1 left out: rows 0 and 2 are each other's only neighbour; row 1 scores inf.
    assert krum_scores(D, 0, valid=torch.tensor([True, False, True])).tolist() == [225.0, math.inf, 225.0]
    # A single valid row has no neighbour: score 0.
    assert krum_scores(D, 0, valid=torch.tensor([False, True, False])).tolist() == [math.inf, 0.0, math.inf]
    # n = 7, f = 2: the paper's n - f - 2 = 3; clamped to [1, n - 1] where it would not be positive.
    assert [krum_neighbours(7, 2), krum_neighbours(3, 1), krum_neighbours(3, 5), krum_neighbours(1, 0)] == [3, 1, 1, 0]
    with pytest.raises(ValueError, match="f=-1"):
        krum_neighbours(3, -1)


def test_coordinate_mean_std_by_hand() -> None:
    mean, std = coordinate_mean_std(X)
    assert_close(mean, torch.tensor([-1.0, -1.0]))
    # column 0: deviations 4, 1, -5 -> (16 + 1 + 25) / 2 = 21; column 1: 5, 2, -7 -> 78 / 2 = 39
    assert_close(std, torch.tensor([math.sqrt(21.0), math.sqrt(39.0)]))
    one_mean, one_std = coordinate_mean_std(X[:1])
    assert one_mean.tolist() == [3.0, 4.0] and one_std.tolist() == [0.0, 0.0]
    assert coordinate_mean_std(torch.zeros(0, 2))[1].tolist() == [0.0, 0.0]


def test_draws_follow_the_generator_only() -> None:
    like = torch.zeros(1, dtype=torch.float64)
    a = gaussian_like((3, 2), generator=torch.Generator().manual_seed(5), like=like, std=2.0)
    b = gaussian_like((3, 2), generator=torch.Generator().manual_seed(5), like=like)
    assert a.dtype == torch.float64 and torch.equal(a, 2.0 * b)
    u = uniform_like((4,), generator=torch.Generator().manual_seed(1), like=torch.zeros(1))
    assert ((u >= 0) & (u < 1)).all()
    p = permutation(6, torch.Generator().manual_seed(3), torch.device("cpu"))
    assert sorted(p.tolist()) == list(range(6))
    assert random_subset(6, 2, generator=torch.Generator().manual_seed(3), device=torch.device("cpu")).tolist() \
        == p[:2].tolist()


def test_param_slice() -> None:
    s = ParamSlice("fc.weight", 2, 8, (2, 3))
    assert s.end - s.start == math.prod(s.shape)
    with pytest.raises(AttributeError):
        s.start = 0  # type: ignore[misc]  # frozen


def test_nothing_is_written_into_the_input() -> None:
    x = torch.tensor([[3e30, 4e30], [1.0, 0.0], [0.0, 0.0]])
    before = x.clone()
    row_norms(x), pairwise_sq_distances(x), cosine_similarity_matrix(x), cosine_to(x, x[1])
    distances_to(x, x[1]), krum_scores(pairwise_sq_distances(x), 0), coordinate_mean_std(x)
    assert torch.equal(x, before)


# ---- fast code against naive loops -------------------------------------------------------
@SETTINGS
@given(st.integers(1, 30), st.integers(1, 200), st.integers(0, 10**6))
def test_distances_and_cosines_match_loops(n: int, d: int, seed: int) -> None:
    x = matrix(n, d, seed) * 3 + 1
    ref = naive_sq(x, x)
    assert_close(pairwise_sq_distances(x), ref.float(), rtol=1e-4, atol=1e-3)
    assert_close(row_norms(x), ref.new_tensor([float(r.double().norm()) for r in x]).float())
    cos = torch.tensor(
        [[float(torch.nn.functional.cosine_similarity(x[i], x[j], dim=0)) for j in range(n)] for i in range(n)]
    )
    assert_close(cosine_similarity_matrix(x), cos, rtol=1e-4, atol=1e-5)
    z = x[0] * 0.5
    assert_close(distances_to(x, z), (x - z).norm(dim=1), rtol=1e-5, atol=1e-5)
    near = x[0] + 1e-3  # closer than the norms resolve through the dot product: exact path
    assert_close(distances_to(x, near)[0], (x[0] - near).norm(), rtol=1e-3, atol=1e-6)
    assert_close(cosine_to(x, z), cos[:, 0], rtol=1e-4, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 7), st.integers(1, 7), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_cross_distances_match_a_loop(ka: int, kb: int, d: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(ka, d, generator=g, dtype=torch.float64) * 3, torch.randn(kb, d, generator=g, dtype=torch.float64)
    assert_close(cross_sq_distances(a, b), naive_sq(a, b), rtol=1e-9, atol=1e-9)


@SETTINGS
@given(st.integers(2, 20), st.integers(1, 50), st.integers(0, 10**6), st.data())
def test_krum_scores_match_a_loop(n: int, d: int, seed: int, data) -> None:
    f = data.draw(st.integers(0, n + 2))  # beyond n - 3 too: the clamp acts
    valid = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    x = matrix(n, d, seed)
    sq = pairwise_sq_distances(x)
    assert_close(krum_scores(sq, f), torch.tensor(naive_krum(x, f)).float(), rtol=1e-4, atol=1e-3)
    assert_close(krum_scores(sq, f, valid=torch.tensor(valid)), torch.tensor(naive_krum(x, f, valid)).float(),
                 rtol=1e-4, atol=1e-3)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 7), st.integers(1, 7), st.integers(0, 2**31 - 1))
def test_coordinate_stats_match_torch_and_are_never_nan(k: int, d: int, seed: int) -> None:
    rows = matrix(k, d, seed)
    mean, std = coordinate_mean_std(rows)
    if k == 0:
        assert mean.tolist() == [0.0] * d
    else:
        assert_close(mean, rows.mean(dim=0))
    assert_close(std, rows.std(dim=0) if k >= 2 else torch.zeros(d))


# ---- one Krum: the attacker's and the auditor's are the server's ---------------------------
@SETTINGS
@given(st.integers(5, 14), st.integers(1, 3), st.integers(2, 30), st.integers(0, 10**6))
def test_attack_and_audit_krum_are_the_servers(n: int, c: int, d: int, seed: int) -> None:
    """Fang's check, the ``krum`` rule and the auditors' signal score the same rows the same way."""
    from fedpoison.attacks.fang import krum_picks_crafted
    from fedpoison.audit.signals import krum_signal
    from fedpoison.defenses import RULES, RoundContext

    x = matrix(n, d, seed)
    f = min(c, (n - 3) // 2)
    server = RULES.get("krum").obj(None, f=f)(x, torch.ones(n), RoundContext(0, torch.arange(n),
                                                                           torch.Generator(), torch.zeros(d)))
    assert server.scores is not None
    assert torch.equal(krum_signal(x, f), server.scores)
    # Fang et al.'s check over benign rows then crafted rows: a crafted row is picked iff the server picks one.
    benign, crafted = x[: n - c], x[n - c :]
    assert krum_picks_crafted(benign, crafted, f) == bool(server.selected[n - c :].any()) or bool(
        server.scores[n - c :].min() == server.scores[: n - c].min()  # a tie: the attacker assumes it wins it
    )


def test_no_module_keeps_a_krum_or_distance_copy_of_its_own() -> None:
    """Attacks, auditors and rules import the one definition (a copy would be a different object)."""
    import fedpoison.core.rows as rows
    from fedpoison.attacks import fang, min_max
    from fedpoison.audit import signals
    from fedpoison.defenses import bulyan, krum, nnm

    for module in (fang, signals, krum, bulyan):
        assert module.krum_scores is rows.krum_scores, module.__name__
    for module in (fang, signals, krum, bulyan, nnm):
        assert module.pairwise_sq_distances is rows.pairwise_sq_distances, module.__name__
    assert min_max.cross_sq_distances is rows.cross_sq_distances


def test_core_is_the_bottom_of_the_import_graph_and_models_do_not_import_defenses() -> None:
    """core/ imports nothing else of fedpoison; models/ reaches ParamSlice without loading defenses/."""
    import ast
    from pathlib import Path

    import fedpoison

    root = Path(fedpoison.__file__).parent

    def imports(folder: str) -> set[str]:
        found: set[str] = set()
        for path in (root / folder).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    found.add(node.module)
                elif isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
        return {m for m in found if m.startswith("fedpoison")}

    assert {m for m in imports("core") if not m.startswith("fedpoison.core")} == set()
    assert not any(m.startswith("fedpoison.defenses") for m in imports("models"))
