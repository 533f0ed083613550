"""Fisher task embeddings, spectral clustering and the group selector."""

from __future__ import annotations

import weakref

import numpy as np
import pytest
import torch
from torch import nn

from dfml.selection import (
    GroupSelector,
    UniformSelector,
    build_selector,
    cosine_dissimilarity,
    fisher_embedding,
    fisher_embeddings,
    spectral_clustering,
)
from dfml.types import Task

MIXES = ([0, 3, 4], [1, 2, 5])  # the designed groups: dissimilar models together


def designed_dissimilarity() -> torch.Tensor:
    d = torch.full((6, 6), 0.1, dtype=torch.float64)
    for group in MIXES:
        for a in group:
            for b in group:
                d[a, b] = 0.9
    return d.fill_diagonal_(0.0)


def linear_probe() -> nn.Linear:
    probe = nn.Linear(2, 2).double()
    with torch.no_grad():
        probe.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
        probe.bias.copy_(torch.tensor([0.1, -0.2]))
    return probe


X = torch.tensor([[1.0, 0.0], [0.5, -1.0], [-1.0, 2.0]], dtype=torch.float64)
Y = torch.tensor([0, 1, 1])


def hand_per_class_squared_grads(probe: nn.Linear, x: torch.Tensor, c: int) -> torch.Tensor:
    # d/dW log p_c = (e_c - p) x^T, d/db log p_c = e_c - p; flattened [W row-major, b].
    p = torch.softmax(probe.weight.detach() @ x + probe.bias.detach(), dim=0)
    r = torch.nn.functional.one_hot(torch.tensor(c), 2).double() - p
    return torch.cat([torch.outer(r, x).reshape(-1), r]) ** 2, p


def test_empirical_fisher_of_a_linear_probe_matches_the_hand_computation() -> None:
    probe = linear_probe()
    expected = sum(hand_per_class_squared_grads(probe, x, int(y))[0] for x, y in zip(X, Y)) / 3
    torch.testing.assert_close(fisher_embedding(probe, (X, Y)), expected, rtol=0, atol=1e-12)


def test_expected_fisher_weights_every_class_by_the_probe_probability() -> None:
    probe = linear_probe()
    expected = torch.zeros(6, dtype=torch.float64)
    for x in X:
        for c in range(2):
            sq, p = hand_per_class_squared_grads(probe, x, c)
            expected += p[c] * sq
    got = fisher_embedding(probe, (X, Y), kind="expected")
    torch.testing.assert_close(got, expected / 3, rtol=0, atol=1e-12)


def test_fisher_of_a_task_uses_support_and_query_and_leaves_the_probe_alone() -> None:
    probe = linear_probe().train()
    state = {k: v.clone() for k, v in probe.state_dict().items()}
    task = Task(X[:1], Y[:1], X[1:], Y[1:])
    torch.testing.assert_close(fisher_embedding(probe, task), fisher_embedding(probe, (X, Y)))
    assert probe.training and all(torch.equal(v, state[k]) for k, v in probe.state_dict().items())
    assert fisher_embeddings(probe, [task, (X, Y)]).shape == (2, 6)


def test_fisher_embeddings_take_one_model_s_data_at_a_time_from_a_generator() -> None:
    probe, alive, most = linear_probe(), [0], [0]

    def dropped() -> None:
        alive[0] -= 1

    def recovered():  # what TGR's selector does: recover a model's task only when it is embedded
        for k in range(20):
            task = Task(X[:1] * (k + 1), Y[:1], X[1:], Y[1:])
            alive[0] += 1
            most[0] = max(most[0], alive[0])
            weakref.finalize(task, dropped)
            yield task
            del task

    got = fisher_embeddings(probe, recovered())
    assert most[0] <= 2
    expected = fisher_embeddings(probe, [Task(X[:1] * (k + 1), Y[:1], X[1:], Y[1:]) for k in range(20)])
    assert torch.equal(got, expected)
    with pytest.raises(ValueError, match="datas is empty"):
        fisher_embeddings(probe, iter([]))


def test_fisher_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"label 5 is out of range for a probe with 2 outputs"):
        fisher_embedding(linear_probe(), (X, torch.tensor([0, 5, 1])))
    with pytest.raises(ValueError, match="kind must be 'empirical' or 'expected'"):
        fisher_embedding(linear_probe(), (X, Y), kind="sampled")
    with pytest.raises(ValueError, match="as many labels as inputs"):
        fisher_embedding(linear_probe(), (X, Y[:2]))


