"""benchmarks/learning_curves.py and benchmarks/pseudo_tasks.py on a toy benchmark folder."""

from __future__ import annotations

import json

import pytest

from .scripts import load_script
from .test_scenarios import TOY

protocol = load_script("protocol")
learning_curves = load_script("learning_curves")
pseudo_tasks = load_script("pseudo_tasks")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "ss"
    assert protocol.main("toy", ["--preset", str(TOY), "--scenario", "ss", "--out", str(out)]) == 0
    return out


def test_learning_curves_read_every_trained_run_against_the_baselines_on_its_validation_episodes(bench, tmp_path):
    assert learning_curves.main([str(bench), "--json", str(tmp_path / "c.json"), "--plot", str(tmp_path / "c.png")]) == 0
    summary = json.loads((tmp_path / "c.json").read_text())
    assert list(summary["runs"]) == ["robust"]
    (fname, base), = summary["val_baselines"].items()
    assert fname == "val_5w1s_2.json" and set(base) == {"random", "average"}
    robust = summary["runs"]["robust"]
    assert [v["step"] for v in robust["val"]] == [2] and robust["steps"] == 2
    results = {n: json.loads((bench / "runs" / n / "results.json").read_text()) for n in ("robust", "random")}
    assert robust["test_gain_over_random"] == pytest.approx(
        results["robust"]["scores"]["5way_1shot"]["mean"] - results["random"]["scores"]["5way_1shot"]["mean"])
    assert robust["val_gain_over_random"] == pytest.approx(robust["selected"]["val_acc"] - base["random"])
    assert (tmp_path / "c.png").stat().st_size > 0


def test_learning_curves_take_only_the_runs_named_and_name_a_missing_one(bench, tmp_path):
    assert learning_curves.main([str(bench), "--runs", "robust", "--json", str(tmp_path / "c.json")]) == 0
    assert list(json.loads((tmp_path / "c.json").read_text())["runs"]) == ["robust"]
    with pytest.raises(SystemExit, match="holds no finished run named tgr"):
        learning_curves.main([str(bench), "--runs", "robust", "tgr"])


def test_pseudo_task_statistics_judge_each_example_by_the_teacher_that_recovered_it(bench, tmp_path):
    res = pseudo_tasks.statistics(bench / "runs" / "robust", None)
    s = res["summary"]
    assert s["examples"] == sum(r["n"] for r in res["per_class_and_teacher"]) > 0
    assert 0.0 <= s["teacher_acc"] <= 1.0 and 0.0 < s["confidence"] <= 1.0
    assert s["diversity_real"] > 0 and s["relative_diversity"] == pytest.approx(s["diversity"] / s["diversity_real"])
    with pytest.raises(SystemExit, match="no checkpoints/last.pt"):
        pseudo_tasks.statistics(bench / "runs" / "random", None)


def test_pseudo_task_statistics_read_a_pixel_bank_row_by_row_in_teacher_output_order(bench, tmp_path):
    import shutil

    import torch

    from dfml.config import load_yaml
    from dfml.pool import ModelPool

    run = tmp_path / "purer"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(bench / "runs" / "robust" / "config.yaml", run / "config.yaml")
    pool = ModelPool(load_yaml(run / "config.yaml")["pool"])
    teacher, entry = pool.load(1).eval(), pool.entry(1)
    n_in = next(m for m in teacher.modules() if isinstance(m, torch.nn.Linear)).in_features
    x = torch.randn(len(entry.class_ids), 4, n_in, generator=torch.Generator().manual_seed(0))
    torch.save({"stream": {"inverter": {"entries": {1: x}}}}, run / "checkpoints" / "last.pt")
    res = pseudo_tasks.statistics(run, None)
    rows = res["per_class_and_teacher"]
    assert [r["class"] for r in rows] == list(entry.class_ids) and {r["model"] for r in rows} == {1}
    assert res["summary"]["examples"] == x.shape[0] * x.shape[1]
    with torch.no_grad():  # row k of the bank holds examples of the teacher's output k
        expected = [float((teacher(x[k]).argmax(1) == k).float().mean()) for k in range(x.shape[0])]
    assert [r["teacher_acc"] for r in rows] == pytest.approx(expected)


def test_pool_displacement_is_zero_for_untrained_models_and_grows_with_training(tmp_path):
    from dfml.data.toy import make_toy_world
    from dfml.pool import PretrainConfig, pretrain_pool

    displacement = load_script("pool_displacement")
    train = make_toy_world()["train"]
    cfg = PretrainConfig(n_models=2, n_way=3, arch="mlp", arch_kwargs={"hidden": [16]}, epochs=0, augment=False)
    pretrain_pool(train, tmp_path / "untrained", cfg)
    pretrain_pool(train, tmp_path / "trained", PretrainConfig(**{**cfg.__dict__, "epochs": 3, "lr": 0.01}))
    assert displacement.displacements(str(tmp_path / "untrained")) == [0.0, 0.0]
    assert all(d > 0.01 for d in displacement.displacements(str(tmp_path / "trained")))
