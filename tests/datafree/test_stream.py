"""The data-free stream: select -> invert -> memory -> mixed meta-batch -> reward, inside the trainer."""

import pytest
import torch

from dfml.data import EpisodeList
from dfml.data.toy import make_toy_world
from dfml.inversion import PixelInversionConfig, PixelInverter
from dfml.memory import MemoryConfig, MetaBatchMix, TaskMemory
from dfml.meta import MAML
from dfml.datafree import DataFreeStream, StreamConfig, TaskAugment, restrict_task
from dfml.inversion.base import Inverter
from dfml.datafree import MetaTrainer, TrainConfig
from dfml.models import build_model, use_batch_stats
from dfml.pool import build_toy_pool
from dfml.runs import RunDir
from dfml.selection import ReliabilityWeigher
from dfml.types import Task, TaskSource

CFG = TrainConfig(n_way=5, n_shot=1, n_query=3, meta_batch_size=3, steps=6, inner_steps=1, inner_lr=0.1,
                  outer_lr=1e-2, val_every=3, val_episodes=4, checkpoint_every=2)


@pytest.fixture(scope="module")
def world():
    return make_toy_world()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return build_toy_pool(tmp_path_factory.mktemp("pool"), n_models=4, seed=0)


def _setup(pool, world, run=None):
    torch.manual_seed(0)
    learner = MAML(use_batch_stats(build_model("mlp", in_features=32, num_classes=5)), inner_steps=1, inner_lr=0.1)
    stream = DataFreeStream(
        pool, PixelInverter((32,), PixelInversionConfig(steps=5)),
        StreamConfig(n_way=5, n_shot=1, n_query=3, meta_batch_size=3),
        selector=ReliabilityWeigher(len(pool), lr=0.1),
        memory=TaskMemory(MemoryConfig(capacity_per_class=8)),
        mix=MetaBatchMix(new=1, memory=1, interpolated=1),
        learner=learner,
    )
    eps = EpisodeList.generate(world["val"], CFG.val_episodes, 5, 1, 3, seed=1)
    trainer = MetaTrainer(learner.network, stream, lambda: eps.tasks(world["val"]), CFG, run=run, learner=learner)
    return trainer, stream


def test_first_batch_is_all_new_then_memory_and_interpolated_tasks_join(pool, world):
    trainer, stream = _setup(pool, world)
    g = torch.Generator().manual_seed(0)
    first = stream.next_batch(0, g)
    assert [t.source.kind for t in first] == ["synthetic"] * 3
    assert all(t.source.step == 0 and t.source.model_id is not None for t in first)
    for t in first:
        assert set(t.source.classes) == set(pool.entry(t.source.model_id).class_ids)
    assert stream.memory.num_classes >= 5
    second = stream.next_batch(1, g)
    assert [t.source.kind for t in second] == ["synthetic", "memory", "interpolated"]


def test_the_selector_is_rewarded_after_each_update_with_a_data_free_reward(pool, world, tmp_path):
    run = RunDir(tmp_path / "r", {"x": 1})
    trainer, stream = _setup(pool, world, run)
    trainer.fit()
    records = run.read_metrics()
    rewarded = [r for r in records if "reward" in r]
    assert len(rewarded) >= 4  # every step after the first has held-out tasks from other models
    assert all("selector/w/0" in r for r in rewarded)
    assert stream.selector.n_updates == len(rewarded)
    assert stream.cost["teacher_queries"] > 0


def test_a_resumed_run_reproduces_the_uninterrupted_one(pool, world, tmp_path):
    full, full_stream = _setup(pool, world, RunDir(tmp_path / "full", {"x": 1}))
    full.fit()

    class Kill(Exception):
        pass

    def kill_at_3(step, record):
        if step == 4:
            raise Kill

    with pytest.raises(Kill):
        _setup(pool, world, RunDir(tmp_path / "killed", {"x": 1}))[0].fit(kill_at_3)
    resumed, stream = _setup(pool, world, RunDir(tmp_path / "killed", {"x": 1}))
    resumed.fit()
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert torch.equal(full_stream.selector.weights(), stream.selector.weights())
    assert len(full_stream.memory) == len(stream.memory)


def test_restrict_task_keeps_the_chosen_labels_in_order():
    x = torch.arange(6.0).view(6, 1)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    t = Task(x, y, x, y, TaskSource(model_id=1, classes=(10, 11, 12)))
    sub = restrict_task(t, [2, 0])
    assert sub.support_x.view(-1).tolist() == [2.0, 5.0, 0.0, 3.0]
    assert sub.support_y.tolist() == [0, 0, 1, 1] and sub.source.classes == (12, 10)


