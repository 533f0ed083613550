"""The data-free training recipe builder: one function assembles every paper's loop from a config.

A paper recipe (``purer``, ``bidf_mkd``, ``robust``, ``free``, ``tgr``) is a preset of
:class:`DataFreeConfig` (``dfml/recipes/presets/<name>.yaml``) plus :func:`train_datafree`:
pick the inverter, the model selector, the task memory and its mix, the learner and the
meta-update, hand them to :class:`~dfml.meta.pipeline.DataFreeStream` and the one
:class:`~dfml.meta.trainer.MetaTrainer` loop, and return the meta-model selected on
meta-validation.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ..data.domain import InputDomain, convert_task
from ..inversion import (
    AdaptedStudent,
    BatchedGeneratorInverter,
    DiffAugment,
    DomainInverters,
    GeneratorInversionConfig,
    MetaGeneratorConfig,
    MetaGeneratorInverter,
    BlackBoxInversionConfig,
    BlackBoxInverter,
    BlackBoxPool,
    PixelBank,
    PixelBankConfig,
    PixelInversionConfig,
    PixelInverter,
)
from ..memory import MemoryConfig, MetaBatchMix, TaskMemory
from ..meta import (
    MAML,
    AlignmentConfig,
    DistillationConfig,
    DistillationMAML,
    GradientAlignment,
    GroupRegularization,
    GroupRegularizationConfig,
)
from ..meta.pipeline import REWARDS, DataFreeStream, StreamConfig, TaskAugment
from ..meta.trainer import MetaTrainer
from ..models.norm import use_batch_stats
from ..selection import GroupSelector, ReliabilityConfig, ReliabilityWeigher, Selector, UniformSelector
from ..selection.fisher import fisher_embeddings
from ..types import Task
from .base import MAML_LEARNER_READS, META_TRAINING_READS, RecipeContext, RecipeSpec
from .baselines import initial_meta_model

log = logging.getLogger(__name__)

__all__ = ["DATAFREE_RECIPE", "BlackBoxAccessConfig", "DataFreeConfig", "INVERTERS", "LEARNERS", "SELECTORS", "UPDATES", "train_datafree"]

INVERTERS = ("pixel", "bank", "blackbox", "generator", "metagen")
BOUNDARY_INVERTERS = ("generator", "metagen", "blackbox")  # inverters whose objective takes a student
SELECTORS = ("uniform", "reliability", "group")
LEARNERS = ("maml", "distill")
UPDATES = ("maml", "alignment", "grouping")


@dataclass(frozen=True)
class BlackBoxAccessConfig:
    """How black-box teachers may be queried.

    Attributes:
        output: what a teacher returns: ``logits`` or ``probs`` (``label`` gives no gradient signal).
        per_model: queries allowed per pool model (``None``: unlimited).
        total: queries allowed over the whole pool and run (``None``: unlimited).
    """

    output: str = "logits"
    per_model: int | None = None
    total: int | None = None

    def __post_init__(self) -> None:
        if self.output not in ("logits", "probs"):
            raise ValueError(f"datafree.access.output must be 'logits' or 'probs', got {self.output!r}")
        for name in ("per_model", "total"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"datafree.access.{name} must be an integer >= 1 or null (unlimited), got {value!r}")


@dataclass(frozen=True)
class DataFreeConfig:
    """The parts of a data-free meta-training loop (each recipe's preset sets some of them).

    Attributes:
        inverter: how tasks are recovered: ``pixel`` (inputs optimised per task), ``bank`` (a
            persistent pixel bank with an optional episode curriculum, PURER), ``generator`` (a
            generator trained from scratch per model; several same-architecture models at once),
            ``metagen`` (a meta-generator adapted a few steps per model, FREE) or ``blackbox``
            (outputs only, zeroth-order gradients into a generator, BiDf-MKD).
        pixel, bank, generator, metagen, blackbox: their settings. Image generators output
            ``[0, 1]`` images; the target dataset's normalisation is applied before the teacher.
        access: query budgets and outputs of black-box teachers (``inverter: blackbox`` only).
        selector: ``uniform``, ``reliability`` (REINFORCE weigher) or ``group`` (TGR groups of
            dissimilar models).
        reliability: the weigher's settings.
        n_groups: number of model groups for ``group``.
        models_per_step: models inverted per step (``0``: as many as the meta-batch needs).
        memory: keep recovered tasks in a task memory (required by memory/interpolated mixes).
        memory_config: its capacity.
        forget_below: with a learning selector, examples of models whose selection weight fell below
            ``forget_below / n_models`` (a fraction of the uniform weight) are dropped from the memory
            and no longer stored, so distrusted models stop being replayed; ``0`` keeps everything.
        mix: new / memory / interpolated tasks per meta-batch and the interpolation settings.
        reward: ``heldout`` or ``agreement`` (data-free rewards for a learning selector, see
            :class:`~dfml.meta.pipeline.StreamConfig`) or ``none``.
        learner: ``maml`` (query cross-entropy) or ``distill`` (bi-level KD on teacher outputs).
        distill: settings of the distilling learner.
        update: ``maml`` (the learner's meta-step), ``alignment`` (implicit gradient alignment) or
            ``grouping`` (task-group gradient regularisation).
        alignment, grouping: their settings.
        replay: after each step that recovers new tasks, this many meta-steps on memory (and
            interpolated) tasks only, so the memory is replayed without paying for inversion, as
            FREE's code replays its memory between rounds of inversion (``0``: every step recovers).
        task_augment: random crop (``pad``) and flip (``flip``) of every meta-batch's images before
            the meta-learner sees them (off by default; not with ``learner: distill``, whose teacher
            outputs belong to the images as recovered).
        boundary: hand the current meta-model to a ``generator``, ``metagen`` or ``blackbox``
            inverter as the student of its boundary term (``boundary_weight`` of that inverter's
            settings): samples on which the meta-model already agrees with the teacher are pushed
            towards disagreement (BiDf-MKD's boundary queries, FREE's adversarial term). Off by
            default, and then those inverters' ``boundary_weight`` has no effect; on, each model is
            inverted alone (no stacked-teacher batching).
    """

    inverter: str = "pixel"
    pixel: PixelInversionConfig = field(default_factory=PixelInversionConfig)
    bank: PixelBankConfig = field(default_factory=PixelBankConfig)
    generator: GeneratorInversionConfig = field(default_factory=GeneratorInversionConfig)
    metagen: MetaGeneratorConfig = field(default_factory=MetaGeneratorConfig)
    blackbox: BlackBoxInversionConfig = field(default_factory=BlackBoxInversionConfig)
    access: BlackBoxAccessConfig = field(default_factory=BlackBoxAccessConfig)
    selector: str = "uniform"
    reliability: ReliabilityConfig = field(default_factory=ReliabilityConfig)
    n_groups: int = 2
    memory: bool = False
    memory_config: MemoryConfig = field(default_factory=MemoryConfig)
    forget_below: float = 0.0
    mix: MetaBatchMix = field(default_factory=MetaBatchMix)
    reward: str = "heldout"
    learner: str = "maml"
    distill: DistillationConfig = field(default_factory=DistillationConfig)
    update: str = "maml"
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    grouping: GroupRegularizationConfig = field(default_factory=GroupRegularizationConfig)
    replay: int = 0
    task_augment: TaskAugment = field(default_factory=TaskAugment)
    boundary: bool = False

    def __post_init__(self) -> None:
        for name, choices in (("inverter", INVERTERS), ("selector", SELECTORS), ("learner", LEARNERS),
                              ("update", UPDATES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"datafree.{name} must be one of {choices}, got {getattr(self, name)!r}")
        if self.reward not in REWARDS:
            raise ValueError(f"datafree.reward must be one of {REWARDS}, got {self.reward!r}")
        if (self.mix.memory > 0 or self.mix.interpolated > 0) and not self.memory:
            raise ValueError(
                "datafree.mix asks for memory/interpolated tasks but datafree.memory is false; set datafree.memory=true"
            )
        if not 0.0 <= self.forget_below < 1.0:
            raise ValueError(f"datafree.forget_below must be in [0, 1) (a fraction of the uniform weight), got {self.forget_below}")
        if self.forget_below > 0 and not self.memory:
            raise ValueError("datafree.forget_below forgets memory entries but datafree.memory is false; set datafree.memory=true")
        if self.n_groups < 1:
            raise ValueError(f"datafree.n_groups must be >= 1, got {self.n_groups}")
        if self.replay and not (self.memory and self.mix.memory + self.mix.interpolated > 0):
            raise ValueError(
                f"datafree.replay={self.replay} replays memory tasks, but the memory serves none (datafree.memory "
                f"is {str(self.memory).lower()}, mix.memory + mix.interpolated = {self.mix.memory + self.mix.interpolated}); "
                "set datafree.memory=true and datafree.mix.memory=1, or datafree.replay=0"
            )
        if self.task_augment.active and self.learner == "distill":
            raise ValueError(
                "datafree.task_augment crops/flips the images the learner sees, but learner=distill matches the "
                "teacher outputs of the images as recovered; set datafree.task_augment.pad=0 and flip=false"
            )
        if self.boundary and self.inverter not in BOUNDARY_INVERTERS:
            raise ValueError(
                f"datafree.boundary hands the meta-model to a {'/'.join(BOUNDARY_INVERTERS)} inverter, not to "
                f"{self.inverter!r}; the pixel bank has its own (bank.curriculum). Set datafree.boundary=false"
            )


PART_SETTINGS = {
    "pixel": ("inverter", "pixel"), "bank": ("inverter", "bank"), "generator": ("inverter", "generator"),
    "metagen": ("inverter", "metagen"), "blackbox": ("inverter", "blackbox"), "access": ("inverter", "blackbox"),
    "reliability": ("selector", "reliability"), "reward": ("selector", "reliability"),
    "n_groups": ("selector", "group"), "distill": ("learner", "distill"), "alignment": ("update", "alignment"),
    "grouping": ("update", "grouping"), "memory_config": ("memory", True),
}
"""The ``datafree`` settings of one part: read only when ``datafree.<choice>`` is ``value``."""


def datafree_reads(cfg: Any) -> tuple[str, ...]:
    """The keys a data-free recipe reads under the resolved ``cfg``: the loop's ``train`` fields, the
    MAML learner's when ``datafree.learner`` is ``maml``, and the ``datafree`` settings of the chosen parts."""
    df = cfg.datafree
    parts = tuple(f"datafree.{f.name}" for f in dataclasses.fields(df)
                  if f.name not in PART_SETTINGS or getattr(df, PART_SETTINGS[f.name][0]) == PART_SETTINGS[f.name][1])
    return META_TRAINING_READS + (MAML_LEARNER_READS if df.learner == "maml" else ()) + parts


def _explain_unread(cfg: Any, key: str) -> str:
    df = cfg.datafree
    if key in MAML_LEARNER_READS:
        return f" (datafree.learner is {df.learner}: its settings are datafree.{df.learner})"
    name = key.split(".")[1] if key.startswith("datafree.") else ""
    if name in PART_SETTINGS:
        choice, value = PART_SETTINGS[name]
        shown = str(value).lower() if isinstance(value, bool) else value
        return f" (read only with datafree.{choice}={shown}; it is {str(getattr(df, choice)).lower()})"
    return ""


DATAFREE_RECIPE = RecipeSpec(reads=datafree_reads, pool_classes="at_least", explain=_explain_unread)
"""What every data-free recipe (``train_datafree``) reads and needs: ``train.bank_per_class`` and
``train.inversion`` are maml's bank, never read here."""


def build_inverter(cfg: DataFreeConfig, ctx: RecipeContext) -> Any:
    """The inverter named by ``cfg.inverter``; one per input domain when pool models take other inputs."""
    domains = ctx.teacher_domains()
    if all(d == ctx.meta_domain for d in domains):
        return _inverter_for(cfg, ctx, ctx.meta_domain)
    return DomainInverters(lambda d: _inverter_for(cfg, ctx, d), domains)


def _inverter_for(cfg: DataFreeConfig, ctx: RecipeContext, domain: InputDomain) -> Any:
    """The inverter named by ``cfg.inverter`` for teachers that take inputs of ``domain``."""
    shape = domain.shape
    if cfg.inverter == "bank":
        return PixelBank(shape, cfg.bank)
    if cfg.inverter == "blackbox":
        bb = cfg.blackbox
        if domain.is_image and domain.mean is not None and bb.mean is None:
            bb = replace(bb, mean=domain.mean, std=domain.std)  # the teacher's input space, as real episodes
        if not domain.is_image and bb.block > 1:
            bb = replace(bb, block=1)  # tiles are for images; vectors (toy pools) perturb every coordinate
        return BlackBoxInverter(shape, bb, device=ctx.device)
    if cfg.inverter == "generator":
        return BatchedGeneratorInverter(shape, _normalising(cfg.generator, domain))
    if cfg.inverter == "metagen":
        inner = _normalising(cfg.metagen.inner, domain)
        return MetaGeneratorInverter(shape, ctx.train.n_way, replace(cfg.metagen, inner=inner))
    return PixelInverter(shape, cfg.pixel)


def _normalising(gen: GeneratorInversionConfig, domain: InputDomain) -> GeneratorInversionConfig:
    """``gen`` with ``domain``'s normalisation before the teacher (images only, if not set)."""
    if not domain.is_image or domain.mean is None or gen.augment is not None:
        return gen
    return replace(gen, augment=DiffAugment(pad=2, flip=True, mean=domain.mean, std=domain.std))


def build_learner(cfg: DataFreeConfig, ctx: RecipeContext, model: nn.Module) -> nn.Module:
    """The meta-learner wrapping ``model``."""
    tr = ctx.train
    if cfg.learner == "distill":
        return DistillationMAML(model, cfg.distill)
    return MAML(model, inner_steps=tr.inner_steps, inner_lr=tr.inner_lr, first_order=tr.first_order)


def build_selector(cfg: DataFreeConfig, ctx: RecipeContext, inverter: Any, device: torch.device) -> Selector:
    """The model selector; ``group`` first recovers one task per model to embed the pool (TGR)."""
    n = len(ctx.pool)
    if cfg.selector == "reliability":
        return ReliabilityWeigher(n, cfg.reliability)
    if cfg.selector == "group":
        return _group_selector(cfg, ctx, inverter, device)
    return UniformSelector(n)


def _group_selector(cfg: DataFreeConfig, ctx: RecipeContext, inverter: Any, device: torch.device) -> Selector:
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


def build_update(cfg: DataFreeConfig) -> Any:
    """The meta-update (``None``: the learner's own meta-step)."""
    if cfg.update == "alignment":
        return GradientAlignment(cfg.alignment)
    if cfg.update == "grouping":
        return GroupRegularization(cfg.grouping)
    return None


def train_datafree(ctx: RecipeContext, cfg: DataFreeConfig) -> nn.Module:
    """Assemble and run the data-free loop described by ``cfg``; returns the selected meta-model."""
    tr = ctx.train
    device = torch.device(ctx.device)
    model = use_batch_stats(initial_meta_model(ctx, tr.seed))
    learner = build_learner(cfg, ctx, model)
    inverter = build_inverter(cfg, ctx)
    access = None
    if cfg.inverter == "blackbox":
        access = BlackBoxPool(cfg.access.output, cfg.access.per_model, cfg.access.total)
    elif cfg.access != BlackBoxAccessConfig():
        raise ValueError("datafree.access sets query budgets, which only apply to datafree.inverter=blackbox")
    student = None
    if cfg.inverter == "bank" and cfg.bank.curriculum:
        student = lambda: AdaptedStudent(learner)  # noqa: E731  (the meta-learner as it is now)
    elif cfg.boundary:
        student = lambda: learner.network  # noqa: E731  (the meta-model's current parameters, not adapted)
    selector = build_selector(cfg, ctx, inverter, device)
    stream = DataFreeStream(
        ctx.pool,
        inverter,
        StreamConfig(n_way=tr.n_way, n_shot=tr.n_shot, n_query=tr.n_query, meta_batch_size=tr.meta_batch_size,
                     reward=cfg.reward if cfg.selector == "reliability" else "none",
                     forget_below=cfg.forget_below, augment=cfg.task_augment, replay=cfg.replay),
        selector=selector,
        memory=TaskMemory(cfg.memory_config, device=device) if cfg.memory else None,
        mix=cfg.mix,
        learner=learner,
        teacher_logits=cfg.learner == "distill",
        access=access,
        student=student,
        domains=ctx.teacher_domains(),
        target=ctx.meta_domain,
        device=device,
    )
    trainer = MetaTrainer(model, stream, ctx.val_tasks, tr, run=ctx.run, device=device, learner=learner,
                          update=build_update(cfg))

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
