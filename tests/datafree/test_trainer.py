"""The pseudo-task MAML trainer: bank sampling, exact resume, meta-val selection."""

from dataclasses import replace

import pytest
import torch

from dfml.data import EpisodeList
from dfml.data.toy import make_toy_world
from dfml.inversion import PixelInversionConfig
from dfml.datafree import BankStream, StreamExhausted
from dfml.datafree import MetaTrainer, SyntheticBank, TrainConfig, build_bank, check_bank
from dfml.datafree.config import SyntheticBankConfig
from dfml.models import build_model, use_batch_stats
from dfml.pool import build_toy_pool
from dfml.runs import RunDir

CFG = TrainConfig(
    n_way=5, n_shot=1, n_query=5, meta_batch_size=2, steps=6, inner_steps=2, inner_lr=0.1,
    outer_lr=1e-2, val_every=3, val_episodes=5, checkpoint_every=2,
)


@pytest.fixture(scope="module")
def world():
    return make_toy_world()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return build_toy_pool(tmp_path_factory.mktemp("pool"), n_models=3, seed=0)


@pytest.fixture(scope="module")
def bank(pool):
    teachers = [(pool.load(i), tuple(pool.entry(i).class_ids)) for i in range(len(pool))]
    return build_bank(teachers, (32,), 8, PixelInversionConfig(steps=20), torch.Generator().manual_seed(0))


def _trainer(bank, world, run=None, cfg=CFG, **kwargs):
    torch.manual_seed(0)
    model = use_batch_stats(build_model("mlp", in_features=32, num_classes=5))
    eps = EpisodeList.generate(world["val"], cfg.val_episodes, 5, 1, 5, seed=1)
    return MetaTrainer(model, bank, lambda: eps.tasks(world["val"]), cfg, run=run, **kwargs)


def test_bank_holds_every_class_of_every_model_and_tasks_carry_provenance(bank, pool):
    assert len(bank.x) == 3 and bank.x[0].shape == (5, 8, 32)
    task = bank.sample_task(5, 1, 5, torch.Generator().manual_seed(0), step=4)
    assert task.support_x.shape == (5, 32) and task.query_x.shape == (25, 32)
    assert set(task.source.classes) == set(pool.entry(task.source.model_id).class_ids)
    assert task.source.step == 4 and task.source.kind == "synthetic"
    assert bank.cost["teacher_queries"] > 0 and bank.cost["images"] == 3 * 5 * 8


def test_bank_state_round_trip(bank):
    again = SyntheticBank.from_state_dict(bank.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(again.x, bank.x)) and again.class_ids == bank.class_ids


def test_resumed_run_reproduces_the_uninterrupted_one(bank, world, tmp_path):
    full = _trainer(bank, world, RunDir(tmp_path / "full", {"x": 1}))
    full.fit()

    class Kill(Exception):
        pass

    def kill_at_4(step, record):
        if step == 4:
            raise Kill

    run = RunDir(tmp_path / "killed", {"x": 1})
    with pytest.raises(Kill):
        _trainer(bank, world, run).fit(kill_at_4)
    # the kill came after step 4's checkpoint; a fresh process picks up from it
    resumed = _trainer(bank, world, RunDir(tmp_path / "killed", {"x": 1}))
    resumed.fit()
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    steps = [r["step"] for r in RunDir(tmp_path / "killed", {"x": 1}).read_metrics()]
    assert steps == list(range(1, 7))
    assert full.best["step"] == resumed.best["step"]


def test_best_model_is_selected_on_meta_validation(bank, world):
    t = _trainer(bank, world)
    out = t.fit()
    assert out["best_step"] in (3, 6) and out["steps"] == 6
    assert out["best_val_acc"] == pytest.approx(t.validate())


def test_config_checks_name_the_field():
    with pytest.raises(ValueError, match="datafree.synthetic.per_class=4 is smaller than n_shot \\+ n_query = 16"):
        check_bank(replace(CFG, n_query=15), SyntheticBankConfig(per_class=4))  # maml's check of its bank
    with pytest.raises(ValueError, match="train.steps must be >= 1"):
        replace(CFG, steps=0)


class CountingStream:
    """A task stream with state of its own: it counts batches and logs a made-up reward."""

    def __init__(self, bank):
        self.bank, self.served, self.feedback_steps = bank, 0, []

    def next_batch(self, step, generator):
        self.served += 1
        return [self.bank.sample_task(5, 1, 5, generator, step) for _ in range(2)]

    def feedback(self, step, tasks, metrics, learner):
        self.feedback_steps.append(step)
        return {"reward": float(self.served)}

    def state_dict(self):
        return {"served": self.served}

    def load_state_dict(self, state):
        self.served = state["served"]


