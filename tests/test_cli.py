"""The dfml command end to end on a tiny toy pool, and its error paths."""

import contextlib
import json

import pytest

from dfml.cli import main


@pytest.fixture(scope="module")
def toy_pool(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "pool"
    assert main(["pool", "build", "--dataset", "toy", "--arch", "mlp", "--out", str(out),
                 "--n-models", "3", "--epochs", "15", "--lr", "0.01"]) == 0
    return out


def test_pool_build_is_resumable_and_info_verifies(toy_pool, capsys):
    assert main(["pool", "build", "--dataset", "toy", "--arch", "mlp", "--out", str(toy_pool),
                 "--n-models", "3", "--epochs", "15", "--lr", "0.01"]) == 0
    assert main(["pool", "info", str(toy_pool), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "verified 3 model files" in out and "3 models" in out


def test_pool_build_takes_the_papers_convention_and_single_flags_over_it(tmp_path):
    out = tmp_path / "pool"
    assert main(["pool", "build", "--dataset", "toy", "--arch", "mlp", "--out", str(out), "--n-models", "2",
                 "--convention", "papers", "--epochs", "2", "--augment"]) == 0
    config = json.loads((out / "pool.json").read_text())["build"]["config"]
    assert {k: config[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "augment", "clip_grad_norm")} == {
        "epochs": 2, "batch_size": 128, "lr": 0.01, "weight_decay": 0.0, "augment": True, "clip_grad_norm": 50.0}


def test_eval_scores_baselines_on_the_same_saved_episodes(toy_pool, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["eval", "--recipe", "random", "average", "--pool", str(toy_pool), "--dataset", "toy",
                 "--episodes", "20", "--shots", "1", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| random |" in table and "| average |" in table
    r = json.loads((out / "random" / "results.json").read_text())
    a = json.loads((out / "average" / "results.json").read_text())
    assert len(r["scores"]["5way_1shot"]["per_episode"]) == 20
    assert r["config"]["eval"]["episodes_dir"] == a["config"]["eval"]["episodes_dir"]
    assert (out / "episodes" / "test_5w1s_20.json").exists()
    assert main(["compare", str(out / "random"), str(out / "average")]) == 0
    assert "vs random" in capsys.readouterr().out

    # a run saved before an eval field existed is compared as if it had the default ...
    older = tmp_path / "older" / "average"
    older.mkdir(parents=True)
    del a["config"]["eval"]["calibration"]
    (older / "results.json").write_text(json.dumps(a))
    assert main(["compare", str(out / "random"), str(older)]) == 0
    # ... and a real difference is named
    a["config"]["eval"]["steps"] += 1
    (older / "results.json").write_text(json.dumps(a))
    assert main(["compare", str(out / "random"), str(older)]) == 2
    assert "'random' and 'average' were scored with different meta-test protocols (eval: steps)" in \
        capsys.readouterr().err


def test_train_writes_a_complete_run_directory_and_a_rerun_reuses_it(toy_pool, tmp_path, capsys):
    out = tmp_path / "tr"
    args = ["train", "--recipe", "maml", "--pool", str(toy_pool), "--dataset", "toy", "--episodes", "10",
            "--shots", "1", "--out", str(out), "--set", "train.steps=4", "--set", "train.val_every=2",
            "--set", "train.val_episodes=5", "--set", "datafree.synthetic.per_class=16",
            "--set", "datafree.pixel.steps=10"]
    assert main(args) == 0
    for f in ("config.yaml", "run.json", "metrics.jsonl", "results.json", "model.pt", "bank.pt",
              "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (out / f).exists(), f
    res = json.loads((out / "results.json").read_text())
    assert res["info"]["steps"] == 4 and res["info"]["inversion_cost"]["teacher_queries"] > 0
    mtime = (out / "results.json").stat().st_mtime
    assert main(args) == 0
    assert (out / "results.json").stat().st_mtime == mtime


def test_extend_goes_on_to_more_steps_as_the_longer_run_would_have_and_keeps_the_first_results(toy_pool, tmp_path,
                                                                                                capsys):
    base = ["train", "--recipe", "maml", "--pool", str(toy_pool), "--dataset", "toy", "--episodes", "10",
            "--shots", "1", "--set", "train.val_every=2", "--set", "train.val_episodes=5",
            "--set", "datafree.synthetic.per_class=16", "--set", "datafree.pixel.steps=10"]
    out = tmp_path / "ext"
    assert main(base + ["--out", str(out), "--set", "train.steps=4"]) == 0
    first = (out / "results.json").read_bytes()
    assert main(base + ["--out", str(out), "--set", "train.steps=6"]) == 2
    err = capsys.readouterr().err
    assert "train.steps 4 -> 6" in err and "Add --extend" in err and (out / "results.json").read_bytes() == first
    assert main(base + ["--out", str(out), "--set", "train.steps=6", "--extend"]) == 0
    assert (out / "extended" / "1" / "results.json").read_bytes() == first
    assert (out / "extended" / "1" / "model.pt").is_file() and "steps: 4" in (out / "extended/1/config.yaml").read_text()
    res = json.loads((out / "results.json").read_text())
    assert res["info"]["steps"] == 6 and res["extensions"][0]["changed"] == {"train.steps": [4, 6]}
    assert main(base + ["--out", str(tmp_path / "straight"), "--set", "train.steps=6"]) == 0
    straight = json.loads((tmp_path / "straight" / "results.json").read_text())
    assert res["scores"]["5way_1shot"]["per_episode"] == straight["scores"]["5way_1shot"]["per_episode"]
    assert res["info"]["best_step"] == straight["info"]["best_step"]
    assert main(base + ["--out", str(out), "--set", "train.steps=5", "--extend"]) == 2  # fewer steps: another run
    assert "another configuration (differs in: train.steps)" in capsys.readouterr().err


def test_errors_are_one_clear_line_and_exit_2(toy_pool, tmp_path, capsys):
    assert main(["eval", "--recipe", "random", "--pool", str(tmp_path / "missing"), "--dataset", "toy",
                 "--out", str(tmp_path / "x")]) == 2
    assert "pool.json" in capsys.readouterr().err
    out = tmp_path / "clash"
    base = ["eval", "--recipe", "random", "--pool", str(toy_pool), "--dataset", "toy", "--shots", "1",
            "--out", str(out)]
    assert main(base + ["--episodes", "5"]) == 0
    assert main(base + ["--episodes", "6"]) == 2
    assert "another configuration" in capsys.readouterr().err
    assert main(["train", "--recipe", "maml", "--pool", str(toy_pool), "--dataset", "toy",
                 "--out", str(tmp_path / "y"), "--set", "train.bogus=1"]) == 2
    assert "unknown config key 'train.bogus'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--recipe", "nope", "--pool", str(toy_pool), "--out", str(tmp_path / "z")])


def test_a_progress_bar_closes_when_its_stage_stops_early() -> None:
    from dfml.commands.common import ProgressBars as _Bars

    bars = _Bars()
    bars("train", 1, 4, {"loss": 1.0})
    assert "train" in bars.bars
    bars("train", 1, 4, {"stopped_early": "the query budgets cannot fund another task", "val_acc": 20.0})
    assert bars.bars == {}  # the meta-test's bars do not print under a dangling training bar


def test_an_interrupt_is_one_line_that_says_how_to_resume(monkeypatch, capsys):
    import dfml.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt  # Ctrl-C in the middle of a command

    monkeypatch.setattr(cli, "cmd_pool_info", interrupted)
    assert main(["pool", "info", "somewhere"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("dfml: interrupted.") and "run the same command again to resume" in err
    assert "Traceback" not in err


def test_commands_that_write_from_one_process_refuse_a_torchrun_launch(monkeypatch, capsys, tmp_path):
    import dfml.cli as cli

    monkeypatch.setattr(cli.distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(cli.distributed, "is_main", lambda: True)
    monkeypatch.setattr(cli.distributed, "launched", contextlib.nullcontext)
    assert main(["pool", "merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")]) == 2
    assert "`dfml pool merge` runs in one process; launch it without torchrun" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def _eval_args(pool, out, *extra, recipe="random"):
    return ["eval", "--recipe", recipe, "--pool", str(pool), "--dataset", "toy", "--episodes", "5", "--shots", "1",
            "--out", str(out), *extra]


def test_a_start_that_failed_on_a_typo_does_not_block_the_corrected_command(toy_pool, tmp_path, capsys):
    assert main(_eval_args(toy_pool, tmp_path / "ev", "--dataset", "cifar_f")) == 2
    assert "cifar_f" in capsys.readouterr().err
    assert main(_eval_args(toy_pool, tmp_path / "ev")) == 0


def test_an_interrupt_under_verbose_is_the_same_one_line(monkeypatch, capsys):
    import dfml.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_pool_info", interrupted)
    assert main(["-v", "pool", "info", "somewhere"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("dfml: interrupted.") and "Traceback" not in err


def test_a_run_refuses_to_resume_or_reuse_its_results_on_another_pool_at_the_same_path(toy_pool, tmp_path, capsys):
    import hashlib
    import shutil

    from dfml.pool import subset_pool

    pool = tmp_path / "pool"
    shutil.copytree(toy_pool, pool)
    args = _eval_args(pool, tmp_path / "ev")
    assert main(args) == 0
    run_json = tmp_path / "ev" / "random" / "run.json"
    inputs = json.loads(run_json.read_text())["inputs"]
    assert inputs["pool"] == {"manifest_sha256": hashlib.sha256((pool / "pool.json").read_bytes()).hexdigest()}
    assert inputs["data"]["dataset"] == "toy" and len(inputs["data"]["val_sha256"]) == 64
    # a run saved before dfml recorded its inputs is reused, and records them now
    info = json.loads(run_json.read_text())
    del info["inputs"]
    run_json.write_text(json.dumps(info))
    assert main(args) == 0
    assert json.loads(run_json.read_text())["inputs"] == inputs
    # another pool (other models, other classes) at the same path
    shutil.rmtree(pool)
    subset_pool(toy_pool, [2, 0], pool)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds a run made on other inputs (pool.manifest_sha256: " in err and "restore the pool" in err


def test_a_run_directory_in_use_is_refused_naming_the_holder(toy_pool, tmp_path, capsys):
    import os

    from dfml.locks import DirectoryLock

    with DirectoryLock(tmp_path / "ev" / "random"):
        assert main(_eval_args(toy_pool, tmp_path / "ev")) == 2
        assert f"run directory {str(tmp_path / 'ev' / 'random')!r} is in use by another dfml process (pid " \
               f"{os.getpid()} on " in capsys.readouterr().err
        assert sorted(p.name for p in (tmp_path / "ev" / "random").iterdir()) == [".lock"]
    with DirectoryLock(tmp_path / "pool"):
        assert main(["pool", "build", "--dataset", "toy", "--arch", "mlp", "--out", str(tmp_path / "pool"),
                     "--n-models", "1", "--epochs", "1"]) == 2
        assert f"pool directory {str(tmp_path / 'pool')!r} is in use" in capsys.readouterr().err
    assert main(_eval_args(toy_pool, tmp_path / "ev")) == 0


def test_validation_episodes_belong_to_the_run_directory(toy_pool, tmp_path):
    shared = tmp_path / "other-run" / "episodes"
    out = tmp_path / "tr"
    assert main(["train", "--recipe", "maml", "--pool", str(toy_pool), "--dataset", "toy", "--episodes", "5",
                 "--shots", "1", "--out", str(out), "--set", "train.steps=1", "--set", "train.val_episodes=3",
                 "--set", "train.n_query=3", "--set", "datafree.synthetic.per_class=8", "--set", "datafree.pixel.steps=2",
                 "--set", f"eval.episodes_dir={shared}"]) == 0
    assert sorted(p.name for p in shared.iterdir()) == ["test_5w1s_5.json"]  # the shared meta-test list only
    assert (out / "episodes" / "val_5w1s_3.json").is_file()


def test_compare_matches_runs_by_the_content_of_their_episode_files(toy_pool, tmp_path, capsys):
    import shutil

    from dfml.data import EpisodeList, get_dataset

    assert main(_eval_args(toy_pool, tmp_path / "a")) == 0
    shutil.copytree(tmp_path / "a" / "episodes", tmp_path / "copy")
    assert main(_eval_args(toy_pool, tmp_path / "b", "--set", f"eval.episodes_dir={tmp_path / 'copy'}",
                           recipe="average")) == 0
    a = json.loads((tmp_path / "a" / "random" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "average" / "results.json").read_text())
    assert a["episodes_sha256"] == b["episodes_sha256"] and len(a["episodes_sha256"]["5way_1shot"]) == 64
    assert main(["compare", str(tmp_path / "a" / "random"), str(tmp_path / "b" / "average")]) == 0
    # other episodes under the same settings: refused, naming the score
    EpisodeList.generate(get_dataset("toy", None, "test"), 5, 5, 1, 15, seed=9).save(tmp_path / "other" /
                                                                                       "test_5w1s_5.json")
    assert main(_eval_args(toy_pool, tmp_path / "c", "--set", f"eval.episodes_dir={tmp_path / 'other'}",
                           recipe="average")) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a" / "random"), str(tmp_path / "c" / "average")]) == 2
    assert "'random' and 'average' were scored on different meta-test episodes (5way_1shot: the episode files " \
           "differ)" in \
        capsys.readouterr().err
    # results saved before dfml recorded the episodes' content: the folders' paths are compared
    del b["episodes_sha256"]
    (tmp_path / "b" / "average" / "results.json").write_text(json.dumps(b))
    assert main(["compare", str(tmp_path / "a" / "random"), str(tmp_path / "b" / "average")]) == 2
    assert "different meta-test protocols (eval: episodes_dir)" in capsys.readouterr().err


def test_compare_tells_apart_runs_of_the_same_name(toy_pool, tmp_path, capsys):
    from dfml.data import EpisodeList, get_dataset

    assert main(_eval_args(toy_pool, tmp_path / "a")) == 0
    EpisodeList.generate(get_dataset("toy", None, "test"), 5, 5, 1, 15, seed=9).save(tmp_path / "other" /
                                                                                       "test_5w1s_5.json")
    assert main(_eval_args(toy_pool, tmp_path / "b", "--set", f"eval.episodes_dir={tmp_path / 'other'}")) == 0
    capsys.readouterr()
    a, b = str(tmp_path / "a" / "random"), str(tmp_path / "b" / "random")
    assert main(["compare", a, b]) == 2  # both are called 'random': the second one was dropped unseen
    assert f"{a!r} and {b!r} were scored on different meta-test episodes" in capsys.readouterr().err

# --- issue 12: values checked when the configuration resolves, the rest before any work starts --------
def _train_args(pool, out, *extra, recipe="maml"):
    return ["train", "--recipe", recipe, "--pool", str(pool), "--dataset", "toy", "--episodes", "5", "--shots", "1",
            "--out", str(out), *extra]


@pytest.mark.parametrize("extra, match", [
    (["--set", "train.steps=1.5"], "train.steps=1.5 is not an integer; write e.g. train.steps=300"),
    (["--set", "train.steps=abc"], "train.steps='abc' is not an integer"),
    (["--set", "train.first_order=maybe"], "train.first_order='maybe' is not true or false"),
    (["--set", "eval.lr=abc"], "eval.lr='abc' is not a number; write e.g. eval.lr=0.01"),
    (["--set", "eval.episodes=-5"], "eval.episodes must be an integer >= 1, got -5"),
    (["--episodes", "-5"], "eval.episodes must be an integer >= 1, got -5"),
    (["--set", "train.n_way=1"], "train.n_way must be an integer >= 2"),
    (["--shots", "200"], "the toy test split's smallest class holds 100 examples, but 200-shot episodes \\(eval.shots\\) "
                         "with eval.n_query=15 need 215 per class"),
    (["--set", "train.n_shot=90", "--set", "datafree.synthetic.per_class=200"],
     "the toy val split's smallest class holds 100 examples, but meta-validation episodes of train.n_shot=90 with "
     "eval.n_query=15 need 105 per class"),
    (["--set", "train.n_way=6", "--set", "eval.n_way=6"], r"pool model 0 has 5 classes"),
    (["--set", "datafree.synthetic.per_class=10"], "datafree.synthetic.per_class=10 is smaller than n_shot \\+ n_query = 16"),
    (["--set", "datafree.inverter=blackbox"], "recipe 'maml' does not read datafree.inverter"),
])
def test_a_bad_setting_is_refused_before_any_work_starts(toy_pool, tmp_path, capsys, extra, match):
    import re

    out = tmp_path / "run"
    assert main(_train_args(toy_pool, out, *extra)) == 2
    err = capsys.readouterr().err
    assert re.search(match, err) and err.count("\n") == 1, err
    assert not out.exists() or not any(out.iterdir())  # nothing written, nothing locked


def test_the_data_must_hold_the_episodes_ways(toy_pool, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_eval_args(toy_pool, out, "--set", "train.n_way=17", "--set", "eval.n_way=17")) == 2
    assert "the toy val split has 16 classes, fewer than train.n_way=17" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_the_outer_lr_of_a_yaml_file_is_a_number(toy_pool, tmp_path):
    (tmp_path / "c.yaml").write_text("train: {outer_lr: 1e-3, steps: 2, val_every: 1, val_episodes: 3, "
                                     "bank_per_class: 16, inversion: {steps: 3}}\neval: {lr: 1E-2}\n")
    out = tmp_path / "run"
    assert main(_train_args(toy_pool, out, "--config", str(tmp_path / "c.yaml"))) == 0
    cfg = json.loads((out / "results.json").read_text())["config"]
    assert cfg["train"]["outer_lr"] == 1e-3 and cfg["eval"]["lr"] == 0.01


def test_a_setting_the_recipe_does_not_read_is_refused_whoever_sets_it(toy_pool, tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("train: {steps: 5}\n")
    assert main(_eval_args(toy_pool, tmp_path / "ev", "--config", str(tmp_path / "c.yaml"))) == 2
    assert "train.steps in --config" in capsys.readouterr().err
    assert main(_eval_args(toy_pool, tmp_path / "ev", "--set", "datafree.inverter=blackbox")) == 2
    assert "recipe 'random' does not read datafree.inverter" in capsys.readouterr().err
    # several recipes: a setting one of them reads is theirs
    assert main(_eval_args(toy_pool, tmp_path / "ev2", "--set", "train.steps=5", recipe="random")) == 2
    assert "choose a recipe that reads it (bidf_mkd, free, maml, maml_data, purer, robust, tgr)" in capsys.readouterr().err
    assert main(["eval", "--recipe", "random", "average", "--pool", str(toy_pool), "--dataset", "toy", "--episodes",
                 "5", "--shots", "1", "--out", str(tmp_path / "ev3"), "--set", "train.steps=5"]) == 2
    assert "none of the recipes 'random', 'average' read train.steps" in capsys.readouterr().err
    # the recipe's own choices decide: free inverts with a meta-generator, not a generator
    assert main(_train_args(toy_pool, tmp_path / "free", "--set", "datafree.generator.steps=3", recipe="free")) == 2
    assert "(read only with datafree.inverter=generator; it is metagen)" in capsys.readouterr().err
    assert main(_train_args(toy_pool, tmp_path / "bb", "--set", "datafree.distill.temperature=2", recipe="robust")) == 2
    assert "(read only with datafree.learner=distill; it is maml)" in capsys.readouterr().err
    (tmp_path / "r.yaml").write_text("recipe: robust\n")
    assert main(_train_args(toy_pool, tmp_path / "r", "--config", str(tmp_path / "r.yaml"))) == 2
    assert "sets recipe: robust, but the command runs 'maml'" in capsys.readouterr().err
    # a section given as a mapping: each of its settings is checked
    assert main(_train_args(toy_pool, tmp_path / "rb", "--set", "datafree={pixel: {steps: 3}}", recipe="robust")) == 2
    assert "--set datafree={pixel: {steps: 3}}: recipe 'robust' does not read datafree.pixel.steps" in \
        capsys.readouterr().err
    # a key that moved is named as the user typed it, with its place now
    assert main(_train_args(toy_pool, tmp_path / "rv", "--set", "train.test_inner_lr=0.05", recipe="random")) == 2
    assert ("--set train.test_inner_lr=0.05 (now eval.val_lr): recipe 'random' does not read eval.val_lr"
            in capsys.readouterr().err)
    assert not (tmp_path / "rv").exists()


def test_a_stopped_pool_build_is_reported_by_info_and_refused_by_verify_eval_and_train(tmp_path, capsys, monkeypatch):
    from dfml.pool import pretrain as pretrain_module

    build = ["pool", "build", "--dataset", "toy", "--arch", "mlp", "--out", str(tmp_path / "pool"), "--n-models", "4",
             "--epochs", "1"]
    real_fit = pretrain_module.fit_and_save
    calls = []

    def stop_after_one(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "fit_and_save", stop_after_one)
    assert main(build) == 130
    monkeypatch.undo()
    capsys.readouterr()
    line = (f"pool '{tmp_path / 'pool'}' is unfinished: 1 of 4 models built; run the same `dfml pool build` command "
            "again to finish it")
    assert main(["pool", "info", str(tmp_path / "pool")]) == 0
    assert line in capsys.readouterr().out
    for argv in (["pool", "info", str(tmp_path / "pool"), "--verify"],
                 ["eval", "--recipe", "random", "--pool", str(tmp_path / "pool"), "--dataset", "toy", "--episodes", "3",
                  "--shots", "1", "--out", str(tmp_path / "ev")],
                 ["train", "--recipe", "maml", "--pool", str(tmp_path / "pool"), "--dataset", "toy", "--episodes", "3",
                  "--shots", "1", "--out", str(tmp_path / "tr")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"dfml: error: {line}"), (argv, err)
    assert not (tmp_path / "ev").exists() and not (tmp_path / "tr").exists()
    assert main(build) == 0
    assert main(["pool", "info", str(tmp_path / "pool"), "--verify"]) == 0
    assert "verified 4 model files" in capsys.readouterr().out


def _refuse_writes_under(root, monkeypatch):
    """Make ``root`` unwritable as chmod 0555 would for a normal user (tests run as root, which ignores it)."""
    import builtins
    import os

    def denied(path):
        return PermissionError(13, "Permission denied", str(path))

    def under(path):
        return str(path).startswith(str(root) + os.sep)

    real_mkdir, real_open, real_os_open = os.mkdir, builtins.open, os.open

    def mkdir(path, *args, **kwargs):
        if under(path):
            raise denied(path)
        return real_mkdir(path, *args, **kwargs)

    def open_(file, mode="r", *args, **kwargs):
        if under(file) and any(c in mode for c in "wax+"):
            raise denied(file)
        return real_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if under(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise denied(path)
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(os, "open", os_open)


@pytest.mark.parametrize("command", ["eval", "train", "pool build"])
def test_an_unwritable_out_folder_is_one_line_naming_the_folder_and_the_fix(toy_pool, tmp_path, capsys, monkeypatch,
                                                                            command):
    ro = tmp_path / "ro"
    ro.mkdir()
    out = ro / "out"
    argv = {
        "eval": ["eval", "--recipe", "random", "--pool", str(toy_pool), "--dataset", "toy", "--episodes", "3",
                 "--shots", "1", "--out", str(out)],
        "train": ["train", "--recipe", "maml", "--pool", str(toy_pool), "--dataset", "toy", "--episodes", "3",
                  "--shots", "1", "--out", str(out)],
        "pool build": ["pool", "build", "--dataset", "toy", "--arch", "mlp", "--out", str(out), "--n-models", "2",
                       "--epochs", "1"],
    }[command]
    _refuse_writes_under(ro, monkeypatch)
    capsys.readouterr()
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("dfml: error: "), err
    assert str(ro) in err[0] and "ermission denied" in err[0] and "--out" in err[0], err
    assert list(ro.iterdir()) == []
