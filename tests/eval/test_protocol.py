"""The meta-test protocol: parity with a manual fine-tune, no mutation, no leakage, clear errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfml.eval import evaluate, feature_extractor
from dfml.meta import MAML, ProtoNet
from dfml.models.norm import use_batch_stats
from dfml.types import Task


class TinyNet(nn.Module):
    """Vectors ``[B, d]`` -> Linear -> BatchNorm (with running stats) -> ReLU -> ``head``."""

    def __init__(self, d: int = 6, hidden: int = 8, n_out: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def blob_tasks(n: int, seed: int = 0, n_way: int = 3, d: int = 6) -> list[Task]:
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for _ in range(n):
        means = 2.0 * torch.randn(n_way, d, generator=g)
        sy, qy = torch.arange(n_way).repeat_interleave(2), torch.arange(n_way).repeat_interleave(5)
        sx = means[sy] + torch.randn(len(sy), d, generator=g)
        qx = means[qy] + torch.randn(len(qy), d, generator=g)
        tasks.append(Task(sx, sy, qx, qy))
    return tasks


def warmed_model() -> TinyNet:
    """A model with non-trivial BatchNorm running statistics, left in train mode."""
    torch.manual_seed(0)
    m = TinyNet()
    with torch.no_grad():
        m(3.0 + 2.0 * torch.randn(64, 6))
    return m


def manual_finetune_accuracy(model: nn.Module, task: Task, steps: int, lr: float) -> float:
    """The reference: deepcopy, batch statistics, plain SGD on the support set, score the query."""
    m = use_batch_stats(copy.deepcopy(model))
    opt = torch.optim.SGD(m.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(m(task.support_x), task.support_y).backward()
        opt.step()
    with torch.no_grad():
        return float((m(task.query_x).argmax(-1) == task.query_y).double().mean()) * 100


def test_finetune_matches_a_manual_sgd_reference_episode_by_episode() -> None:
    model, tasks = warmed_model(), blob_tasks(6)
    result = evaluate(model, tasks, steps=10, lr=0.5)
    expected = [manual_finetune_accuracy(model, t, 10, 0.5) for t in tasks]
    assert result.per_episode == expected
    assert result.n == 6 and result.mean == pytest.approx(sum(expected) / 6, rel=1e-12)
    assert result.info == {"method": "finetune", "steps": 10, "lr": 0.5}


def test_evaluate_does_not_mutate_the_model() -> None:
    model = warmed_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    evaluate(model, blob_tasks(3), steps=5, lr=0.5)
    assert model.training and model.body[1].track_running_stats
    assert model.state_dict().keys() == state.keys()
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_evaluate_is_deterministic() -> None:
    model, tasks = warmed_model(), blob_tasks(4)
    a = evaluate(model, tasks, steps=5, lr=0.5)
    b = evaluate(model, tasks, steps=5, lr=0.5)
    assert a.per_episode == b.per_episode


def test_no_batchnorm_leakage_across_episodes_or_from_the_mode() -> None:
    model = warmed_model()
    a, b = blob_tasks(2, seed=1)
    alone = evaluate(model, [b], steps=5, lr=0.5).per_episode[0]
    after_a = evaluate(model, [a, b], steps=5, lr=0.5).per_episode[1]
    in_eval_mode = evaluate(copy.deepcopy(model).eval(), [b], steps=5, lr=0.5).per_episode[0]
    shifted = copy.deepcopy(model).eval()
    with torch.no_grad():  # running statistics play no part: batch statistics only
        shifted.body[1].running_mean.fill_(100.0)
        shifted.body[1].running_var.fill_(1e-4)
    with_shifted_stats = evaluate(shifted, [b], steps=5, lr=0.5).per_episode[0]
    assert alone == after_a == in_eval_mode == with_shifted_stats


def test_a_perfect_classifier_scores_100_plus_minus_0() -> None:
    model = TinyNet(d=3, hidden=3, n_out=3)
    model.body = nn.Identity()
    with torch.no_grad():
        model.head.weight.copy_(torch.eye(3) * 10)
        model.head.bias.zero_()
    tasks = []
    for _ in range(3):
        y = torch.arange(3).repeat(2)
        tasks.append(Task(F.one_hot(y, 3).float(), y, F.one_hot(y, 3).float(), y))
    result = evaluate(model, tasks)
    assert (result.mean, result.ci95, result.n) == (100.0, 0.0, 3)
    assert str(result) == "100.00 ± 0.00 %"


def test_a_head_of_the_wrong_size_is_named_with_the_fix() -> None:
    with pytest.raises(ValueError, match=r"outputs \(5,\) values per example but the episodes are 3-way.*model.head"):
        evaluate(TinyNet(n_out=5), blob_tasks(2))


def test_protonet_method_uses_features_without_the_head() -> None:
    torch.manual_seed(0)
    model, tasks = TinyNet(n_out=5), blob_tasks(4)  # head size does not matter for protonet
    result = evaluate(model, tasks, method="protonet")
    encoder = ProtoNet(copy.deepcopy(model.body))
    expected = [
        float((encoder.predict(encoder.params(), t) == t.query_y).double().mean()) * 100 for t in tasks
    ]
    assert result.per_episode == expected
    assert result.info["method"] == "protonet" and result.info["steps"] == 0


def test_feature_extractor_prefers_a_features_method_and_needs_one_or_a_head() -> None:
    class WithFeatures(TinyNet):
        def features(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * self.body(x)

    m, x = WithFeatures(), torch.randn(4, 6)
    torch.testing.assert_close(feature_extractor(m)(x), m.features(x))
    with pytest.raises(ValueError, match="has neither a features\\(x\\) method nor a submodule named 'head'"):
        feature_extractor(nn.Linear(6, 3))


def test_learners_are_unwrapped() -> None:
    model, tasks = warmed_model(), blob_tasks(2)
    assert evaluate(MAML(copy.deepcopy(model)), tasks, steps=3, lr=0.5).per_episode == evaluate(
        model, tasks, steps=3, lr=0.5
    ).per_episode
    proto = ProtoNet(copy.deepcopy(model.body))
    assert evaluate(proto, tasks).info["method"] == "protonet"


def test_progress_first_n_and_a_single_episode() -> None:
    calls: list[tuple[int, float]] = []
    result = evaluate(warmed_model(), blob_tasks(5), steps=1, first_n=3, progress=lambda i, acc: calls.append((i, acc)))
    assert result.n == 3 and [i for i, _ in calls] == [1, 2, 3]
    assert [acc for _, acc in calls] == result.per_episode
    single = evaluate(warmed_model(), blob_tasks(1), steps=1)
    assert single.n == 1 and math.isnan(single.ci95)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "knn"}, "unknown method 'knn'; valid methods: finetune, protonet"),
        ({"first_n": 0}, "first_n must be a positive integer or None, got 0"),
        ({"steps": -2}, "steps must be an integer >= 0, got -2"),
    ],
)
def test_bad_settings_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate(warmed_model(), blob_tasks(2), **kwargs)


def test_no_episodes_raise() -> None:
    with pytest.raises(ValueError, match="no episodes to evaluate"):
        evaluate(warmed_model(), [])


def test_a_diverged_fine_tune_is_an_error_that_names_the_setting_of_its_step_size() -> None:
    with pytest.raises(FloatingPointError, match=r"fine-tuning diverged: .* lower eval\.lr \(now 1e\+10\)"):
        evaluate(warmed_model(), blob_tasks(3), steps=10, lr=1e10, settings={"lr": "eval.lr"})
    with pytest.raises(FloatingPointError, match=r"lower lr \(now 1e\+10\)"):  # a library call names the argument
        evaluate(warmed_model(), blob_tasks(3), steps=10, lr=1e10)
    with pytest.raises(ValueError, match=r"settings names \['eval\.lr'\], which evaluate does not take"):
        evaluate(warmed_model(), blob_tasks(3), settings={"eval.lr": "lr"})


class OneClass(nn.Module):
    """Answers class 0 whatever the input (a collapsed meta-model)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 3)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def test_a_model_that_answers_one_class_on_every_episode_is_a_degenerate_result_not_a_score() -> None:
    with pytest.raises(RuntimeError, match=r"degenerate result: .* one class for every query of all 4 episodes "
                                           r"\(33\.33 ± 0\.00\).* eval\.lr \(now 0\.01\) and eval\.steps \(now 0\)"):
        evaluate(OneClass(), blob_tasks(4), steps=0, settings={"lr": "eval.lr", "steps": "eval.steps"})
    with pytest.raises(RuntimeError, match="degenerate result"):  # at any score: the model ignores its input
        evaluate(OneClass(), [Task(t.support_x, t.support_y, t.query_x, torch.zeros_like(t.query_y))
                              for t in blob_tasks(3)], steps=0)
    features = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 4)).requires_grad_(False)
    for layer in (features[0], features[2]):
        nn.init.zeros_(layer.weight)
    with pytest.raises(RuntimeError, match="degenerate result"):  # constant features: one nearest prototype
        evaluate(ProtoNet(features), blob_tasks(3))
    assert evaluate(OneClass(), blob_tasks(1), steps=0).mean == pytest.approx(100 / 3)  # one episode says too little
    mostly = OneClass()
    with torch.no_grad():
        mostly.head.weight[2, 0] = 100.0  # class 2 wherever the first input is above 0.05
    tasks = [Task(t.support_x, t.support_y, t.query_x - 100.0 * (i > 0), t.query_y)
             for i, t in enumerate(blob_tasks(3))]
    result = evaluate(mostly, tasks, steps=0)  # one class in two episodes, not in the first: a score
    assert result.per_episode[1:] == pytest.approx([100 / 3, 100 / 3])
    assert result.per_episode[0] != pytest.approx(100 / 3)