def test_bad_parts_are_refused_with_the_fix(pool):
    inv = PixelInverter((32,))
    with pytest.raises(ValueError, match="no memory was given"):
        DataFreeStream(pool, inv, mix=MetaBatchMix(new=1, memory=1))
    with pytest.raises(ValueError, match="n_models=len\\(pool\\)"):
        DataFreeStream(pool, inv, selector=ReliabilityWeigher(len(pool) + 1))
    with pytest.raises(TypeError, match="invert"):
        DataFreeStream(pool, object())
    with pytest.raises(ValueError, match="stream.reward must be one of"):
        StreamConfig(reward="real")


class _Entry:
    def __init__(self, class_ids, dataset="d"):
        self.class_ids, self.dataset, self.arch, self.arch_kwargs = list(class_ids), dataset, "stub", {}


class _StubPool:
    """Three 'models' with overlapping classes; teacher k answers with fixed logits per input row."""

    def __init__(self, teachers, classes):
        self.teachers, self.entries = teachers, [_Entry(c) for c in classes]

    def __len__(self):
        return len(self.entries)

    def entry(self, i):
        return self.entries[i]

    def load(self, i, device=None):
        return self.teachers[i]


def test_agreement_reward_counts_what_other_models_advertising_the_class_say():
    # inputs are 2-d one-hot-ish rows; model 1 advertises classes (11, 12) and calls a row class 11
    # (its output 0) when x[0] > x[1]; model 2 advertises (13, 14): it cannot judge model 0.
    judge = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        judge.weight.copy_(torch.eye(2))
    pool = _StubPool([None, judge.eval(), judge.eval()], [(10, 11), (11, 12), (13, 14)])
    stream = DataFreeStream(pool, PixelInverter((2,)), StreamConfig(n_way=2, reward="agreement"))
    # model 0's task: label 1 is class 11; of its 4 images, 3 look like "output 0" to model 1
    x1 = torch.tensor([[1.0, 0.0], [2.0, 0.0], [1.0, 0.5], [0.0, 1.0]])
    x0 = torch.zeros(4, 2)
    task = Task(torch.cat([x0[:1], x1[:1]]), torch.tensor([0, 1]), torch.cat([x0[1:], x1[1:]]),
                torch.tensor([0, 0, 0, 1, 1, 1]), TaskSource(model_id=0, classes=(10, 11)))
    assert stream.agreement(0, task) == pytest.approx(3 / 4)
    assert stream.judge_queries == 4
    # nobody else advertises model 2's classes: no reward
    lonely = Task(x0[:2], torch.tensor([0, 1]), x0[2:], torch.tensor([0, 1]), TaskSource(model_id=2, classes=(13, 14)))
    assert stream.agreement(2, lonely) is None


def test_distrusted_models_are_not_stored_and_their_memory_is_forgotten(pool, world):
    from dataclasses import replace
    _, stream = _setup(pool, world)
    g = torch.Generator().manual_seed(0)
    stream.next_batch(0, g)
    stored_models = {int(m) for s in stream.memory.state_dict()["slots"] for m in s["model_id"][: s["count"]]}
    assert len(stored_models) == 3  # three new tasks, three models
    assert stream.distrusted() == []  # forget_below=0: nothing is ever distrusted
    stream.config = replace(stream.config, forget_below=0.5, reward="heldout")
    bad = min(stored_models)
    with torch.no_grad():
        stream.selector.logits.fill_(0.0)
        stream.selector.logits[bad] = -5.0
    assert stream.distrusted() == [bad]
    batch = stream.next_batch(1, g)
    out = stream.feedback(1, batch, {}, stream.learner)
    assert "reward" in out and out["memory/forgotten"] > 0
    models = {int(m) for s in stream.memory.state_dict()["slots"] for m in s["model_id"][: s["count"]]}
    assert bad not in models and models  # the distrusted model's examples are gone, the others' remain
    with pytest.raises(ValueError, match="forget_below"):
        StreamConfig(forget_below=1.5)


