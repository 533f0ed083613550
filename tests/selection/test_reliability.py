"""Plackett-Luce sampling and the REINFORCE reliability weigher: hand values, learning, resume."""

from __future__ import annotations

import io
import math

import pytest
import torch

from dfml.selection import (
    ReliabilityConfig,
    ReliabilityWeigher,
    build_selector,
    gumbel_top_k,
    plackett_luce_log_prob,
)

LOG123 = torch.tensor([0.0, math.log(2.0), math.log(3.0)], dtype=torch.float64)  # weights 1:2:3


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(
    ("ids", "prob"),
    [
        ([1], 2 / 6),
        ([2, 0, 1], 3 / 6 * 1 / 3),
        ([0, 2], 1 / 6 * 3 / 5),
        ([1, 2], 2 / 6 * 3 / 4),
        ([2, 1, 0], 3 / 6 * 2 / 3),
    ],
)
def test_plackett_luce_log_prob_matches_hand_values_for_three_models(ids: list[int], prob: float) -> None:
    assert plackett_luce_log_prob(LOG123, ids).item() == pytest.approx(math.log(prob), abs=1e-12)


def test_plackett_luce_probabilities_of_all_orderings_sum_to_one() -> None:
    perms = [[a, b] for a in range(3) for b in range(3) if a != b]
    total = sum(plackett_luce_log_prob(LOG123, p).exp().item() for p in perms)
    assert total == pytest.approx(1.0, abs=1e-12)