def test_a_task_stream_and_a_meta_update_plug_into_the_loop_and_resume(bank, world, tmp_path):
    calls = []

    def update(learner, tasks, optimizer):
        calls.append(len(tasks))
        return learner.meta_step(tasks, optimizer)

    torch.manual_seed(0)
    model = use_batch_stats(build_model("mlp", in_features=32, num_classes=5))
    eps = EpisodeList.generate(world["val"], CFG.val_episodes, 5, 1, 5, seed=1)
    stream = CountingStream(bank)
    run = RunDir(tmp_path / "stream", {"x": 2})
    trainer = MetaTrainer(model, stream, lambda: eps.tasks(world["val"]), CFG, run=run, update=update)
    trainer.fit()
    assert calls == [2] * 6 and stream.feedback_steps == list(range(6))
    records = run.read_metrics()
    assert [r["reward"] for r in records] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    # the stream's state is in the checkpoint: a new stream picks it up on resume
    again = CountingStream(bank)
    MetaTrainer(use_batch_stats(build_model("mlp", in_features=32, num_classes=5)), again,
                lambda: eps.tasks(world["val"]), CFG, run=RunDir(tmp_path / "stream", {"x": 2})).fit()
    assert again.served == 6


class _Clock:
    """A stand-in for the trainer's ``time`` module: every wall-clock reading is ``minutes`` later than
    the last, every CPU-time reading ``cpu_minutes`` later."""

    def __init__(self, minutes=0.0, cpu_minutes=0.0):
        self.now, self.minutes = 0.0, minutes
        self.cpu, self.cpu_minutes = 0.0, cpu_minutes

    def monotonic(self):
        self.now += 60.0 * self.minutes
        return self.now

    def perf_counter(self):
        return self.now

    def process_time(self):
        self.cpu += 60.0 * self.cpu_minutes
        return self.cpu


def test_a_checkpoint_also_comes_after_train_checkpoint_minutes_and_resume_stays_exact(bank, world, tmp_path,
                                                                                       monkeypatch):
    import dfml.datafree.trainer as trainer_module

    cfg = replace(CFG, checkpoint_every=100, checkpoint_minutes=10.0)
    full = _trainer(bank, world, RunDir(tmp_path / "full", {"x": 1}), cfg)
    full.fit()

    saved = []
    monkeypatch.setattr(trainer_module, "time", _Clock(minutes=6.0))  # every step takes 6 minutes
    run = RunDir(tmp_path / "killed", {"x": 1})
    real_save = run.save_checkpoint
    monkeypatch.setattr(run, "save_checkpoint", lambda state, name="last": saved.append(state["step"]) or
                        real_save(state, name))

    class Kill(Exception):
        pass

    def kill_at_5(step, record):
        if step == 5:
            raise Kill

    with pytest.raises(Kill):
        _trainer(bank, world, run, cfg).fit(kill_at_5)
    assert saved == [2, 4]  # 12 minutes after the start, and after the last checkpoint (not every 100 steps)
    monkeypatch.undo()
    resumed = _trainer(bank, world, RunDir(tmp_path / "killed", {"x": 1}), cfg)
    resumed.fit()
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert [r["step"] for r in RunDir(tmp_path / "killed", {"x": 1}).read_metrics()] == list(range(1, 7))


def test_a_run_killed_before_its_first_checkpoint_logs_each_step_once(bank, world, tmp_path):
    cfg = replace(CFG, checkpoint_every=100)

    class Kill(Exception):
        pass

    def kill_at_2(step, record):
        if step == 2:
            raise Kill

    with pytest.raises(Kill):
        _trainer(bank, world, RunDir(tmp_path / "r", {"x": 1}), cfg).fit(kill_at_2)
    _trainer(bank, world, RunDir(tmp_path / "r", {"x": 1}), cfg).fit()
    assert [r["step"] for r in RunDir(tmp_path / "r", {"x": 1}).read_metrics()] == list(range(1, 7))


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), "10"])
def test_checkpoint_minutes_must_be_a_positive_number(bad):
    with pytest.raises(ValueError, match=f"train.checkpoint_minutes must be a number of minutes > 0, got {bad!r}"):
        replace(CFG, checkpoint_minutes=bad)


def test_a_diverged_meta_validation_fine_tune_names_eval_val_lr(bank, world):
    t = _trainer(bank, world, cfg=replace(CFG, steps=1, val_every=1), val_lr=1e30)
    with pytest.raises(FloatingPointError, match=r"fine-tuning diverged: .* lower eval\.val_lr .*\(now 1e\+30\)"):
        t.fit()  # every meta-validation score was chance (20.0), so selection picked an arbitrary step


class _EndsAt(BankStream):
    """A bank stream that can make no meta-batch from step ``end`` on (like a spent query budget)."""

    def __init__(self, bank, end: int) -> None:
        super().__init__(bank, 5, 1, 5, 2)
        self.end, self.asked = end, []

    def next_batch(self, step, generator):
        self.asked.append(step)
        if step >= self.end:
            raise StreamExhausted("the query budgets cannot fund another task")
        return super().next_batch(step, generator)