def test_cosine_dissimilarity_matches_hand_values() -> None:
    e = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    c = 1 - 2**-0.5
    expected = torch.tensor([[0.0, c, 1.0], [c, 0.0, c], [1.0, c, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(cosine_dissimilarity(e), expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"embeddings of models \[1\] are all zero"):
        cosine_dissimilarity(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


def test_cosine_dissimilarity_leaves_float64_embeddings_unchanged() -> None:
    e = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]], dtype=torch.float64)
    before = e.clone()
    cosine_dissimilarity(e)
    assert torch.equal(e, before)  # it normalises a copy in place, never the caller's tensor


def test_spectral_clustering_recovers_two_separated_blocks_deterministically() -> None:
    blocks = [0, 2, 5, 7], [1, 3, 4, 6]
    a = np.full((8, 8), 0.05)
    for b in blocks:
        a[np.ix_(b, b)] = 1.0
    labels = spectral_clustering(a, 2, seed=0)
    assert [sorted(np.flatnonzero(labels == g).tolist()) for g in (0, 1)] == [list(b) for b in blocks]
    assert np.array_equal(labels, spectral_clustering(torch.from_numpy(a), 2, seed=0))
    with pytest.raises(ValueError, match="symmetric"):
        spectral_clustering(np.triu(a), 2)
    with pytest.raises(ValueError, match=r"n_groups must be an integer in 1..8"):
        spectral_clustering(a, 9)


def test_group_selector_puts_dissimilar_models_together_as_designed() -> None:
    sel = GroupSelector(6, designed_dissimilarity(), n_groups=2, seed=0)
    assert sel.groups == [list(g) for g in MIXES]
    d = sel.dissimilarity
    between = d[MIXES[0]][:, MIXES[1]].mean()
    assert (sel.within_group_dissimilarity() > between).all()
    assert torch.equal(sel.labels, GroupSelector(6, designed_dissimilarity(), n_groups=2, seed=0).labels)


def test_group_selector_draws_within_one_group_from_the_generator() -> None:
    sel = build_selector("group", 6, dissimilarity=designed_dissimilarity(), n_groups=2)
    g = torch.Generator().manual_seed(0)
    draws = [sel.select(2, g) for _ in range(40)]
    assert all(len(set(ids)) == 2 and any(set(ids) <= set(m) for m in MIXES) for ids in draws)
    assert {frozenset(m) for m in MIXES} == {frozenset(next(m for m in MIXES if ids[0] in m)) for ids in draws}
    again = torch.Generator().manual_seed(0)
    assert [sel.select(2, again) for _ in range(40)] == draws
    torch.testing.assert_close(sel.weights(), torch.full((6,), 1 / 6, dtype=torch.float64))
    assert sel.update([0, 3], 1.0) == {}


def test_group_selector_state_round_trip_and_errors() -> None:
    sel = GroupSelector(6, designed_dissimilarity(), n_groups=2)
    other = GroupSelector(6, torch.ones(6, 6, dtype=torch.float64).fill_diagonal_(0), n_groups=3, seed=1)
    other.load_state_dict(sel.state_dict())
    assert other.groups == sel.groups and other.n_groups == 2
    with pytest.raises(ValueError, match=r"no group has n=4 models \(group sizes \[3, 3\]\); ask for at most 3"):
        sel.select(4, torch.Generator())
    with pytest.raises(ValueError, match=r"\[n_models, n_models\] = \[5, 5\], got \(6, 6\)"):
        GroupSelector(5, designed_dissimilarity(), n_groups=2)


def test_from_embeddings_clusters_the_cosine_dissimilarity() -> None:
    e = torch.rand(6, 5, generator=torch.Generator().manual_seed(0)) + 0.1
    sel = GroupSelector.from_embeddings(e, n_groups=2, seed=0)
    torch.testing.assert_close(sel.dissimilarity, cosine_dissimilarity(e))
    assert sorted(i for g in sel.groups for i in g) == list(range(6))


def test_uniform_selector_is_uniform_and_deterministic() -> None:
    sel = UniformSelector(5)
    assert sel.select(3, torch.Generator().manual_seed(4)) == sel.select(3, torch.Generator().manual_seed(4))
    counts = torch.zeros(5)
    g = torch.Generator().manual_seed(0)
    for _ in range(500):
        counts[sel.select(2, g)] += 1
    assert (counts / 1000 - 0.2).abs().max() < 0.05
    sel.load_state_dict(sel.state_dict())
    with pytest.raises(ValueError, match="n_models must be an integer >= 1"):
        UniformSelector(0)


def test_fisher_casts_inputs_to_the_probe_dtype_and_rejects_empty_data() -> None:
    probe = linear_probe()
    torch.testing.assert_close(fisher_embedding(probe, (X.float(), Y)), fisher_embedding(probe, (X, Y)))
    with pytest.raises(ValueError, match="data has no examples"):
        fisher_embedding(probe, (X[:0], Y[:0]))