def test_gumbel_top_k_frequencies_match_plackett_luce() -> None:
    g = gen(0)
    counts: dict[tuple[int, ...], int] = {}
    n = 3000
    for _ in range(n):
        key = tuple(gumbel_top_k(LOG123, 2, g))
        counts[key] = counts.get(key, 0) + 1
    for key, c in counts.items():
        p = plackett_luce_log_prob(LOG123, list(key)).exp().item()
        assert abs(c / n - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-3


def test_selection_is_deterministic_from_the_generator_and_leaves_the_global_rng_alone() -> None:
    w = ReliabilityWeigher(10)
    before = torch.get_rng_state()
    a = [w.select(4, gen(1)) for _ in range(3)]
    assert torch.equal(torch.get_rng_state(), before)
    assert a[0] == a[1] == a[2] and len(set(a[0])) == 4
    g = gen(1)
    seq1 = [w.select(4, g) for _ in range(5)]
    g2 = gen(2)
    seq2 = [w.select(4, g2) for _ in range(5)]
    assert seq1 != seq2


def test_one_reinforce_step_moves_logits_by_the_hand_derived_gradient() -> None:
    # Zero logits, draw [2, 0] of 3: grad log P = e2 - 1/3 + e0 - (1/2, 1/2, 0) = (1/6, -5/6, 2/3).
    w = ReliabilityWeigher(3, optimizer="sgd", lr=0.1, baseline_momentum=0.9)
    m = w.update([2, 0], 1.0)
    expected = 0.1 * 1.0 * torch.tensor([1 / 6, -5 / 6, 2 / 3], dtype=torch.float64)
    torch.testing.assert_close(w.logits.detach(), expected, rtol=0, atol=1e-12)
    assert m["advantage"] == 1.0 and m["baseline"] == 0.0 and m["log_prob"] == pytest.approx(math.log(1 / 6))
    assert w.baseline == pytest.approx(0.1)  # 0.9 * 0 + 0.1 * 1
    # Second step: advantage = 0.5 - 0.1 against the moved baseline.
    logits = w.logits.detach().clone().requires_grad_(True)
    grad = torch.autograd.grad(plackett_luce_log_prob(logits, [1]), logits)[0]
    w.update([1], 0.5)
    torch.testing.assert_close(w.logits.detach(), logits.detach() + 0.1 * 0.4 * grad, rtol=0, atol=1e-12)


def test_entropy_bonus_follows_the_hand_derived_entropy_gradient() -> None:
    # dH/dtheta_j = -p_j (log p_j + H); with zero advantage only the bonus moves the logits.
    w = ReliabilityWeigher(3, optimizer="sgd", lr=1.0, entropy_coef=0.5, baseline_init=0.3)
    with torch.no_grad():
        w.logits.copy_(LOG123)
    p = torch.tensor([1 / 6, 2 / 6, 3 / 6], dtype=torch.float64)
    h = -(p * p.log()).sum()
    w.update([0], 0.3)
    torch.testing.assert_close(w.logits.detach(), LOG123 + 0.5 * (-p * (p.log() + h)), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("n", "noise"), [(1, 0.0), (2, 0.5), (3, 0.5)])
def test_weigher_moves_most_weight_onto_trustworthy_models_in_a_bandit(n: int, noise: float) -> None:
    bad = {0, 3, 5, 8}
    w = ReliabilityWeigher(10, lr=0.05, log_weights=False)
    g = gen(1)
    for _ in range(200):  # > 0.93 for seeds 1-3 in every case
        ids = w.select(n, g)
        reward = sum(i not in bad for i in ids) / n + noise * float(torch.randn((), generator=g))
        w.update(ids, reward)
    good_weight = float(sum(w.weights()[i] for i in range(10) if i not in bad))
    assert good_weight > 0.8
    hist = w.history()
    assert hist.shape == (200, 10)
    torch.testing.assert_close(hist[-1], w.weights())
    assert float(hist[0, [i for i in range(10) if i not in bad]].sum()) < good_weight


def test_update_reports_named_scalars_including_per_model_weights() -> None:
    m = ReliabilityWeigher(4).update([3, 1], torch.tensor(0.5))
    assert {"reward", "baseline", "advantage", "log_prob", "entropy", "max_weight", "w/0", "w/3"} <= set(m)
    assert all(isinstance(v, float) for v in m.values())
    assert "w/0" not in ReliabilityWeigher(4, log_weights=False).update([0], 1.0)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_state_dict_round_trip_continues_identically(optimizer: str) -> None:
    def run(w: ReliabilityWeigher, g: torch.Generator, steps: int) -> list[list[int]]:
        picks = []
        for _ in range(steps):
            ids = w.select(3, g)
            w.update(ids, float(sum(i % 2 for i in ids)) + float(torch.rand((), generator=g)))
            picks.append(ids)
        return picks

    w, g = ReliabilityWeigher(8, optimizer=optimizer, entropy_coef=0.01), gen(3)
    run(w, g, 15)
    buf = io.BytesIO()
    torch.save({"selector": w.state_dict(), "gen": g.get_state()}, buf)
    rest = run(w, g, 15)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    w2, g2 = ReliabilityWeigher(8, optimizer=optimizer, entropy_coef=0.01), torch.Generator()
    w2.load_state_dict(saved["selector"])
    g2.set_state(saved["gen"])
    assert run(w2, g2, 15) == rest
    assert torch.equal(w2.logits.detach(), w.logits.detach())
    assert torch.equal(w2.history(), w.history()) and w2.n_updates == 30 and w2.baseline == w.baseline


def test_registry_builds_the_weigher_with_a_config() -> None:
    w = build_selector("reliability", 5, config=ReliabilityConfig(lr=0.2))
    assert isinstance(w, ReliabilityWeigher) and w.config.lr == 0.2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": -0.1}, "lr must be a positive number, got -0.1"),
        ({"baseline_momentum": 1.0}, "baseline_momentum must be in"),
        ({"entropy_coef": -1.0}, "entropy_coef must be >= 0"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
    ],
)
def test_bad_config_values_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ReliabilityWeigher(5, **kwargs)


def test_bad_select_and_update_arguments_raise_with_the_fix() -> None:
    w = ReliabilityWeigher(5)
    with pytest.raises(ValueError, match=r"n=6 models without replacement from a pool of 5; pass an integer n in 1..5"):
        w.select(6, gen())
    with pytest.raises(ValueError, match="n=0"):
        w.select(0, gen())
    with pytest.raises(TypeError, match="torch.Generator"):
        w.select(2, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"reward must be a scalar .* shape \(2,\); reduce it first"):
        w.update([0, 1], torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="reward must be finite"):
        w.update([0], float("nan"))
    with pytest.raises(ValueError, match=r"model ids \[7\] are out of range"):
        w.update([0, 7], 1.0)
    with pytest.raises(ValueError, match="repeats"):
        w.update([1, 1], 1.0)
    with pytest.raises(ValueError, match="n_models=5"):
        ReliabilityWeigher(6).load_state_dict(w.state_dict())
    with pytest.raises(KeyError, match="valid names: group, reliability, uniform"):
        build_selector("bandit", 5)