class _RecordingInverter(Inverter):
    """Pixel inversion that records how the stream called it (declared batched: it has invert_many)."""

    batched = True

    def __init__(self):
        self.inner = PixelInverter((32,), PixelInversionConfig(steps=1))
        self.cost = self.inner.cost
        self.calls = []

    def invert(self, teacher, n_shot, n_query, generator, *, model_id=None, classes=(), student=None):
        self.calls.append(("one", [model_id]))
        return self.inner.invert(teacher, n_shot, n_query, generator, model_id=model_id, classes=classes)

    def invert_many(self, teachers, n_shot, n_query, generator, model_ids, classes, generators=None):
        self.calls.append(("many", list(model_ids)))
        gens = generators or [generator] * len(teachers)
        return [self.inner.invert(t, n_shot, n_query, g, model_id=i, classes=c)
                for t, i, c, g in zip(teachers, model_ids, classes, gens)]


def test_batched_inversion_groups_models_by_architecture_and_keeps_their_order(world, tmp_path):
    from dfml.pool import PretrainConfig, pretrain_pool

    cfg = PretrainConfig(n_models=5, n_way=5, arch=({"name": "mlp", "hidden": [8]}, {"name": "mlp", "hidden": [12]}),
                         epochs=1, augment=False)
    mixed = pretrain_pool(world["train"], tmp_path / "mixed", cfg)
    inverter = _RecordingInverter()
    stream = DataFreeStream(mixed, inverter, StreamConfig(n_way=5, n_shot=1, n_query=1, meta_batch_size=5))
    tasks = stream.recover_many([0, 1, 2, 3, 4], 0, torch.Generator().manual_seed(0))
    assert inverter.calls == [("many", [0, 2, 4]), ("many", [1, 3])]
    assert [t.source.model_id for t in tasks] == [0, 1, 2, 3, 4]
    inverter.calls.clear()
    stream.recover_many([1, 2], 0, torch.Generator().manual_seed(0))
    assert inverter.calls == [("one", [1]), ("one", [2])]  # a single model per architecture: no batch


def test_domains_and_target_go_together(pool):
    from dfml.data import InputDomain

    with pytest.raises(ValueError, match="give domains= .* and target= .* together"):
        DataFreeStream(pool, PixelInverter((32,)), domains=[InputDomain((32,))] * len(pool))
    with pytest.raises(ValueError, match="domains has 1 entries but the pool has 4 models"):
        DataFreeStream(pool, PixelInverter((32,)), domains=[InputDomain((32,))], target=InputDomain((32,)))


def test_a_step_needing_more_new_tasks_than_a_group_has_draws_again(pool):
    from dfml.selection import GroupSelector

    far = torch.tensor([[0.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]])  # groups {0, 1} and {2, 3}
    selector = GroupSelector(4, far, 2)
    assert sorted(selector.groups) == [[0, 1], [2, 3]] and selector.max_select == 2
    stream = DataFreeStream(pool, PixelInverter((32,), PixelInversionConfig(steps=1)),
                            StreamConfig(n_way=5, n_shot=1, n_query=1, meta_batch_size=3), selector=selector)
    tasks = stream.next_batch(0, torch.Generator().manual_seed(0))  # raised "no group has n=3 models" before
    assert len(tasks) == 3


def _budgeted(pool, *, total=None, per_model=None, meta_batch_size=2):
    """A black-box stream that distils: a task costs at most 1 + 3 x 30 + 10 (probe, steps, scoring) + 10 (logits)."""
    from dfml.inversion import BlackBoxInversionConfig, BlackBoxInverter, BlackBoxPool

    inverter = BlackBoxInverter((32,), BlackBoxInversionConfig(steps=3, q=2, on_budget="stop", width=8, nz=8))
    access = BlackBoxPool("logits", per_model=per_model, total=total)
    stream = DataFreeStream(pool, inverter, StreamConfig(n_way=5, n_shot=1, n_query=1, meta_batch_size=meta_batch_size,
                                                         reward="none"), teacher_logits=True, access=access)
    return stream, access


def test_a_model_whose_allowance_cannot_fund_another_task_leaves_selection(pool):
    from dfml.datafree import StreamExhausted

    stream, access = _budgeted(pool, per_model=151)  # one full task (111) leaves 40, under the 41 a task needs
    g = torch.Generator().manual_seed(0)
    first, second = stream.next_batch(0, g), stream.next_batch(1, g)
    ids = [t.source.model_id for t in first + second]
    assert sorted(ids) == [0, 1, 2, 3]  # each model once: a spent model is not drawn again
    assert all(t.source.extra["teacher_query_logits"].shape == (5, 5) for t in first + second)
    assert all(b.spent == 111 for b in access.budgets.values())  # the logits were paid from what the inversion left
    with pytest.raises(StreamExhausted, match=r"cannot fund another task: one costs at least 41 queries .*"
                                              r"no model's own budget \(datafree\.access\.per_model\) has that many"):
        stream.next_batch(2, g)


