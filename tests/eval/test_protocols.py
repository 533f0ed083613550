"""The named meta-test protocols: the papers' evaluator reproduced exactly, the baselines' starting
points, and runs of the earlier protocol kept apart from standard ones."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from dfml.cli import main
from dfml.config import to_dict
from dfml.eval import PROTOCOLS, evaluate, get_protocol
from dfml.experiment import ExperimentConfig, EvalConfig, saved_defaults
from dfml.datafree import TrainConfig
from dfml.models import Conv4
from dfml.recipes import RECIPES, RecipeContext
from dfml.runs import RunDir
from dfml.types import Task


def conv4_tasks(n: int, n_shot: int, seed: int = 0, n_way: int = 5, n_query: int = 4) -> list[Task]:
    """Small 16x16 episodes whose classes differ by a per-class colour offset (learnable in a few steps)."""
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for _ in range(n):
        offsets = torch.randn(n_way, 3, 1, 1, generator=g, dtype=torch.float64)

        def draw(k: int) -> torch.Tensor:
            x = torch.randn(n_way, k, 3, 16, 16, generator=g, dtype=torch.float64)
            return (x + offsets[:, None]).reshape(n_way * k, 3, 16, 16)

        y = lambda k: torch.arange(n_way).repeat_interleave(k)  # noqa: E731
        tasks.append(Task(draw(n_shot), y(n_shot), draw(n_query), y(n_query)))
    return tasks


def papers_evaluator(model: Conv4, task: Task, steps: int, lr: float, query_stats: str = "query") -> float:
    """A naive re-statement of the DFML papers' meta-test loop (their ``Maml.run`` in test mode).

    Every parameter becomes a fast weight; each step differentiates the support loss with the graph
    kept (``create_graph=True``, as their code does) and subtracts ``lr`` times the gradient; every
    BatchNorm normalises with the statistics of the batch it is given (``F.batch_norm`` with
    ``training=True``). ``query_stats="support"`` instead normalises the queries with the support
    set's statistics (a deliberately wrong variant, to show the test can tell them apart).
    """
    fast = [p.detach().clone().requires_grad_() for p in model.parameters()]

    def forward(w: list[torch.Tensor], x: torch.Tensor, stats_from: torch.Tensor | None = None) -> torch.Tensor:
        h, ref = x, stats_from
        for b in range(4):
            cw, cb, bw, bb = w[4 * b: 4 * b + 4]
            h = F.conv2d(h, cw, cb, padding=1)
            if ref is None:
                h = F.batch_norm(h, None, None, bw, bb, training=True)
            else:
                r = F.conv2d(ref, cw, cb, padding=1)
                mean, var = r.mean((0, 2, 3)), r.var((0, 2, 3), unbiased=False)
                h = F.batch_norm(h, mean, var, bw, bb, training=False)
                ref = F.max_pool2d(F.relu(F.batch_norm(r, None, None, bw, bb, training=True)), 2)
            h = F.max_pool2d(F.relu(h), 2)
        return F.linear(h.flatten(1), w[16], w[17])

    for _ in range(steps):
        loss = F.cross_entropy(forward(fast, task.support_x), task.support_y)
        grads = torch.autograd.grad(loss, fast, create_graph=True)
        fast = [w - lr * g for w, g in zip(fast, grads)]
    with torch.no_grad():
        ref = task.support_x if query_stats == "support" else None
        pred = forward(fast, task.query_x, ref).argmax(-1)
    return float((pred == task.query_y).double().mean()) * 100.0


@pytest.mark.parametrize("n_shot", [1, 5])
def test_evaluate_reproduces_the_papers_evaluator_episode_by_episode(n_shot: int) -> None:
    torch.manual_seed(0)
    model = Conv4(num_classes=5, image_size=16).double()
    tasks = conv4_tasks(3, n_shot, seed=n_shot)
    ours = evaluate(model, tasks, steps=10, lr=0.01).per_episode
    theirs = [papers_evaluator(model, t, 10, 0.01) for t in tasks]
    assert ours == theirs
    assert len(set(ours)) > 1  # the episodes differ, so agreement is not a coincidence of one value
    # scoring queries with the support set's statistics is another protocol, and the test sees it
    wrong = [papers_evaluator(model, t, 10, 0.01, query_stats="support") for t in tasks]
    assert wrong != ours


def test_protocols_are_named_and_an_unknown_name_lists_the_valid_ones() -> None:
    assert set(PROTOCOLS) == {"standard", "dfml-2025"}
    assert EvalConfig().protocol == "standard" == get_protocol("standard").name
    with pytest.raises(ValueError, match=r"eval.protocol must be one of standard, dfml-2025, got 'papers'"):
        EvalConfig(protocol="papers")


def _context(protocol: str, **train: object) -> RecipeContext:
    tr = TrainConfig(meta_arch="conv4", **train)
    return RecipeContext(pool=None, train=tr, input_shape=(3, 32, 32), val_tasks=lambda: [],  # type: ignore[arg-type]
                         protocol=protocol)


def _seeded(seed: int, **kwargs: object) -> Conv4:
    torch.manual_seed(seed)
    return Conv4(num_classes=5, image_size=32, **kwargs)


def test_random_starts_as_the_papers_random_under_standard_and_as_before_under_dfml_2025() -> None:
    standard = RECIPES.get("random")(_context("standard")).state_dict()
    papers = _seeded(0, init="kaiming_fan_out").state_dict()
    assert torch.equal(standard["head.bias"], torch.zeros(5))
    for k, v in papers.items():
        if k in standard and k != "head.bias":  # BN running buffers are dropped (batch statistics)
            assert torch.equal(standard[k], v), k
    conv = standard["encoder.1.conv.weight"]  # N(0, 2 / (3*3*32)): std 0.0833
    assert abs(conv.std().item() - (2 / (9 * 32)) ** 0.5) < 0.005
    assert torch.equal(standard["encoder.1.bn.weight"], torch.ones(32))

    earlier = RECIPES.get("random")(_context("dfml-2025")).state_dict()
    before = _seeded(0, init="pytorch").state_dict()
    assert all(torch.equal(earlier[k], before[k]) for k in earlier)
    assert earlier["head.bias"].abs().sum() > 0


def test_an_explicit_init_in_meta_arch_kwargs_wins_over_the_protocol() -> None:
    model = _context("standard", meta_arch_kwargs={"init": "pytorch"}).build_meta_model(0)
    assert torch.equal(model.encoder[0].conv.weight, _seeded(0, init="pytorch").encoder[0].conv.weight)


def test_a_run_saved_before_eval_protocol_resumes_only_under_the_earlier_protocol(tmp_path) -> None:
    old = to_dict(ExperimentConfig())
    del old["eval"]["protocol"]
    RunDir(tmp_path, old)
    (tmp_path / "model.pt").write_bytes(b"work")  # the old run saved work: it is not replaced
    with pytest.raises(ValueError, match=r"differs in: eval.protocol"):
        RunDir(tmp_path, to_dict(ExperimentConfig()), defaults=saved_defaults())
    earlier = ExperimentConfig(eval=EvalConfig(protocol="dfml-2025"))
    assert RunDir(tmp_path, to_dict(earlier), defaults=saved_defaults()).resumed


def _write_run(path, eval_section: dict, per_episode: list[float]) -> None:
    path.mkdir(parents=True)
    scores = {"5way_1shot": {"mean": sum(per_episode) / len(per_episode), "ci95": 1.0, "per_episode": per_episode}}
    (path / "results.json").write_text(json.dumps({"scores": scores, "config": {"eval": eval_section}}))


def test_compare_refuses_a_run_saved_before_eval_protocol_against_a_standard_one(tmp_path, capsys) -> None:
    standard = to_dict(EvalConfig())
    older = {k: v for k, v in standard.items() if k != "protocol"}
    _write_run(tmp_path / "standard", standard, [20.0, 40.0, 60.0])
    _write_run(tmp_path / "older", older, [40.0, 40.0, 60.0])
    _write_run(tmp_path / "earlier", {**standard, "protocol": "dfml-2025"}, [60.0, 40.0, 80.0])
    assert main(["compare", str(tmp_path / "standard"), str(tmp_path / "older")]) == 2
    assert "were scored with different meta-test protocols (eval: protocol)" in capsys.readouterr().err
    # a run saved before the field and one scored under the earlier protocol explicitly do compare
    assert main(["compare", str(tmp_path / "older"), str(tmp_path / "earlier")]) == 0
    assert "+13.33" in capsys.readouterr().out  # (20 + 0 + 20) / 3
