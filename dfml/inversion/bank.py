"""A pixel bank: learnable inputs per class of every pool model, refined in place across meta-training.

Unlike :class:`~dfml.inversion.pixels.PixelInverter`, which synthesises fresh inputs from scratch
for every task, the bank keeps ``per_class`` inputs for each class of each pool model and takes a
few optimisation steps on them every time the model is visited, so the images improve over
meta-training. The objective is the shared one of :mod:`dfml.inversion.losses`: the teacher's
class loss on differentiably augmented inputs, DeepInversion's BatchNorm-statistics match and the
TV/L2 image priors. Tasks are sampled from the bank entries with :func:`split_task`.

**Episode curriculum.** With ``curriculum=True`` and a ``student`` (the meta-model's
post-adaptation query logits, see :class:`AdaptedStudent`) the bank measures how well the
meta-model solves each sampled task; once a moving average of its query accuracy reaches
``curriculum_threshold`` the task's query images take steps that *raise* the student's
post-adaptation query loss while the teacher's class loss keeps them in their class (harder
episodes), and the hardened images are written back into the bank.

**Batched refinement.** :meth:`PixelBankInverter.refine_many` refines several models of one architecture
at once, taking exactly the steps :meth:`PixelBankInverter.refine` takes one by one (:mod:`dfml.inversion.bank_batched`).

References:
    Hu et al., "Architecture, Dataset and Model-Scale Agnostic Data-free Meta-Learning" (PURER), CVPR 2023;
    Yin et al., "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion", CVPR 2020.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_ranges
from ..types import Task
from .bank_batched import BatchedRefinement, check_eval_mode, child_generator
from .base import INVERTERS, InversionCost, Inverter, split_task
from .curriculum import AdaptedStudent as AdaptedStudent
from .curriculum import Student as Student
from .losses import BNStatMatch, DiffAugment, class_loss, l2_prior, total_variation

__all__ = ["AdaptedStudent", "PixelBank", "PixelBankConfig", "PixelBankInverter", "Student"]

_BETAS, _EPS = (0.9, 0.999), 1e-8


@dataclass(frozen=True)
class PixelBankConfig:
    """Hyper-parameters of :class:`PixelBankInverter`.

    Attributes:
        per_class: inputs kept per class of every model.
        steps: Adam steps on a model's entries per :meth:`PixelBankInverter.invert` call.
        lr: Adam learning rate on the inputs.
        bn_weight: weight of the BatchNorm-statistics match (teachers without BN ignore it). The
            term sums one norm per BN layer; at weight 1 a Conv4's four terms outweighed the class
            loss (5/6 of the images of a 2-way Conv4 teacher classified right, against 6/6 at 0.1).
        tv_weight: weight of the total variation (images only).
        l2_weight: weight of the mean squared input.
        init_std: standard deviation of the Gaussian the inputs start from.
        augment_pad: random-crop padding of the DiffAugment before the teacher (images; 0: none).
        augment_flip: random horizontal flips before the teacher (images).
        curriculum: harden tasks once the student finds them easy (needs ``student=`` in ``invert``).
        curriculum_threshold: harden when the moving average of the student's post-adaptation
            query accuracy on the model's tasks is ``>=`` this (in ``[0, 1]``; 0 hardens always).
        curriculum_momentum: moving-average momentum ``m``: ``avg = m * avg + (1 - m) * acc``
            (0: the latest accuracy alone).
        hard_steps: hardening steps per task.
        hard_lr: step size of a hardening step; steps are RMS-normalised per image.
        hard_weight: weight of the student's query loss being maximised against the teacher's
            class loss being minimised.
    """

    per_class: int = 20
    steps: int = 5
    lr: float = 0.1
    bn_weight: float = 0.1
    tv_weight: float = 0.0
    l2_weight: float = 1e-2
    init_std: float = 1.0
    augment_pad: int = 2
    augment_flip: bool = True
    curriculum: bool = False
    curriculum_threshold: float = 0.8
    curriculum_momentum: float = 0.0
    hard_steps: int = 1
    hard_lr: float = 0.1
    hard_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("per_class", "hard_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"PixelBankConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.steps < 0:
            raise ValueError(f"PixelBankConfig.steps must be >= 0, got {self.steps}")
        for name in ("lr", "hard_lr", "init_std"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PixelBankConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.curriculum_threshold <= 1.0:
            raise ValueError(
                f"PixelBankConfig.curriculum_threshold is a query accuracy in [0, 1], got {self.curriculum_threshold}"
            )
        check_ranges(self, "PixelBankConfig.", naturals=("augment_pad",), positive=("lr", "hard_lr", "init_std"),
                     nonnegative=("bn_weight", "tv_weight", "l2_weight", "hard_weight"))
        if not 0.0 <= self.curriculum_momentum < 1.0:
            raise ValueError(f"PixelBankConfig.curriculum_momentum must lie in [0, 1), got {self.curriculum_momentum}")


def _adam(x: Tensor, g: Tensor, m: Tensor, v: Tensor, t: int, lr: float) -> tuple[Tensor, Tensor, Tensor]:
    """One Adam step (bias-corrected), elementwise, so batched and one-by-one updates agree exactly."""
    m = _BETAS[0] * m + (1 - _BETAS[0]) * g
    v = _BETAS[1] * v + (1 - _BETAS[1]) * g * g
    mhat, vhat = m / (1 - _BETAS[0] ** t), v / (1 - _BETAS[1] ** t)
    return x - lr * mhat / (vhat.sqrt() + _EPS), m, v


@INVERTERS.register("bank")
class PixelBankInverter(BatchedRefinement, Inverter):
    """Learnable inputs ``[n_classes, per_class, *input_shape]`` per pool model, refined in place.

    Follows the :class:`~dfml.inversion.base.Inverter` protocol through :meth:`invert`.

    Args:
        input_shape: shape of one input, e.g. ``(3, 32, 32)`` or ``(32,)``.
        config: hyper-parameters.

    Example:
        >>> bank = PixelBankInverter((3, 32, 32), PixelBankConfig(per_class=20, steps=5))
        >>> task = bank.invert(teacher, 1, 15, generator, model_id=3, classes=entry.class_ids)

    References:
        Hu et al., "Architecture, Dataset and Model-Scale Agnostic Data-free Meta-Learning", CVPR 2023.
    """

    stateful = True
    curriculum = True

    def __init__(self, input_shape: Sequence[int], config: PixelBankConfig | None = None) -> None:
        super().__init__(input_shape)
        if not self.input_shape or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must be a non-empty shape of positive sizes, got {tuple(input_shape)}")
        self.config = config or PixelBankConfig()
        self.entries: dict[int, Tensor] = {}
        self._adam: dict[int, tuple[Tensor, Tensor, int]] = {}
        self.easiness: dict[int, float] = {}
        self.student_calls = 0
        self.hard_steps_taken = 0
        c = self.config
        self._augment = DiffAugment(pad=c.augment_pad, flip=c.augment_flip)

    # ------------------------------------------------------------------ access
    @property
    def model_ids(self) -> list[int]:
        """Ids of the models with a bank entry, sorted."""
        return sorted(self.entries)

    def images(self, model_id: int) -> Tensor:
        """A detached copy of model ``model_id``'s inputs ``[n_classes, per_class, *input_shape]``."""
        if model_id not in self.entries:
            raise KeyError(f"no bank entry for model {model_id}; the bank holds models {self.model_ids}")
        return self.entries[model_id].detach().clone()

    # ---------------------------------------------------------------- refining
    def _ensure(self, teacher: nn.Module, model_id: int, gen: torch.Generator) -> None:
        if model_id in self.entries:
            return
        p = next(teacher.parameters())
        shape = (self.count_classes(teacher, inputs=1, like=p), self.config.per_class, *self.input_shape)
        x = torch.randn(shape, generator=gen, dtype=p.dtype) * self.config.init_std
        self.entries[model_id] = x.to(p.device)
        self._adam[model_id] = (torch.zeros_like(self.entries[model_id]), torch.zeros_like(self.entries[model_id]), 0)
        self.charge(0, 0, x.shape[0] * x.shape[1])

    def _flat(self, model_id: int) -> tuple[Tensor, Tensor]:
        x = self.entries[model_id]
        y = torch.arange(x.shape[0], device=x.device).repeat_interleave(x.shape[1])
        return x.reshape(-1, *self.input_shape), y

    def _priors(self, x: Tensor) -> tuple[Tensor, Tensor]:
        tv = total_variation(x) if x.dim() == 4 else x.new_zeros(())
        return tv, l2_prior(x)

    def _total(self, ce: Tensor, bn: Tensor, tv: Tensor, l2: Tensor) -> Tensor:
        c = self.config
        return ce + c.bn_weight * bn + c.tv_weight * tv + c.l2_weight * l2

    def _apply(self, model_id: int, grad: Tensor) -> None:
        m, v, t = self._adam[model_id]
        x, m, v = _adam(self.entries[model_id], grad.view_as(m), m, v, t + 1, self.config.lr)
        self.entries[model_id], self._adam[model_id] = x, (m, v, t + 1)

    def refine(
        self, teacher: nn.Module, model_id: int, generator: torch.Generator, steps: int | None = None
    ) -> dict[str, float]:
        """Take ``steps`` (default ``config.steps``) Adam steps on model ``model_id``'s bank entry.

        The first visit creates the entry (one probe query for the number of classes, then Gaussian
        inputs). Exactly one value is drawn from ``generator``; every other random draw (the
        initial inputs, the augmentation) comes from a per-model generator seeded by it.

        Returns:
            The losses of the last step: ``{"loss", "class", "bn", "tv", "l2"}`` (empty when ``steps == 0``).
        """
        check_eval_mode(teacher)
        steps = self.config.steps if steps is None else int(steps)
        gen = child_generator(generator)
        p = next(teacher.parameters())
        out: dict[str, float] = {}
        with self.cost.timed(p.device):
            self._ensure(teacher, model_id, gen)
            with BNStatMatch(teacher) as bn:
                for _ in range(steps):
                    x, y = self._flat(model_id)
                    x = x.detach().requires_grad_(True)
                    ce = class_loss(teacher(self._augment(x, gen)), y)
                    bn_loss = bn.loss()
                    parts = (ce, bn_loss if bn_loss is not None else ce.new_zeros(()), *self._priors(x))
                    loss = self._total(*parts)
                    (grad,) = torch.autograd.grad(loss, [x])
                    self._apply(model_id, grad)
                    out = self._metrics(loss, parts)
        self._count(steps, len(y) if steps else 0, 1)
        return out

    def _count(self, steps: int, n_images: int, n_models: int) -> None:
        self.charge(steps * n_images * n_models, steps * n_models, 0)

    @staticmethod
    def _metrics(loss: Tensor, parts: Sequence[Tensor]) -> dict[str, float]:
        if not torch.isfinite(loss):
            raise FloatingPointError(f"bank inversion loss became {float(loss)}; lower PixelBankConfig.lr")
        names = ("class", "bn", "tv", "l2")
        return {"loss": float(loss.detach()), **{n: float(v.detach()) for n, v in zip(names, parts)}}

    # --------------------------------------------------------------- episodes
    def invert(
        self,
        teacher: nn.Module,
        n_shot: int,
        n_query: int,
        generator: torch.Generator,
        *,
        model_id: int | None = None,
        classes: tuple[int, ...] = (),
        student: Student | None = None,
    ) -> Task:
        """Refine model ``model_id``'s entry, then sample a task of all its classes from it.

        Args:
            teacher: the frozen eval-mode pool model.
            n_shot, n_query: support and query inputs per class (``n_shot + n_query <= per_class``).
            generator: all randomness (refinement, sampling) comes from it.
            model_id: the model's id in the pool (required: it keys the bank).
            classes: the class ids behind the teacher's outputs (provenance).
            student: the meta-model's post-adaptation query logits (:class:`AdaptedStudent`); used
                only when ``config.curriculum`` is on.

        Returns:
            A :class:`Task` with ``support_x [n_way * n_shot, *input_shape]``, ``query_x
            [n_way * n_query, *input_shape]``, labels in teacher output order, and ``source.extra``
            holding ``bank_step`` (Adam steps the entry has had) and ``hardened``.
        """
        if model_id is None:
            raise ValueError("PixelBankInverter.invert needs model_id= (the pool index that keys the model's bank entry)")
        k = n_shot + n_query
        if n_shot < 1 or n_query < 0 or k > self.config.per_class:
            raise ValueError(
                f"need n_shot >= 1, n_query >= 0 and n_shot + n_query <= per_class={self.config.per_class}, "
                f"got n_shot={n_shot}, n_query={n_query}; raise PixelBankConfig.per_class"
            )
        self.refine(teacher, model_id, generator)
        x = self.entries[model_id]
        n_way = x.shape[0]
        picks = torch.rand(n_way, self.config.per_class, generator=generator).argsort(1)[:, :k].to(x.device)
        rows = torch.arange(n_way, device=x.device)[:, None]
        task = split_task(x[rows, picks].reshape(-1, *self.input_shape).detach(), n_way, n_shot, n_query,
                          model_id=model_id, classes=classes)
        hardened = False
        if self.config.curriculum and student is not None and n_query > 0:
            if self.feedback(model_id, self._student_acc(student, task)) >= self.config.curriculum_threshold:
                task = self._harden(teacher, model_id, task, picks[:, n_shot:], student)
                hardened = True
        task.source.extra.update(bank_step=self._adam[model_id][2], hardened=hardened)
        return task

    def feedback(self, model_id: int, acc: float) -> float:
        """Fold the meta-model's post-adaptation query accuracy on a task of ``model_id`` into its moving average.

        Returns:
            The updated moving average (what the curriculum compares to its threshold).
        """
        m = self.config.curriculum_momentum
        prev = self.easiness.get(model_id)
        self.easiness[model_id] = float(acc) if prev is None else m * prev + (1 - m) * float(acc)
        return self.easiness[model_id]

    def _student_acc(self, student: Student, task: Task) -> float:
        self.student_calls += 1
        logits = student(task.support_x, task.support_y, task.query_x)
        return float((logits.detach().argmax(-1) == task.query_y).double().mean())

    def _harden(self, teacher: nn.Module, model_id: int, task: Task, picks: Tensor, student: Student) -> Task:
        """Steps on the query inputs that raise the student's query loss and keep the teacher's class."""
        c = self.config
        q = task.query_x
        with self.cost.timed(q.device):
            for _ in range(c.hard_steps):
                q = q.detach().requires_grad_(True)
                self.student_calls += 1
                s_loss = F.cross_entropy(student(task.support_x, task.support_y, q), task.query_y)
                loss = class_loss(teacher(q), task.query_y) - c.hard_weight * s_loss
                (g,) = torch.autograd.grad(loss, [q])
                rms = g.pow(2).flatten(1).mean(1).sqrt().clamp_min(1e-12).view(-1, *[1] * (g.dim() - 1))
                q = (q - c.hard_lr * g / rms).detach()
                self.cost.teacher_queries += len(q)
                self.hard_steps_taken += 1
        rows = torch.arange(picks.shape[0], device=q.device)[:, None]
        x = self.entries[model_id].clone()
        x[rows, picks] = q.view(*picks.shape, *self.input_shape)
        self.entries[model_id] = x
        task.query_x = q
        return task

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything to resume: config, inputs, Adam moments, curriculum averages, cost and counters."""
        return {
            "config": asdict(self.config),
            "input_shape": list(self.input_shape),
            "entries": {i: x.detach().cpu() for i, x in self.entries.items()},
            "adam": {i: (m.cpu(), v.cpu(), t) for i, (m, v, t) in self._adam.items()},
            "easiness": dict(self.easiness),
            "cost": self.cost.as_dict(),
            "counters": {"student_calls": self.student_calls, "hard_steps_taken": self.hard_steps_taken},
        }

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str | None = None) -> None:
        """Restore :meth:`state_dict` output (inputs moved to ``device``; default CPU).

        Raises:
            ValueError: the state was saved with another input shape or ``per_class``.
        """
        shape, per = tuple(state["input_shape"]), int(state["config"]["per_class"])
        if shape != self.input_shape or per != self.config.per_class:
            raise ValueError(
                f"bank state has input_shape={shape}, per_class={per}; this bank has input_shape={self.input_shape}, "
                f"per_class={self.config.per_class}; build the bank with the saved config"
            )
        self.entries = {int(i): x.to(device or "cpu") for i, x in state["entries"].items()}
        self._adam = {int(i): (m.to(device or "cpu"), v.to(device or "cpu"), int(t))
                      for i, (m, v, t) in state["adam"].items()}
        self.easiness = {int(i): float(a) for i, a in state["easiness"].items()}
        self.cost = InversionCost(**state["cost"])
        self.student_calls = int(state["counters"]["student_calls"])
        self.hard_steps_taken = int(state["counters"]["hard_steps_taken"])


PixelBank = PixelBankInverter
"""The earlier name of :class:`PixelBankInverter` (kept so that existing imports work)."""