def test_a_total_budget_that_runs_out_mid_step_shortens_the_step_then_ends_the_stream(pool):
    from dfml.datafree import StreamExhausted

    stream, access = _budgeted(pool, total=150)
    g = torch.Generator().manual_seed(0)
    assert len(stream.next_batch(0, g)) == 1 and access.spent == 111  # the second task could not be funded
    with pytest.raises(StreamExhausted, match=r"pool's total budget \(datafree\.access\.total\) has 39 of 150 left"):
        stream.next_batch(1, g)
    assert access.spent == 111


def test_a_judge_whose_query_budget_cannot_pay_does_not_judge(pool):
    stream, access = _budgeted(pool, per_model=1000)
    task = stream.recover_many([2], 0, torch.Generator().manual_seed(0))[0]
    assert stream.agreement(2, task) is not None and stream.judge_queries > 0  # model 3 also advertises class 54
    judged, spent = stream.judge_queries, access.budgets[2].spent
    stream.teacher(3)
    access.budgets[3].spent = 1000 - 1  # one query left: not enough to judge a class
    assert stream.agreement(2, task) is None and stream.judge_queries == judged
    assert access.budgets[3].spent == 999 and access.budgets[2].spent == spent


def _image_task(n: int = 6, size: int = 8) -> Task:
    x = torch.arange(n * 3 * size * size, dtype=torch.float32).reshape(n, 3, size, size) + 1.0
    y = torch.arange(n) % 3
    return Task(x, y, x.clone() + 1000, y.clone())


