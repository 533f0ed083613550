"""From configuration to parts: one builder per part name, each in a :class:`~dfml.registry.Registry`.

:func:`run_datafree` assembles every paper's loop from a :class:`~dfml.datafree.config.DataFreeConfig`:
the inverter, the model selector, the task memory and its mix, the learner and the meta-update,
handed to :class:`~dfml.datafree.stream.DataFreeStream` and the one
:class:`~dfml.datafree.trainer.MetaTrainer` loop. A builder is registered under the same name as
the part in its package's registry (``INVERTERS``, ``SELECTORS``, ``LEARNERS``, ``UPDATES``); what a
part can do is what its class declares (a black-box inverter gets budgeted access, a curriculum or
boundary inverter gets the meta-model as its student, a learner that needs teacher logits gets them,
a selector that learns gets a reward).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any, Protocol

import torch
from torch import nn

from ..data.domain import InputDomain, convert_task
from ..inversion import (
    AdaptedStudent,
    BatchedGeneratorInverter,
    BlackBoxInverter,
    BlackBoxPool,
    DiffAugment,
    DomainInverters,
    GeneratorInversionConfig,
    MetaGeneratorInverter,
    PixelBankInverter,
    PixelInverter,
)
from ..inversion.base import Inverter
from ..memory import TaskMemory
from ..meta import MAML, DistillationMAML, GradientAlignment, GroupRegularization, LearnerStep, MetaUpdate
from ..models.norm import use_batch_stats
from ..pool import ModelPool
from ..registry import Registry
from ..runs import RunDir
from ..selection import GroupSelector, ReliabilityWeigher, Selector, UniformSelector
from ..selection.fisher import fisher_embeddings
from ..types import Task
from .config import BlackBoxAccessConfig, DataFreeConfig
from .stream import DataFreeStream, StreamConfig
from .trainer import MetaTrainer, TrainConfig

log = logging.getLogger(__name__)

__all__ = [
    "BUILD_INVERTER", "BUILD_LEARNER", "BUILD_SELECTOR", "BUILD_UPDATE", "DataFreeContext", "build_inverter",
    "build_learner", "build_selector", "build_update", "run_datafree",
]


class DataFreeContext(Protocol):
    """What the data-free loop reads of a recipe's context (:class:`~dfml.recipes.RecipeContext`)."""

    pool: ModelPool
    train: TrainConfig
    val_tasks: Callable[[], Iterable[Task]]
    val_steps: int
    val_lr: float
    run: RunDir | None
    device: torch.device | str
    progress: Callable[[str, int, int, dict[str, Any]], None] | None
    info: dict[str, Any]

    @property
    def meta_domain(self) -> InputDomain: ...

    def domain_of(self, i: int) -> InputDomain: ...

    def teacher_domains(self) -> list[InputDomain]: ...

    def build_meta_model(self, seed: int) -> nn.Module: ...


BUILD_INVERTER: Registry[Callable[[DataFreeConfig, DataFreeContext, InputDomain], Inverter]] = Registry("inverter")
"""``datafree.inverter`` name -> builder of the inverter for teachers of one input domain."""
BUILD_LEARNER: Registry[Callable[[DataFreeConfig, DataFreeContext, nn.Module], nn.Module]] = Registry("learner")
"""``datafree.learner`` name -> builder of the meta-learner around the meta-model; its inner loop is
``ctx.train.inner_loop()`` (``train.inner_steps``...), whichever the learner."""
BUILD_SELECTOR: Registry[Callable[[DataFreeConfig, DataFreeContext, Inverter, torch.device], Selector]] = Registry(
    "selector")
"""``datafree.selector`` name -> builder of the model selector."""
BUILD_UPDATE: Registry[Callable[[DataFreeConfig], MetaUpdate]] = Registry("meta-update")
"""``datafree.update`` name -> builder of the meta-update."""


def build_inverter(cfg: DataFreeConfig, ctx: DataFreeContext) -> Inverter:
    """The inverter named by ``cfg.inverter``; one per input domain when pool models take other inputs."""
    make = BUILD_INVERTER.get(cfg.inverter)
    domains = ctx.teacher_domains()
    if all(d == ctx.meta_domain for d in domains):
        return make(cfg, ctx, ctx.meta_domain)
    return DomainInverters(lambda d: make(cfg, ctx, d), domains)


