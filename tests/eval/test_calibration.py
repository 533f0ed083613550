"""Inversion calibration after the inner loop (ICFIL): exact parts, determinism, no query access, both arms."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import dfml.eval.protocol as protocol
from dfml.config import apply_overrides
from dfml.data import EpisodeList
from dfml.data.toy import make_toy_world
from dfml.eval import CalibrationConfig, calibrate, evaluate
from dfml.eval.calibration import adapted_teacher, episode_generator
from dfml.experiment import experiment_config, load_meta_model, run_experiment
from dfml.inversion import PixelBankConfig
from dfml.meta.inner import functional_forward, inner_update
from dfml.models import Conv4, use_batch_stats
from dfml.models.registry import build_model
from dfml.pool import build_toy_pool
from dfml.types import Task

FAST = CalibrationConfig(enabled=True, inversion=PixelBankConfig(per_class=3, steps=10), steps=5)


@pytest.fixture(scope="module")
def toy_tasks() -> list[Task]:
    world = make_toy_world()
    return list(EpisodeList.generate(world["test"], 6, n_way=5, n_shot=1, n_query=10, seed=0).tasks(world["test"]))


def toy_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", in_features=32, hidden=[32, 32], num_classes=5)


def image_task(seed: int = 0, n_way: int = 3, dtype: torch.dtype = torch.float32) -> Task:
    g = torch.Generator().manual_seed(seed)
    sy, qy = torch.arange(n_way).repeat_interleave(2), torch.arange(n_way).repeat_interleave(4)
    means = torch.randn(n_way, 3, 1, 1, generator=g)
    sx = means[sy] + 0.5 * torch.randn(len(sy), 3, 16, 16, generator=g)
    qx = means[qy] + 0.5 * torch.randn(len(qy), 3, 16, 16, generator=g)
    return Task(sx.to(dtype), sy, qx.to(dtype), qy)


def adapted(net: torch.nn.Module, task: Task, steps: int = 3, lr: float = 0.1) -> dict[str, torch.Tensor]:
    params = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters()}
    return inner_update(net, params, task.support_x, task.support_y, steps=steps, lr=lr, first_order=True)


def test_adapted_teacher_in_eval_mode_computes_what_the_adapted_network_computes_on_the_support_set():
    torch.manual_seed(0)
    net = use_batch_stats(Conv4(num_classes=3, hidden=4, image_size=16)).double()
    task = image_task(dtype=torch.float64)
    fast = adapted(net, task)
    teacher = adapted_teacher(net, fast, task.support_x)
    assert not teacher.training and all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        torch.testing.assert_close(teacher(task.support_x), functional_forward(net, fast, task.support_x),
                                   rtol=1e-10, atol=1e-10)
    bn = teacher.encoder[0].bn
    h = torch.nn.functional.conv2d(task.support_x, fast["encoder.0.conv.weight"], fast["encoder.0.conv.bias"], padding=1)
    torch.testing.assert_close(bn.running_mean, h.mean((0, 2, 3)).detach())
    torch.testing.assert_close(bn.running_var, h.var((0, 2, 3), unbiased=False).detach())
    assert net.encoder[0].bn.running_mean is None  # the network itself keeps batch statistics


def test_calibrate_inverts_with_the_batchnorm_prior_and_leaves_its_inputs_alone():
    torch.manual_seed(0)
    net = use_batch_stats(Conv4(num_classes=3, hidden=4, image_size=16))
    task = image_task()
    fast = adapted(net, task)
    before = {k: v.clone() for k, v in fast.items()}
    cal, info = calibrate(net, fast, task.support_x, task.support_y, FAST, episode_generator(0, 0), lr=0.1)
    assert info["inversion"]["bn"] > 0 and info["teacher_queries"] == 10 * 9 + 1 + 9
    assert 0.0 <= info["pseudo_acc"] <= 1.0
    assert cal.keys() == fast.keys() and all(not v.requires_grad for v in cal.values())
    assert any(not torch.equal(cal[k], fast[k]) for k in fast)
    for k, v in fast.items():
        assert torch.equal(v, before[k]), k


def test_pseudo_weight_zero_is_exactly_extra_fine_tuning_on_the_support_set(toy_tasks):
    model = toy_model()
    control = dataclasses.replace(FAST, pseudo_weight=0.0)
    res = evaluate(model, toy_tasks, steps=10, lr=0.1, calibration=control)
    assert res.per_episode == evaluate(model, toy_tasks, steps=15, lr=0.1).per_episode
    assert res.info["calibration"]["pseudo_acc"] is None and res.info["calibration"]["teacher_queries"] == 0


def test_both_arms_come_from_one_adaptation_and_the_calibration_changes_predictions(toy_tasks):
    model = toy_model()
    plain = evaluate(model, toy_tasks, steps=10, lr=0.1)
    res = evaluate(model, toy_tasks, steps=10, lr=0.1, calibration=FAST)
    info = res.info["calibration"]
    assert info["uncalibrated"]["per_episode"] == plain.per_episode
    assert info["uncalibrated"]["mean"] == pytest.approx(plain.mean)
    assert info["paired"]["n"] == len(toy_tasks)
    assert info["paired"]["mean_diff"] == pytest.approx(res.mean - plain.mean)
    assert info["pseudo_acc"] > 0.6  # the adapted model mostly classifies its own inversions as their class (chance: 0.2)
    control = evaluate(model, toy_tasks, steps=10, lr=0.1, calibration=dataclasses.replace(FAST, pseudo_weight=0.0))
    assert res.per_episode != control.per_episode  # the inverted pseudo-support, not just more steps, moves them
    assert (info["enabled"], info["inversion"]["per_class"], info["steps"]) == (True, 3, 5)


def test_calibration_is_deterministic_from_its_seed_and_episode_index(toy_tasks):
    model, task = toy_model(), toy_tasks[0]
    fast = adapted(model, task)

    def run(seed: int, index: int) -> dict[str, torch.Tensor]:
        return calibrate(model, fast, task.support_x, task.support_y, FAST, episode_generator(seed, index), lr=0.1)[0]

    a, b, other_seed, other_episode = run(0, 0), run(0, 0), run(1, 0), run(0, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], other_seed[k]) for k in a)
    assert any(not torch.equal(a[k], other_episode[k]) for k in a)
    first = evaluate(model, toy_tasks, steps=10, lr=0.1, calibration=FAST, first_n=3)
    again = evaluate(model, toy_tasks, steps=10, lr=0.1, calibration=FAST)
    assert again.per_episode[:3] == first.per_episode  # episode i's inversion does not depend on the others


def test_calibration_never_sees_the_query_set(toy_tasks, monkeypatch):
    model = toy_model()
    seen: list[tuple] = []

    def spy(network, params, support_x, support_y, config, generator, **kwargs):
        out = calibrate(network, params, support_x, support_y, config, generator, **kwargs)
        seen.append((support_x.clone(), out[0]))
        return out

    monkeypatch.setattr(protocol, "calibrate", spy)
    evaluate(model, toy_tasks, steps=10, lr=0.1, calibration=FAST)
    poisoned = [Task(t.support_x, t.support_y, torch.full_like(t.query_x, float("nan")), t.query_y.flip(0))
                for t in toy_tasks]
    with pytest.raises(RuntimeError, match="degenerate result"):  # NaN queries all get one class: refused, not scored
        evaluate(model, poisoned, steps=10, lr=0.1, calibration=FAST)
    clean, dirty = seen[: len(toy_tasks)], seen[len(toy_tasks):]
    for task, (sx, w_clean), (_, w_dirty) in zip(toy_tasks, clean, dirty):
        assert torch.equal(sx, task.support_x)
        assert all(torch.equal(w_clean[k], w_dirty[k]) for k in w_clean)  # same weights whatever the query set
        assert all(torch.isfinite(v).all() for v in w_dirty.values())


def test_calibration_settings_are_checked_where_they_are_built():
    with pytest.raises(ValueError, match=r"PixelBankConfig.per_class must be >= 1, got 0"):
        CalibrationConfig(inversion=PixelBankConfig(per_class=0))
    with pytest.raises(ValueError, match="curriculum must be false"):
        CalibrationConfig(inversion=PixelBankConfig(curriculum=True))
    with pytest.raises(ValueError, match=r"pseudo_weight must be >= 0, got -1"):
        CalibrationConfig(pseudo_weight=-1.0)
    with pytest.raises(ValueError, match="both 0"):
        CalibrationConfig(support_weight=0.0, pseudo_weight=0.0)
    with pytest.raises(ValueError, match=r"lr must be > 0 or None"):
        CalibrationConfig(lr=0.0)


def test_calibration_refuses_protonet_scoring_and_wrong_types(toy_tasks):
    with pytest.raises(ValueError, match="method='protonet' does not fine-tune"):
        evaluate(toy_model(), toy_tasks, method="protonet", calibration=FAST)
    with pytest.raises(TypeError, match="CalibrationConfig or None, got dict"):
        evaluate(toy_model(), toy_tasks, calibration={"enabled": True})
    task = toy_tasks[0]
    with pytest.raises(ValueError, match="needs a step size"):
        calibrate(toy_model(), adapted(toy_model(), task), task.support_x, task.support_y, FAST,
                  episode_generator(0, 0))


def test_calibration_is_reachable_from_presets_yaml_layers_and_dotted_overrides():
    cfg = experiment_config("maml", {"eval": {"calibration": {"enabled": True, "inversion": {"per_class": 2}}}})
    assert cfg.eval.calibration == CalibrationConfig(enabled=True, inversion=PixelBankConfig(per_class=2, steps=50))
    cfg = apply_overrides(cfg, ["eval.calibration.lr=1", "eval.calibration.inversion.steps=7"])
    assert cfg.eval.calibration.lr == 1.0 and isinstance(cfg.eval.calibration.lr, float)
    assert cfg.eval.calibration.inversion == PixelBankConfig(per_class=2, steps=7)
    with pytest.raises(ValueError, match="unknown config key 'eval.calibration.stpes'"):
        apply_overrides(cfg, ["eval.calibration.stpes=3"])


def test_an_experiment_reports_both_arms_and_a_saved_run_can_be_rescored(tmp_path):
    build_toy_pool(tmp_path / "pool", n_models=2, epochs=2)
    layer = {"pool": str(tmp_path / "pool"), "dataset": "toy",
             "train": {"val_episodes": 2},
             "eval": {"episodes": 4, "shots": [1], "lr": 0.1, "calibration": dataclasses.asdict(FAST)}}
    res = run_experiment(experiment_config("average", layer), tmp_path / "run")
    score = res["scores"]["5way_1shot"]
    info = score["info"]["calibration"]
    assert len(info["uncalibrated"]["per_episode"]) == 4 and info["paired"]["n"] == 4
    model = load_meta_model(tmp_path / "run")
    episodes = EpisodeList.load(tmp_path / "run" / "episodes" / "test_5w1s_4.json")
    test = make_toy_world()["test"]
    again = evaluate(model, episodes.tasks(test), steps=10, lr=0.1, calibration=FAST)
    assert again.per_episode == score["per_episode"]
    assert again.info["calibration"]["uncalibrated"]["per_episode"] == info["uncalibrated"]["per_episode"]


def test_no_preset_calibrates_by_default_and_purer_turns_it_on_with_one_override():
    # off everywhere: ICFIL measured no better than the same extra fine-tuning steps (docs/recipes/purer.md)
    assert not any(experiment_config(r).eval.calibration.enabled
                   for r in ("purer", "maml", "robust", "free", "tgr", "bidf_mkd"))
    assert experiment_config("purer", {"eval": {"calibration": {"enabled": True}}}).eval.calibration.enabled


def test_a_diverged_calibration_names_its_own_step_size_or_the_one_it_follows(toy_tasks):
    model, task = toy_model(), toy_tasks[0]
    fast = adapted(model, task)
    wild = dataclasses.replace(FAST, pseudo_weight=0.0, lr=1e30)
    with pytest.raises(FloatingPointError, match=r"fine-tuning diverged: .* lower CalibrationConfig\.lr \(now 1e\+30\)"):
        calibrate(model, fast, task.support_x, task.support_y, wild, episode_generator(0, 0))
    with pytest.raises(FloatingPointError, match=r"lower eval\.calibration\.lr \(now 1e\+30\)"):
        evaluate(model, toy_tasks[:2], steps=1, lr=0.1, calibration=wild,
                 settings={"lr": "eval.lr", "calibration.lr": "eval.calibration.lr"})
    follows = dataclasses.replace(FAST, pseudo_weight=0.0, steps=20)  # lr unset: the meta-test's (which takes 0 steps)
    with pytest.raises(FloatingPointError, match=r"lower eval\.calibration\.lr \(unset: it follows eval\.lr\) "
                                                 r"\(now 1e\+30\)"):
        evaluate(model, toy_tasks[:2], steps=0, lr=1e30, calibration=follows,
                 settings={"lr": "eval.lr", "calibration.lr": "eval.calibration.lr"})
