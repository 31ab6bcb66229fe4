"""Mechanisms of freqfed, rflbat and deepsight on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch
from torch import Tensor

from fedpoison.core.rows import gram
from fedpoison.core.slices import ParamSlice
from fedpoison.defenses.deepsight import (
    DeepSight,
    DeepSightParams,
    accepted_by_clusters,
    ddifs,
    neups,
    output_layer,
    same_cluster_distances,
    suspicious_labels,
    threshold_exceedings,
)
from fedpoison.defenses.freqfed import FreqFed, low_frequency_features
from fedpoison.defenses.rflbat import RFLBAT, pca_scores, rflbat_select
from fedpoison.errors import AggregationError
from fedpoison.testing import make_round_context


# ---- freqfed --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [9, 10, 40, 101])
def test_freqfed_features_are_the_low_frequency_dctn_coefficients(d: int) -> None:
    x = torch.randn(3, d, generator=torch.Generator().manual_seed(d), dtype=torch.float64)
    p = int(np.ceil(np.sqrt(d)))
    feats = low_frequency_features(x, chunk=2)
    for i in range(3):
        square = np.zeros(p * p)
        square[:d] = x[i].numpy()
        coeffs = scipy.fft.dctn(square.reshape(p, p), norm="ortho")
        expected = [coeffs[a, b] for a in range(p) for b in range(p) if a + b <= p // 2]
        np.testing.assert_allclose(feats[i].numpy(), expected, atol=1e-12)


def test_freqfed_keeps_the_majority_whose_low_frequencies_agree() -> None:
    g = torch.Generator().manual_seed(0)
    d = 64  # an 8 x 8 matrix: the honest rows share a smooth (low-frequency) component
    smooth = torch.linspace(1.0, 2.0, d)
    honest = smooth + 0.05 * torch.randn(7, d, generator=g)
    poisoned = -smooth + 0.05 * torch.randn(3, d, generator=g)
    x = torch.cat([honest, poisoned])
    w = torch.arange(1.0, 11.0)
    res = FreqFed()(x, w, make_round_context(10, d))
    sel = res.selected
    assert not sel[7:].any() and int(sel[:7].sum()) >= 6  # HDBSCAN may leave an honest row as noise
    expected = (w[sel, None] * x[sel]).sum(0) / w[sel].sum()
    torch.testing.assert_close(res.aggregate, expected)


# ---- rflbat ---------------------------------------------------------------------------------------------
def test_rflbat_pca_scores_match_the_projection_on_principal_axes() -> None:
    x = torch.randn(9, 30, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ours = pca_scores(gram(x))
    centred = x - x.mean(0)
    _, _, vt = torch.linalg.svd(centred, full_matrices=False)
    ref = centred @ vt[:2].T
    torch.testing.assert_close(ours.abs(), ref.abs())  # each component up to its sign


def test_rflbat_drops_the_far_outlier_and_the_aligned_cluster() -> None:
    g = torch.Generator().manual_seed(0)
    d = 50
    base = torch.randn(d, generator=g)
    honest = base + 1.0 * torch.randn(8, d, generator=g)  # non-IID: they disagree
    backdoor = torch.randn(d, generator=g)
    attackers = 3.0 * backdoor + 0.05 * torch.randn(3, d, generator=g)  # aligned with each other
    outlier = 400.0 * torch.randn(1, d, generator=g)
    x = torch.cat([honest, attackers, outlier]).to(torch.float64)
    selected, score, _ = rflbat_select(gram(x), eps1=10.0, eps2=4.0, generator=torch.Generator().manual_seed(1))
    assert not selected[11]  # the first filter: its summed distance is far beyond 10 x the median
    assert score[11] > 10.0
    assert not selected[8:11].any()  # the attackers' cluster has the higher cosine agreement
    assert selected[:8].sum() >= 6
    res = RFLBAT()(x.to(torch.float32), torch.ones(12), make_round_context(12, d))
    assert not res.selected[8:].any()


# ---- deepsight -------------------------------------------------------------------------------------------
def test_deepsight_neups_and_threshold_exceedings_on_a_hand_built_output_layer() -> None:
    # 4 output neurons, 2 inputs: energies |db_k| + sum_j |dW_kj| = (3, 1, 0, 2)
    weight = torch.tensor([[[1.0, -1.0], [0.5, 0.0], [0.0, 0.0], [0.0, 1.0]]])
    bias = torch.tensor([[1.0, -0.5, 0.0, 1.0]])
    c = neups(weight, bias)
    torch.testing.assert_close(c, torch.tensor([[9.0, 1.0, 0.0, 4.0]], dtype=torch.float64) / 14.0)
    # threshold max(0.01, 1/4) * 9/14: exceeded by 9/14 and 4/14 only
    assert threshold_exceedings(c).tolist() == [2]
    assert threshold_exceedings(torch.full((1, 4), 0.25, dtype=torch.float64)).tolist() == [4]  # evenly spread
    te = torch.tensor([8, 9, 7, 2, 8])
    assert suspicious_labels(te).tolist() == [False, False, False, True, False]  # 2 <= median 8 / 2


def test_deepsight_clusters_are_accepted_by_their_share_of_suspicious_models() -> None:
    labels = np.array([0, 0, 0, 1, 1, -1, -1])
    suspicious = torch.tensor([False, False, True, True, True, False, True])
    # cluster 0: 1/3 suspicious, not below tau = 1/3 -> rejected; cluster 1: all -> rejected;
    # noise points are their own clusters: accepted when not suspicious.
    assert accepted_by_clusters(labels, suspicious, 1 / 3).tolist() == [False] * 5 + [True, False]
    assert accepted_by_clusters(labels, suspicious, 0.5).tolist() == [True] * 3 + [False] * 2 + [True, False]
    d = same_cluster_distances(np.array([0, 0, -1, -1]))
    assert d.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]]


class LinearProbe:
    """A softmax-regression model on 2 inputs and ``c`` classes: params = (W (c x 2), b (c))."""

    input_shape = (2,)

    def __init__(self, classes: int = 3) -> None:
        self.num_classes = classes

    def logits(self, params: Tensor, inputs: Tensor) -> Tensor:
        c = self.num_classes
        return inputs @ params[: 2 * c].view(c, 2).T + params[2 * c:]


def test_deepsight_ddifs_are_the_mean_softmax_ratio_on_seeded_noise() -> None:
    probe = LinearProbe()
    glob = torch.tensor([0.1, 0.2, -0.3, 0.0, 0.5, 0.5, 0.0, 0.1, -0.1])
    updates = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.0] * 9])
    out = ddifs(probe, glob, updates, seeds=2, samples=50)
    for s in range(2):
        x = torch.rand(50, 2, generator=torch.Generator().manual_seed(s))
        pg = torch.softmax(probe.logits(glob, x).double(), 1)
        pl = torch.softmax(probe.logits(glob + updates[0], x).double(), 1)
        torch.testing.assert_close(out[s, 0], (pl / pg).mean(0))
        torch.testing.assert_close(out[s, 1], torch.ones(3, dtype=torch.float64))  # unchanged model: ratio 1


def test_deepsight_rejects_backdoor_like_updates_and_clips_to_the_median_norm() -> None:
    g = torch.Generator().manual_seed(0)
    c = 10
    slices = (ParamSlice("w", 0, 2 * c, (c, 2)), ParamSlice("b", 2 * c, 3 * c, (c,)))
    honest = 0.5 * torch.randn(14, 3 * c, generator=g)  # energy spread over the 10 output neurons
    poisoned = 0.01 * torch.randn(6, 3 * c, generator=g)
    poisoned[:, 0:2] += 3.0  # all the energy on neuron 0 (the target class): one threshold exceeding
    poisoned[:, 2 * c] += 3.0
    x = torch.cat([honest, poisoned])
    ctx = make_round_context(20, 3 * c, slices=slices)
    ctx.model = LinearProbe(c)
    res = DeepSight(DeepSightParams(ds_samples=200))(x, torch.ones(20), ctx)
    assert res.info["ddifs"] == 1.0
    assert res.scores is not None and (res.scores[14:] == -1).all()  # TE = 1
    assert not res.selected[14:].any()
    assert int(res.selected[:14].sum()) >= 11
    norms = x.norm(dim=1)
    bound = torch.quantile(norms.double(), 0.5).float()
    kept = res.selected
    factors = torch.clamp(bound / norms, max=1.0)
    expected = (factors[kept, None] * x[kept]).sum(0) / kept.sum()
    torch.testing.assert_close(res.aggregate, expected)


def test_deepsight_needs_an_output_layer() -> None:
    with pytest.raises(AggregationError, match="output layer"):
        output_layer((ParamSlice("w", 0, 5, (5,)), ParamSlice("b", 5, 8, (3,))))


def test_deepsight_runs_the_models_outputs_in_a_real_run() -> None:
    """The round loop hands DeepSight a model probe: its DDifs are computed on digits (no fallback)."""
    import fedpoison

    result = fedpoison.run(overrides=["rounds=2", "clients.num=6", "local.epochs=1", "defense.name=deepsight",
                                      "defense.ds_samples=64", "defense.ds_seeds=1"])
    assert result.history["defense_ddifs"].tolist() == [1.0, 1.0]
    assert (result.history["defense_clip_bound"] > 0).all()
    assert result.summary["final_accuracy"] > 0.3
