"""Recipes on heterogeneous pools: several architectures, several datasets, several input sizes.

Toy MLP pools whose models differ in width and depth (different architectures); two toy worlds
whose pools share class ids (two datasets); and tiny image pools at 16x16 and 24x24 (two input
domains: models are inverted at their own size and the images resized to the meta-model's).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dfml.data import EpisodeList, InputDomain
from dfml.data.toy import make_toy_world
from dfml.experiment import experiment_config, run_experiment
from dfml.inversion import DomainInverters, GeneratorInversionConfig
from dfml.inversion.batched import model_generators
from dfml.inversion.sharded import cost_parts, is_stateless
from dfml.datafree import DataFreeStream, StreamConfig
from dfml.datafree import TrainConfig
from dfml.pool import PretrainConfig, merge_pools, pretrain_pool
from dfml.recipes import RecipeContext, train_datafree
from dfml.recipes.datafree import DataFreeConfig, build_inverter
from dfml.runs import RunDir

from ..pool.conftest import fake_images
from .test_paper_recipes import TINY as PAPER_TINY

TOY = PretrainConfig(n_models=4, n_way=5, arch=({"name": "mlp", "hidden": [32]}, {"name": "mlp", "hidden": [64, 64]}),
                     epochs=3, batch_size=64, lr=3e-3, weight_decay=0.0, augment=False, seed=0)

# the paper-recipe tests' tiny settings, with a meta-model of its own (the pool has two architectures);
# maml's bank in the earlier train.* fields, which dfml.upgrade moves (tests/test_upgrade.py)
TINY = {**PAPER_TINY, "train": {**PAPER_TINY["train"], "bank_per_class": 4, "inversion": {"steps": 3},
                                "meta_arch": "mlp", "meta_arch_kwargs": {"hidden": [64, 64]}}}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    return pretrain_pool(make_toy_world()["train"], tmp_path_factory.mktemp("mixed"), TOY)


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("two")
    cfg = dataclasses.replace(TOY, arch="mlp", arch_kwargs={"hidden": [64, 64]}, n_models=3)
    a = pretrain_pool(make_toy_world()["train"], root / "a", cfg)
    b = pretrain_pool(make_toy_world(seed=1, name="toy_b")["train"], root / "b", cfg)
    assert [e.class_ids for e in a] == [e.class_ids for e in b]  # the same ids, two datasets
    return merge_pools([a, b], root / "ab")


class Kill(Exception):
    pass


def _kill_at_3(stage, i, n, info):
    if stage == "train" and i == 3:
        raise Kill


def _same_weights(a, b):
    sa = torch.load(a / "model.pt", weights_only=True)
    sb = torch.load(b / "model.pt", weights_only=True)
    return all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------- architectures
@pytest.mark.parametrize("recipe", ["robust", "free", "tgr", "purer"])
def test_a_mixed_architecture_pool_trains_and_resumes(recipe, mixed, tmp_path):
    assert len({e.architecture_key for e in mixed}) == 2
    cfg = experiment_config(recipe, TINY, {"pool": str(mixed.root)})
    full = run_experiment(cfg, tmp_path / "full")
    assert full["info"]["steps"] == 4 and full["info"]["inversion_cost"]["teacher_queries"] > 0
    assert full["info"]["meta_model"]["arch_kwargs"]["hidden"] == [64, 64]
    assert full["info"]["pool"]["architectures"] == ["mlp(hidden=[32])", "mlp(hidden=[64, 64])"]
    with pytest.raises(Kill):
        run_experiment(cfg, tmp_path / "killed", progress=_kill_at_3)
    resumed = run_experiment(cfg, tmp_path / "killed")
    assert _same_weights(tmp_path / "full", tmp_path / "killed")
    assert resumed["scores"]["5way_1shot"]["per_episode"] == full["scores"]["5way_1shot"]["per_episode"]


@pytest.mark.parametrize("recipe", ["maml", "bidf_mkd", "random"])
def test_the_other_recipes_run_on_a_mixed_pool(recipe, mixed, tmp_path):
    res = run_experiment(experiment_config(recipe, TINY, {"pool": str(mixed.root)}), tmp_path / recipe)
    assert 0 <= res["scores"]["5way_1shot"]["mean"] <= 100


def test_the_meta_model_of_a_mixed_pool_must_be_named(mixed, tmp_path):
    train = {k: v for k, v in TINY["train"].items() if not k.startswith("meta_arch")}
    cfg = experiment_config("robust", {**TINY, "train": train}, {"pool": str(mixed.root)})
    with pytest.raises(ValueError, match=r"holds 2 architectures \(mlp\(hidden=\[32\]\); mlp\(hidden=\[64, 64\]\)\).*"
                                         r"set train.meta_arch \(e.g. --set train.meta_arch=conv4"):
        run_experiment(cfg, tmp_path / "x")


def test_the_meta_model_may_differ_from_every_teacher(mixed, tmp_path):
    cfg = experiment_config("free", TINY, {"pool": str(mixed.root), "train": {"meta_arch_kwargs": {"hidden": [16]}}})
    res = run_experiment(cfg, tmp_path / "x")
    assert res["info"]["meta_model"] == {"arch": "mlp", "arch_kwargs": {"hidden": [16], "in_features": 32,
                                                                         "num_classes": 5}}


def test_average_averages_the_models_of_the_meta_model_s_architecture_only(mixed, tmp_path):
    res = run_experiment(experiment_config("average", TINY, {"pool": str(mixed.root)}), tmp_path / "a")
    assert res["info"]["average"]["models"] == [1, 3]  # architectures are dealt round robin
    assert res["info"]["average"]["averaged"] == 2 and res["info"]["average"]["pool_size"] == 4
    other = experiment_config("average", TINY, {"pool": str(mixed.root),
                                                "train": {"meta_arch_kwargs": {"hidden": [7]}}})
    with pytest.raises(ValueError, match=r"no pool model has the meta-model's architecture mlp\(hidden=\[7\]\).*"
                                         r"Set train.meta_arch"):
        run_experiment(other, tmp_path / "b")


def test_meta_model_options_are_checked():
    with pytest.raises(ValueError, match="train.meta_arch='vgg' is not an architecture"):
        TrainConfig(meta_arch="vgg")
    with pytest.raises(ValueError, match="name the architecture too"):
        TrainConfig(meta_arch_kwargs={"hidden": [4]})
    with pytest.raises(ValueError, match=r"sets \['image_size'\], which follow from the meta-model's inputs"):
        TrainConfig(meta_arch="conv4", meta_arch_kwargs={"image_size": 84})


# -------------------------------------------------------------------------- datasets
def test_two_datasets_with_the_same_class_ids_keep_their_classes_apart(two_datasets, tmp_path):
    cfg = experiment_config("robust", TINY, {"pool": str(two_datasets.root),
                                            "train": {"steps": 6, "meta_batch_size": 6, "checkpoint_every": 6}})
    res = run_experiment(cfg, tmp_path / "r")
    assert res["info"]["pool"]["datasets"] == ["toy", "toy_b"]
    keys = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)["stream"]["memory"]["keys"]
    by_id: dict[int, set] = {}
    for dataset, cid in keys:
        by_id.setdefault(int(cid), set()).add(dataset)
    assert any(d == {"toy", "toy_b"} for d in by_id.values())  # one id, two classes, two memory slots
    assert len(keys) == len({tuple(k) for k in keys})


def test_bank_tasks_carry_their_dataset(two_datasets, tmp_path):
    run_experiment(experiment_config("maml", TINY, {"pool": str(two_datasets.root)}), tmp_path / "m")
    bank = torch.load(tmp_path / "m" / "bank.pt", weights_only=True)
    assert bank["datasets"] == ["toy"] * 3 + ["toy_b"] * 3


# --------------------------------------------------------------------- input domains
@pytest.fixture(scope="module")
def two_sizes(tmp_path_factory):
    root = tmp_path_factory.mktemp("sizes")
    cfg = PretrainConfig(n_models=2, n_way=2, arch="conv4", arch_kwargs={"hidden": 4}, epochs=1, batch_size=8)
    small = fake_images(n_classes=4, per_class=8, size=16, name="small/train")
    big = fake_images(n_classes=4, per_class=8, size=24, seed=1, name="big/train")
    pool = merge_pools([pretrain_pool(small, root / "s", cfg), pretrain_pool(big, root / "b", cfg)], root / "sb")
    return pool, fake_images(n_classes=3, per_class=8, size=16, seed=2, name="small/val")


def _context(pool, val, run=None, progress=None, **train):
    tr = TrainConfig(n_way=2, n_shot=1, n_query=2, meta_batch_size=2, steps=4, inner_steps=1, inner_lr=0.1,
                     val_every=2, val_episodes=6, checkpoint_every=1, **train)
    # 6 episodes of 2 queries per class: on 2 (4 queries) a 2-step model answering one class was "degenerate"
    eps = EpisodeList.generate(val, 6, 2, 1, 2, seed=0)
    domain = InputDomain.of_dataset(val)
    return RecipeContext(pool=pool, train=tr, input_shape=domain.shape, val_tasks=lambda: eps.tasks(val), run=run,
                         progress=progress, input_mean=domain.mean, input_std=domain.std, dataset_domain=domain)


SMALL = {"pixel": {"steps": 2}, "bank": {"per_class": 4, "steps": 1}, "generator": {"steps": 2, "width": 8, "nz": 8},
         "metagen": {"inner": {"steps": 1, "width": 8, "nz": 8}}, "blackbox": {"steps": 1, "q": 2, "width": 8, "nz": 8}}


@pytest.mark.parametrize("recipe", ["robust", "purer", "free", "tgr", "bidf_mkd"])
def test_models_of_two_input_sizes_are_inverted_at_their_own_and_resumed(recipe, two_sizes, tmp_path):
    pool, val = two_sizes
    cfg = experiment_config(recipe, {"datafree": SMALL}).datafree
    ctx = _context(pool, val)
    assert isinstance(build_inverter(cfg, ctx), DomainInverters)
    full = train_datafree(_context(pool, val, RunDir(tmp_path / "full", {"x": 1})), cfg)
    with pytest.raises(Kill):
        train_datafree(_context(pool, val, RunDir(tmp_path / "killed", {"x": 1}), _kill_at_3), cfg)
    resumed = train_datafree(_context(pool, val, RunDir(tmp_path / "killed", {"x": 1})), cfg)
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), (recipe, k)


def test_every_task_reaches_the_meta_model_at_its_input_size(two_sizes):
    pool, val = two_sizes
    ctx = _context(pool, val, meta_image_size=None)
    cfg = DataFreeConfig(inverter="pixel", pixel=experiment_config("robust", {"datafree": SMALL}).datafree.pixel)
    inverter = build_inverter(cfg, ctx)
    assert [d.shape for d in inverter.inverters] == [(3, 16, 16), (3, 24, 24)]
    stream = DataFreeStream(pool, inverter, StreamConfig(n_way=2, n_shot=1, n_query=2, meta_batch_size=4),
                            domains=ctx.teacher_domains(), target=ctx.meta_domain)
    tasks = stream.next_batch(0, torch.Generator().manual_seed(0))
    assert all(t.support_x.shape[1:] == (3, 16, 16) for t in tasks)
    big = [t for t in tasks if t.source.model_id in (2, 3)]
    assert big and all(t.source.extra["input_domain"]["shape"] == [3, 24, 24] for t in big)
    assert {t.source.extra["dataset"] for t in tasks} <= {"small", "big"}


def test_the_meta_model_input_size_is_a_choice(two_sizes, tmp_path):
    pool, val = two_sizes
    ctx = _context(pool, val, meta_image_size=24)
    ctx = dataclasses.replace(ctx, input_shape=(3, 24, 24))
    assert ctx.meta_architecture()[1]["image_size"] == 24
    assert ctx.meta_domain.shape == (3, 24, 24) and ctx.domain_of(0).shape == (3, 16, 16)


def test_inverters_of_several_domains_shard_when_every_part_keeps_no_state(two_sizes):
    """Under torchrun a stateless inverter inverts each model with its own generator on some rank; a
    mixed-domain wrapper must say it is stateless, pass the per-model generators on and let its
    parts' costs be synchronised (its own ``cost`` is a sum made on request)."""
    pool, val = two_sizes
    ctx = _context(pool, val)
    gen = build_inverter(DataFreeConfig(inverter="generator", generator=GeneratorInversionConfig(steps=2, width=8, nz=8)),
                         ctx)
    assert isinstance(gen, DomainInverters) and is_stateless(gen)
    assert cost_parts(gen) == [p.cost for p in gen.parts] and len(gen.parts) == 2
    assert not is_stateless(build_inverter(DataFreeConfig(inverter="bank"), ctx))

    ids = [2, 3]  # the 24x24 models
    teachers, classes = [pool.load(i) for i in ids], [tuple(pool.entry(i).class_ids) for i in ids]
    rngs = model_generators(torch.Generator().manual_seed(5), len(ids))
    via_wrapper = gen.invert_many(teachers, 1, 2, torch.Generator().manual_seed(0), ids, classes,
                                  generators=model_generators(torch.Generator().manual_seed(5), len(ids)))
    direct = gen.parts[1].invert_many(teachers, 1, 2, torch.Generator().manual_seed(9), model_ids=ids,
                                      classes=list(classes), generators=rngs)
    for a, b in zip(via_wrapper, direct):
        assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert gen.parts[1].cost.teacher_queries > 0 == gen.parts[0].cost.teacher_queries
