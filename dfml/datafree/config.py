"""The configuration of the data-free loop: which part of each kind, and each part's settings.

Every choice is a name looked up in its part's registry: ``inverter`` in
:data:`~dfml.inversion.base.INVERTERS`, ``selector`` in :data:`~dfml.selection.SELECTORS`,
``learner`` in :data:`~dfml.meta.learner.LEARNERS`, ``update`` in :data:`~dfml.meta.update.UPDATES`
and ``reward`` in :data:`~dfml.datafree.rewards.REWARDS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..inversion import (
    BlackBoxInversionConfig,
    GeneratorInversionConfig,
    MetaGeneratorConfig,
    PixelBankConfig,
    PixelInversionConfig,
)
from ..inversion.base import INVERTERS
from ..memory import MemoryConfig, MetaBatchMix
from ..meta import AlignmentConfig, DistillationConfig, GroupRegularizationConfig
from ..meta.learner import LEARNERS
from ..meta.update import UPDATES
from ..selection import SELECTORS, ReliabilityConfig
from .rewards import REWARDS, Reward
from .tasks import TaskAugment

__all__ = ["CHOICES", "BlackBoxAccessConfig", "DataFreeConfig", "StreamConfig", "SyntheticBankConfig"]

CHOICES = {
    "inverter": ("pixel", "bank", "generator", "metagen", "blackbox"),
    "selector": ("uniform", "reliability", "group"),
    "learner": ("maml", "distill"),
    "update": ("maml", "alignment", "grouping"),
    "reward": ("heldout", "agreement", "none"),
}
"""The names of each part kind in the order messages list them (the registries hold the parts;
``tests/datafree/test_registries.py`` keeps the two equal)."""

REGISTRIES = {"inverter": INVERTERS, "selector": SELECTORS, "learner": LEARNERS, "update": UPDATES,
              "reward": REWARDS}


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
class SyntheticBankConfig:
    """The ``maml`` recipe's bank: every pool model inverted once, with the pixel inverter's settings
    (``datafree.pixel``), into ``per_class`` examples per class (:func:`~dfml.datafree.bank.build_bank`).

    Attributes:
        per_class: examples recovered per class of every pool model (at least a task's
            ``train.n_shot + train.n_query``). Earlier dfml called it ``train.bank_per_class``.
    """

    per_class: int = 20

    def __post_init__(self) -> None:
        if isinstance(self.per_class, bool) or not isinstance(self.per_class, int) or self.per_class < 1:
            raise ValueError(f"datafree.synthetic.per_class must be an integer >= 1, got {self.per_class!r}")


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
            ``pixel`` is also what the ``maml`` recipe inverts its bank with (earlier ``train.inversion``).
        synthetic: the ``maml`` recipe's bank (inverted once; the data-free loop never reads it).
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
            :class:`~dfml.datafree.stream.StreamConfig`) or ``none``.
        learner: ``maml`` (query cross-entropy) or ``distill`` (bi-level KD on teacher outputs); either
            runs the inner loop of ``train`` (``train.inner_steps``, ``inner_lr``, ``first_order``,
            ``learn_inner_lr``).
        distill: what is the distilling learner's own: its temperature.
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
        shuffle_labels: give every recovered task a random class-to-label assignment, also when
            its teacher has exactly ``n_way`` classes (see
            :class:`~dfml.datafree.stream.StreamConfig`). Off, a model with ``n_way`` classes puts
            each class under the label of its teacher output in every task, which a MAML
            meta-model memorises (``purer`` on CIFAR-FS: docs/recipes/purer.md).
    """

    inverter: str = "pixel"
    pixel: PixelInversionConfig = field(default_factory=PixelInversionConfig)
    synthetic: SyntheticBankConfig = field(default_factory=SyntheticBankConfig)
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
    shuffle_labels: bool = False

    def __post_init__(self) -> None:
        for name, registry in REGISTRIES.items():
            if getattr(self, name) not in registry.names():
                valid = CHOICES[name] + tuple(n for n in registry.names() if n not in CHOICES[name])  # + added parts
                raise ValueError(f"datafree.{name} must be one of {valid}, got {getattr(self, name)!r}")
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
        if self.boundary and not INVERTERS.get(self.inverter).boundary:
            boundary = "/".join(n for n in CHOICES["inverter"] if INVERTERS.get(n).boundary)
            raise ValueError(
                f"datafree.boundary hands the meta-model to a {boundary} inverter, not to "
                f"{self.inverter!r}; the pixel bank has its own (bank.curriculum). Set datafree.boundary=false"
            )


@dataclass(frozen=True)
class StreamConfig:
    """How the data-free stream builds each meta-batch.

    Attributes:
        n_way, n_shot, n_query: task shape (a teacher with more classes gives a random ``n_way`` of them).
        meta_batch_size: tasks per step (new + memory + interpolated, see ``mix``).
        reward: the reward of a learning selector, by name in :data:`~dfml.datafree.rewards.REWARDS`:
            ``"heldout"``: the meta-learner's loss improvement on tasks recovered earlier from other
            models; ``"agreement"``: how often the *other* pool models that advertise one of its
            classes classify its recovered images of that class as that class; ``"none"``: no reward.
        reward_tasks: how many of those held-out tasks score each update.
        teacher_cache: loaded teachers kept in memory (least recently used are dropped).
        forget_below: models whose selector weight is below ``forget_below / n_models`` are
            distrusted: their tasks are not stored in the memory and, after each selector update,
            their stored examples are forgotten (``0``: keep everything).
        augment: crop/flip of each meta-batch's images (see :class:`TaskAugment`; off by default).
        replay: after each step that recovers new tasks, this many steps whose meta-batch is memory
            (and interpolated) tasks only, so the memory is replayed without paying for inversion
            (needs a memory; a step whose memory cannot serve a task yet recovers new ones instead).
        shuffle_labels: give every recovered task a random class-to-label assignment also when its
            teacher has exactly ``n_way`` classes (a teacher with more always gets a random ``n_way``
            of them in random order). Without it such a model's tasks always put each class under
            the label of its teacher output, and a meta-model can learn that assignment instead of
            learning from the support set (memorisation: Yin et al., "Meta-Learning without
            Memorization", ICLR 2020).
    """

    n_way: int = 5
    n_shot: int = 1
    n_query: int = 15
    meta_batch_size: int = 4
    reward: str = "heldout"
    reward_tasks: int = 4
    teacher_cache: int = 32
    forget_below: float = 0.0
    augment: TaskAugment = TaskAugment()
    replay: int = 0
    shuffle_labels: bool = False

    def __post_init__(self) -> None:
        for name in ("n_way", "n_shot", "n_query", "meta_batch_size", "reward_tasks", "teacher_cache"):
            if getattr(self, name) < 1:
                raise ValueError(f"stream.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.forget_below < 1.0:
            raise ValueError(f"stream.forget_below must be in [0, 1), got {self.forget_below}")
        if isinstance(self.replay, bool) or not isinstance(self.replay, int) or self.replay < 0:
            raise ValueError(f"stream.replay must be an integer >= 0, got {self.replay!r}")
        if self.reward not in REWARDS:
            raise ValueError(f"stream.reward must be one of {tuple(REWARDS.names())}, got {self.reward!r}")

    def make_reward(self) -> Reward:
        """The reward named by :attr:`reward`."""
        cls = REWARDS.get(self.reward)
        return cls(self.reward_tasks) if cls.needs_learner else cls()