def test_task_augment_flips_some_images_and_keeps_labels_and_shapes():
    task = _image_task(n=32)
    out = TaskAugment(flip=True)(task, torch.Generator().manual_seed(0))
    flipped = [torch.equal(a, b.flip(-1)) for a, b in zip(out.support_x, task.support_x)]
    kept = [torch.equal(a, b) for a, b in zip(out.support_x, task.support_x)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
    assert torch.equal(out.support_y, task.support_y) and torch.equal(out.query_y, task.query_y)


def test_task_augment_crops_a_window_of_the_zero_padded_image():
    task = _image_task(n=16)
    out = TaskAugment(pad=2)(task, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(task.query_x, (2, 2, 2, 2))
    for a, p in zip(out.query_x, padded):
        windows = [p[:, i:i + 8, j:j + 8] for i in range(5) for j in range(5)]
        assert any(torch.equal(a, w) for w in windows)
    assert not torch.equal(out.query_x, task.query_x)  # 16 images all drawing the centre: ~1e-22
    again = TaskAugment(pad=2)(task, torch.Generator().manual_seed(1))
    assert torch.equal(again.query_x, out.query_x)  # the step's generator decides


def test_task_augment_leaves_vectors_and_an_inactive_setting_alone():
    task = Task(torch.randn(5, 32), torch.arange(5), torch.randn(5, 32), torch.arange(5))
    assert TaskAugment(pad=4, flip=True)(task, torch.Generator()) is task
    image = _image_task()
    assert TaskAugment()(image, torch.Generator()) is image
    with pytest.raises(ValueError, match="task_augment.pad must be an integer >= 0, got -1"):
        TaskAugment(pad=-1)


def test_an_augmenting_stream_stores_the_recovered_images_and_augments_what_it_hands_out(tmp_path):
    from dfml.pool import PretrainConfig, pretrain_pool

    from ..pool.conftest import fake_images

    images = fake_images(n_classes=6, per_class=6, size=16)
    pool = pretrain_pool(images, tmp_path / "pool", PretrainConfig(
        n_models=2, n_way=3, arch="conv4", arch_kwargs={"hidden": 4}, epochs=1, batch_size=8))

    def stream(augment):
        return DataFreeStream(pool, PixelInverter((3, 16, 16), PixelInversionConfig(steps=2)),
                              StreamConfig(n_way=3, n_shot=1, n_query=2, meta_batch_size=2, reward="none",
                                           augment=augment),
                              memory=TaskMemory(MemoryConfig(capacity_per_class=8)), mix=MetaBatchMix(new=1, memory=1))

    plain, augmented = stream(TaskAugment()), stream(TaskAugment(pad=2, flip=True))
    a = plain.next_batch(0, torch.Generator().manual_seed(0))
    b = augmented.next_batch(0, torch.Generator().manual_seed(0))
    assert all(torch.equal(x.support_y, y.support_y) for x, y in zip(a, b))
    assert not all(torch.equal(x.query_x, y.query_x) for x, y in zip(a, b))
    assert plain.memory.state_dict()["keys"] == augmented.memory.state_dict()["keys"]
    for s, t in zip(plain.memory.state_dict()["slots"], augmented.memory.state_dict()["slots"]):
        assert torch.equal(s["x"], t["x"])  # the memory keeps the images as recovered


def test_task_augmentation_is_refused_with_the_distilling_learner():
    from dfml.recipes.datafree import DataFreeConfig

    with pytest.raises(ValueError, match=r"datafree.task_augment crops/flips .* learner=distill .*"
                                         r"set datafree.task_augment.pad=0 and flip=false"):
        DataFreeConfig(learner="distill", task_augment=TaskAugment(flip=True))


def test_replay_steps_serve_memory_tasks_only_and_recover_nothing(pool, world):
    def stream(replay):
        return DataFreeStream(pool, PixelInverter((32,), PixelInversionConfig(steps=2)),
                              StreamConfig(n_way=5, n_shot=1, n_query=3, meta_batch_size=3, reward="none",
                                           replay=replay),
                              memory=TaskMemory(MemoryConfig(capacity_per_class=8)), mix=MetaBatchMix(new=1, memory=1))

    s = stream(2)
    g = torch.Generator().manual_seed(0)
    kinds = [[t.source.kind for t in s.next_batch(step, g)] for step in range(6)]
    assert kinds[0] == ["synthetic"] * 3  # the memory is empty: recover
    assert kinds[1] == kinds[2] == kinds[4] == kinds[5] == ["memory"] * 3
    assert "synthetic" in kinds[3]
    plain = stream(0)
    g = torch.Generator().manual_seed(0)
    for step in range(2):
        plain.next_batch(step, g)
    assert s.cost["teacher_queries"] == plain.cost["teacher_queries"] > 0  # six steps recovered as often as two
    with pytest.raises(ValueError, match="stream.replay must be an integer >= 0, got -1"):
        StreamConfig(replay=-1)


def test_replay_without_a_memory_to_replay_is_refused_with_the_fix():
    from dfml.recipes.datafree import DataFreeConfig

    with pytest.raises(ValueError, match=r"datafree.replay=2 replays memory tasks, but the memory serves none .*"
                                         r"set datafree.memory=true and datafree.mix.memory=1, or datafree.replay=0"):
        DataFreeConfig(replay=2)


class _LabelEcho(Inverter):
    """Every input holds the teacher output it was recovered for (labels in teacher output order)."""

    def invert(self, teacher, n_shot, n_query, generator, *, model_id=None, classes=(), student=None):
        from dfml.inversion.base import split_task

        k = len(classes)
        x = torch.arange(k, dtype=torch.float32).repeat_interleave(n_shot + n_query)[:, None].expand(-1, 32)
        return split_task(x.contiguous(), k, n_shot, n_query, model_id=model_id, classes=classes)


def test_shuffled_labels_give_a_five_class_teacher_a_new_label_order_per_task_and_keep_classes_true(pool):
    entry = pool.entry(0)
    assert len(entry.class_ids) == 5  # as many classes as n_way: restricting alone leaves the teacher's order
    orders = {}
    for shuffle in (False, True):
        stream = DataFreeStream(pool, _LabelEcho((32,)), StreamConfig(n_way=5, n_shot=1, n_query=2, shuffle_labels=shuffle),
                                teacher_logits=True)
        g = torch.Generator().manual_seed(0)
        tasks = [stream.recover(0, step, g) for step in range(8)]
        orders[shuffle] = {t.source.classes for t in tasks}
        for t in tasks:
            columns = [entry.class_ids.index(c) for c in t.source.classes]  # the teacher output of each label
            for x, y, split in ((t.support_x, t.support_y, "support"), (t.query_x, t.query_y, "query")):
                assert x[:, 0].long().tolist() == [columns[int(c)] for c in y]
                assert torch.equal(t.source.extra[f"teacher_{split}_logits"], stream.teacher(0)(x)[:, columns])
    assert orders[False] == {tuple(entry.class_ids)}
    assert len(orders[True]) > 1