@BUILD_INVERTER.register("pixel")
def _pixel(cfg: DataFreeConfig, ctx: DataFreeContext, domain: InputDomain) -> Inverter:
    return PixelInverter(domain.shape, cfg.pixel)


@BUILD_INVERTER.register("bank")
def _bank(cfg: DataFreeConfig, ctx: DataFreeContext, domain: InputDomain) -> Inverter:
    return PixelBankInverter(domain.shape, cfg.bank)


@BUILD_INVERTER.register("blackbox")
def _blackbox(cfg: DataFreeConfig, ctx: DataFreeContext, domain: InputDomain) -> Inverter:
    bb = cfg.blackbox
    if domain.is_image and domain.mean is not None and bb.mean is None:
        bb = replace(bb, mean=domain.mean, std=domain.std)  # the teacher's input space, as real episodes
    if not domain.is_image and bb.block > 1:
        bb = replace(bb, block=1)  # tiles are for images; vectors (toy pools) perturb every coordinate
    return BlackBoxInverter(domain.shape, bb, device=ctx.device)


@BUILD_INVERTER.register("generator")
def _generator(cfg: DataFreeConfig, ctx: DataFreeContext, domain: InputDomain) -> Inverter:
    return BatchedGeneratorInverter(domain.shape, _normalising(cfg.generator, domain))


@BUILD_INVERTER.register("metagen")
def _metagen(cfg: DataFreeConfig, ctx: DataFreeContext, domain: InputDomain) -> Inverter:
    inner = _normalising(cfg.metagen.inner, domain)
    return MetaGeneratorInverter(domain.shape, ctx.train.n_way, replace(cfg.metagen, inner=inner))


def _normalising(gen: GeneratorInversionConfig, domain: InputDomain) -> GeneratorInversionConfig:
    """``gen`` with ``domain``'s normalisation before the teacher (images only, if not set)."""
    if not domain.is_image or domain.mean is None or gen.augment is not None:
        return gen
    return replace(gen, augment=DiffAugment(pad=2, flip=True, mean=domain.mean, std=domain.std))


def build_learner(cfg: DataFreeConfig, ctx: DataFreeContext, model: nn.Module) -> nn.Module:
    """The meta-learner named by ``cfg.learner``, wrapping ``model``."""
    return BUILD_LEARNER.get(cfg.learner)(cfg, ctx, model)


@BUILD_LEARNER.register("maml")
def _maml(cfg: DataFreeConfig, ctx: DataFreeContext, model: nn.Module) -> nn.Module:
    return MAML(model, **ctx.train.inner_loop())


@BUILD_LEARNER.register("distill")
def _distill(cfg: DataFreeConfig, ctx: DataFreeContext, model: nn.Module) -> nn.Module:
    return DistillationMAML(model, cfg.distill, **ctx.train.inner_loop())  # the inner loop: train's, as MAML's


def build_selector(cfg: DataFreeConfig, ctx: DataFreeContext, inverter: Inverter, device: torch.device) -> Selector:
    """The model selector named by ``cfg.selector``."""
    return BUILD_SELECTOR.get(cfg.selector)(cfg, ctx, inverter, device)


@BUILD_SELECTOR.register("uniform")
def _uniform(cfg: DataFreeConfig, ctx: DataFreeContext, inverter: Inverter, device: torch.device) -> Selector:
    return UniformSelector(len(ctx.pool))


@BUILD_SELECTOR.register("reliability")
def _reliability(cfg: DataFreeConfig, ctx: DataFreeContext, inverter: Inverter, device: torch.device) -> Selector:
    return ReliabilityWeigher(len(ctx.pool), cfg.reliability)


