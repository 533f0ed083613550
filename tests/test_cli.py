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
            "--set", "train.val_episodes=5", "--set", "train.bank_per_class=16",
            "--set", "train.inversion.steps=10"]
    assert main(args) == 0
    for f in ("config.yaml", "run.json", "metrics.jsonl", "results.json", "model.pt", "bank.pt",
              "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (out / f).exists(), f
    res = json.loads((out / "results.json").read_text())
    assert res["info"]["steps"] == 4 and res["info"]["inversion_cost"]["teacher_queries"] > 0
    mtime = (out / "results.json").stat().st_mtime
    assert main(args) == 0
    assert (out / "results.json").stat().st_mtime == mtime


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