def test_an_exhausted_stream_ends_training_early_selects_and_a_resume_does_nothing_more(bank, world, tmp_path):
    cfg = replace(CFG, steps=6, val_every=3, checkpoint_every=100)
    run = RunDir(tmp_path / "r", {"x": 1})
    t = _trainer(bank, world, run=run, cfg=cfg)
    t.stream = _EndsAt(bank, 4)
    out = t.fit()
    assert out["steps"] == 4
    assert out["stopped_early"] == {"step": 4, "reason": "the query budgets cannot fund another task",
                                    "kind": "stream"}
    records = run.read_metrics()
    assert [r["step"] for r in records if "val_acc" in r] == [3, 4]  # the step it stopped at is validated too
    assert out["best_step"] in (3, 4) and out["best_val_acc"] == max(r["val_acc"] for r in records if "val_acc" in r)
    again = _trainer(bank, world, run=RunDir(tmp_path / "r", {"x": 1}), cfg=cfg)
    again.stream = _EndsAt(bank, 4)
    assert again.fit() | {"seconds": 0} == out | {"seconds": 0}
    assert again.stream.asked == [] and run.read_metrics() == records


def test_a_stream_exhausted_before_the_first_step_is_an_error(bank, world):
    t = _trainer(bank, world)
    t.stream = _EndsAt(bank, 0)
    with pytest.raises(RuntimeError, match="meta-training cannot take its first step: the query budgets cannot fund"):
        t.fit()


def test_a_cpu_budget_ends_training_validates_the_step_reached_and_survives_a_resume(bank, world, tmp_path,
                                                                                    monkeypatch):
    import dfml.datafree.trainer as trainer_module

    # each step reads the CPU clock twice (start, end): 1 minute per reading -> 1 minute per step
    monkeypatch.setattr(trainer_module, "time", _Clock(cpu_minutes=1.0))
    cfg = replace(CFG, steps=100, val_every=50, budget_minutes=3.5)
    run = RunDir(tmp_path / "budget", {"x": 1})
    trainer = _trainer(bank, world, run, cfg)
    out = trainer.fit()
    assert out["steps"] == 4 and out["stopped_early"]["step"] == 4
    assert "train.budget_minutes" in out["stopped_early"]["reason"]
    records = run.read_metrics()
    assert [r["cpu_s"] for r in records if "cpu_s" in r] == [60.0, 120.0, 180.0, 240.0]
    assert out["best_step"] == 4 and records[-1]["val_acc"] == out["best_val_acc"]  # the step reached is validated
    again = _trainer(bank, world, RunDir(tmp_path / "budget", {"x": 1}), cfg)
    again_out = again.fit()  # the stop is checkpointed: nothing more is done
    assert again_out["steps"] == 4 and RunDir(tmp_path / "budget", {"x": 1}).read_metrics() == records


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), True])
def test_budget_minutes_must_be_a_positive_number_or_null(bad):
    with pytest.raises(ValueError, match="train.budget_minutes must be a number of CPU minutes > 0"):
        replace(CFG, budget_minutes=bad)


def test_a_larger_budget_goes_on_from_the_budget_stop_as_the_longer_run_would_have(bank, world, tmp_path,
                                                                                   monkeypatch):
    import dfml.datafree.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "time", _Clock(cpu_minutes=1.0))
    short, long = replace(CFG, steps=100, val_every=50, budget_minutes=3.5), replace(CFG, steps=100, val_every=50,
                                                                                     budget_minutes=6.5)
    _trainer(bank, world, RunDir(tmp_path / "ext", {"x": 1}), short).fit()
    extended = _trainer(bank, world, RunDir(tmp_path / "ext", {"x": 1}), long)
    out = extended.fit()
    monkeypatch.setattr(trainer_module, "time", _Clock(cpu_minutes=1.0))
    straight = _trainer(bank, world, RunDir(tmp_path / "straight", {"x": 1}), long)
    straight_out = straight.fit()
    assert out["steps"] == straight_out["steps"] == 7 and out["stopped_early"]["step"] == 7
    assert out["stopped_early"]["kind"] == "budget"
    ext_state = RunDir(tmp_path / "ext", {"x": 1}).load_checkpoint()["learner"]
    straight_state = RunDir(tmp_path / "straight", {"x": 1}).load_checkpoint()["learner"]
    assert all(torch.equal(ext_state[k], straight_state[k]) for k in straight_state)
    steps = [r["step"] for r in RunDir(tmp_path / "ext", {"x": 1}).read_metrics() if "val_acc" in r]
    assert steps == [4, 7]  # the first stop was validated, then the longer run's


def test_a_stop_on_an_exhausted_stream_is_not_lifted_by_a_larger_budget(bank, world, tmp_path):
    cfg = replace(CFG, steps=6, budget_minutes=100.0)
    t = _trainer(bank, world, RunDir(tmp_path / "r", {"x": 1}), cfg)
    t.stream = _EndsAt(bank, 4)
    assert t.fit()["steps"] == 4
    again = _trainer(bank, world, RunDir(tmp_path / "r", {"x": 1}), replace(cfg, budget_minutes=200.0))
    again.stream = _EndsAt(bank, 100)
    out = again.fit()
    assert out["steps"] == 4 and out["stopped_early"]["kind"] == "stream" and again.stream.asked == []