@BUILD_SELECTOR.register("group")
def _group(cfg: DataFreeConfig, ctx: DataFreeContext, inverter: Inverter, device: torch.device) -> Selector:
    """TGR's groups: first recovers one task per model to embed the pool."""
    # Task space: the diagonal Fisher of a probe network on each model's recovered data. The probe
    # is a fresh, seeded meta-model of the pool's architecture: built from the pool, never downloaded.
    tr = ctx.train
    generator = torch.Generator().manual_seed(tr.seed + 7)
    probe = use_batch_stats(ctx.build_meta_model(tr.seed + 7)).to(device)

    def recovered() -> Iterator[Task]:  # one model's task at a time: memory does not grow with the pool
        for i in range(len(ctx.pool)):
            teacher = ctx.pool.load(i, device=device)
            task = inverter.invert(teacher, tr.n_shot, tr.n_query, generator, model_id=i,
                                   classes=tuple(ctx.pool.entry(i).class_ids))
            yield convert_task(task, ctx.domain_of(i), ctx.meta_domain)  # the probe takes the meta-model's inputs

    embeddings = fisher_embeddings(probe, recovered())
    groups = min(cfg.n_groups, len(ctx.pool))
    selector = GroupSelector.from_embeddings(embeddings, groups, seed=tr.seed)
    ctx.info["groups"] = selector.groups
    return selector


def build_update(cfg: DataFreeConfig) -> MetaUpdate:
    """The meta-update named by ``cfg.update``."""
    return BUILD_UPDATE.get(cfg.update)(cfg)


BUILD_UPDATE.register("maml")(lambda cfg: LearnerStep())
BUILD_UPDATE.register("alignment")(lambda cfg: GradientAlignment(cfg.alignment))
BUILD_UPDATE.register("grouping")(lambda cfg: GroupRegularization(cfg.grouping))


def _student(cfg: DataFreeConfig, inverter: Inverter, learner: nn.Module) -> Callable[[], Any] | None:
    """What the inverter plays against each step: the adapted meta-learner (a curriculum inverter with
    ``bank.curriculum``), the meta-model as it is now (``boundary``), or nothing."""
    if inverter.curriculum and cfg.bank.curriculum:
        return lambda: AdaptedStudent(learner)  # the meta-learner as it is now
    if cfg.boundary:
        return lambda: learner.network  # the meta-model's current parameters, not adapted
    return None


def run_datafree(ctx: DataFreeContext, cfg: DataFreeConfig, model: nn.Module) -> nn.Module:
    """Assemble and run the data-free loop described by ``cfg`` from the initial meta-model ``model``;
    returns the meta-model selected on meta-validation (what it did lands in ``ctx.info``)."""
    tr = ctx.train
    device = torch.device(ctx.device)
    model = use_batch_stats(model)
    learner = build_learner(cfg, ctx, model)
    inverter = build_inverter(cfg, ctx)
    access = None
    if inverter.black_box:
        access = BlackBoxPool(cfg.access.output, cfg.access.per_model, cfg.access.total)
    elif cfg.access != BlackBoxAccessConfig():
        raise ValueError("datafree.access sets query budgets, which only apply to datafree.inverter=blackbox")
    selector = build_selector(cfg, ctx, inverter, device)
    stream = DataFreeStream(
        ctx.pool,
        inverter,
        StreamConfig(n_way=tr.n_way, n_shot=tr.n_shot, n_query=tr.n_query, meta_batch_size=tr.meta_batch_size,
                     reward=cfg.reward if selector.learns else "none",
                     forget_below=cfg.forget_below, augment=cfg.task_augment, replay=cfg.replay,
                     shuffle_labels=cfg.shuffle_labels),
        selector=selector,
        memory=TaskMemory(cfg.memory_config, device=device) if cfg.memory else None,
        mix=cfg.mix,
        learner=learner,
        teacher_logits=learner.needs_teacher_logits,
        access=access,
        student=_student(cfg, inverter, learner),
        domains=ctx.teacher_domains(),
        target=ctx.meta_domain,
        device=device,
    )
    trainer = MetaTrainer(model, stream, ctx.val_tasks, tr, run=ctx.run, device=device, learner=learner,
                          update=build_update(cfg), val_steps=ctx.val_steps, val_lr=ctx.val_lr)

    def progress(step: int, record: dict) -> None:
        if ctx.progress is not None:
            ctx.progress("train", step, tr.steps, record)

    ctx.info.update(trainer.fit(progress))
    ctx.info["inversion_cost"] = stream.cost
    if access is not None:
        ctx.info["teacher_queries_black_box"] = access.spent
    if isinstance(selector, ReliabilityWeigher):
        ctx.info["reliability_weights"] = selector.weights().tolist()
        ctx.info["trust"] = [e.trust for e in ctx.pool.entries]
    return trainer.model
