"""Bi-level meta knowledge distillation: MAML whose inner and outer losses distil a teacher.

The inner loop adapts on the support set by distilling the teacher's logits there; the outer
(meta) loss distils the teacher's logits on the query set at the adapted weights. Both use a
true KL divergence on log-probabilities at temperature ``T`` with the ``T**2`` factor, batch-mean
(``dfml.inversion.losses.kd_loss``); the reference code fed probabilities into ``kl_div``.

Teacher logits travel with the task, over the task's classes in label order (column ``c`` is the
teacher's logit for label ``c``): ``task.source.extra["teacher_support_logits"]`` ``[n_support, n_way]``
and ``task.source.extra["teacher_query_logits"]`` ``[n_query_total, n_way]``.
``attach_teacher_logits`` computes and attaches them.

References:
    Hu et al., "Learning to Learn from APIs: Black-Box Data-Free Meta-Learning" (BiDf-MKD),
    ICML 2023.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Literal

import torch
from torch import Tensor, nn

from ..config import refuse_moved
from ..inversion.losses import kd_loss
from ..types import Params, Task, TaskSource
from .inner import inner_update
from .learner import LEARNERS
from .maml import MAML

__all__ = [
    "TEACHER_QUERY_KEY",
    "TEACHER_SUPPORT_KEY",
    "DistillationConfig",
    "DistillationMAML",
    "attach_teacher_logits",
    "teacher_logits",
]

TEACHER_SUPPORT_KEY = "teacher_support_logits"
TEACHER_QUERY_KEY = "teacher_query_logits"
_KEYS = {"support": TEACHER_SUPPORT_KEY, "query": TEACHER_QUERY_KEY}


@refuse_moved("datafree.distill", how="; in Python the learner takes it: DistillationMAML(model, inner_steps=...)")
@dataclass(frozen=True)
class DistillationConfig:
    """What is distillation's own of the distilling MAML learner (``datafree.distill``).

    Its inner loop is every learner's (``MAML``'s arguments, ``train.inner_steps``/``inner_lr``/
    ``first_order``/``learn_inner_lr`` in a run's configuration); earlier dfml kept a copy here.

    Attributes:
        temperature: KD temperature ``T > 0`` of both the inner and the outer loss.
    """

    temperature: float = 1.0

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (math.isfinite(t) and t > 0):
            raise ValueError(f"distillation.temperature must be a positive finite number, got {t!r}")


def teacher_logits(task: Task, split: Literal["support", "query"], like: Tensor | None = None) -> Tensor:
    """The teacher logits that travel with ``task`` for ``split`` (detached).

    Args:
        task: carrying ``task.source.extra["teacher_<split>_logits"]``.
        split: ``"support"`` or ``"query"``.
        like: if given, the logits are moved to its device and dtype.

    Returns:
        ``[n_support, n_way]`` or ``[n_query_total, n_way]``.

    Raises:
        ValueError: the logits are missing or their row count does not match the split.
        TypeError: the stored value is not a tensor.
    """
    if split not in _KEYS:
        raise ValueError(f"split must be 'support' or 'query', got {split!r}")
    key = _KEYS[split]
    extra = task.source.extra if task.source is not None else {}
    if key not in extra:
        raise ValueError(
            f"task has no teacher logits for its {split} set (task.source.extra[{key!r}] is missing); attach them "
            "with dfml.meta.attach_teacher_logits(task, teacher, columns) or put a [n, n_way] tensor under that key"
        )
    logits = extra[key]
    if not isinstance(logits, Tensor):
        raise TypeError(f"task.source.extra[{key!r}] must be a torch.Tensor, got {type(logits).__name__}")
    rows = (task.support_x if split == "support" else task.query_x).shape[0]
    if logits.dim() != 2 or logits.shape[0] != rows:
        raise ValueError(
            f"task.source.extra[{key!r}] has shape {tuple(logits.shape)}, expected [{rows}, n_way] (one row per "
            f"{split} example, one column per task label); recompute it on this task's {split} set"
        )
    logits = logits.detach()
    return logits if like is None else logits.to(device=like.device, dtype=like.dtype)


@torch.no_grad()
def attach_teacher_logits(task: Task, teacher: nn.Module, columns: Sequence[int] | None = None) -> Task:
    """A copy of ``task`` carrying ``teacher``'s logits on its support and query sets.

    The teacher runs as it is (pool models are frozen and in eval mode) under ``no_grad``; the
    input task and its ``source`` are not modified.

    Args:
        task: the episode; labels ``0..n_way-1``.
        teacher: maps ``[B, *input_shape]`` to logits ``[B, n_teacher_classes]``.
        columns: the teacher's output index of each task label, in label order (``len == n_way``);
            ``None`` when the teacher's outputs already are the task's labels.

    Returns:
        The task with ``source.extra`` holding ``teacher_support_logits``/``teacher_query_logits``.

    Raises:
        ValueError: a column out of the teacher's range.
    """
    cols = None if columns is None else torch.as_tensor(list(columns), dtype=torch.long)
    logits = {}
    for split, x in (("support", task.support_x), ("query", task.query_x)):
        out = teacher(x)
        if cols is not None:
            if cols.numel() and (int(cols.min()) < 0 or int(cols.max()) >= out.shape[-1]):
                raise ValueError(
                    f"columns {cols.tolist()} fall outside the teacher's {out.shape[-1]} outputs; pass the teacher's "
                    "output index of every task label"
                )
            out = out[:, cols.to(out.device)]
        logits[_KEYS[split]] = out.detach()
    source = task.source or TaskSource()
    return replace(task, source=replace(source, extra={**source.extra, **logits}))


@LEARNERS.register("distill")
class DistillationMAML(MAML):
    """MAML with KD towards the teacher in the inner loop (support) and the outer loss (query).

    ``meta_loss``/``meta_step`` come from ``Learner``: their ``loss`` is the mean outer KD loss and
    ``acc`` the adapted student's query accuracy on the task labels. ``adapt`` distils on the
    support set, so meta-testing this learner needs teacher logits too; to fine-tune on labelled
    real episodes use a plain ``MAML`` over the same ``network``.

    Args:
        model: the student network; its output size must be ``n_way``.
        config: the temperature (default ``DistillationConfig()``).
        inner_steps, inner_lr, first_order, learn_inner_lr: the inner loop, as in ``MAML`` (in a run:
            ``train.inner_loop()``, the same settings the ``maml`` learner reads).

    Example:
        >>> kd = DistillationMAML(net, DistillationConfig(temperature=2.0), inner_steps=5, inner_lr=0.01)

    References:
        Hu et al., "Learning to Learn from APIs: Black-Box Data-Free Meta-Learning" (BiDf-MKD),
        ICML 2023.
    """

    needs_teacher_logits = True

    def __init__(self, model: nn.Module, config: DistillationConfig | None = None, *, inner_steps: int = 5,
                 inner_lr: float = 0.01, first_order: bool = False, learn_inner_lr: bool = False) -> None:
        cfg = config or DistillationConfig()
        super().__init__(
            model,
            inner_steps=inner_steps,
            inner_lr=inner_lr,
            first_order=first_order,
            learn_inner_lr=learn_inner_lr,
            loss_fn=partial(kd_loss, temperature=float(cfg.temperature)),
        )
        self.config = cfg

    def adapt(self, params: Params, task: Task, steps: int | None = None) -> Params:
        """Fast weights after ``steps`` (default ``inner_steps``) SGD steps of KD on the support set.

        With ``steps == 0`` the weights are returned unchanged and no support logits are needed:
        the learner then scores plain KD on the query set (a per-teacher distillation loss).
        """
        steps = self.inner_steps if steps is None else steps
        if steps == 0:
            return dict(params)
        task = self._on_device(task)
        return inner_update(
            self.network,
            params,
            task.support_x,
            teacher_logits(task, "support", like=task.support_x),
            steps=steps,
            lr=self._lrs(steps) if steps > 0 else self.inner_lr,
            first_order=self.first_order,
            loss_fn=self.loss_fn,
        )

    def task_loss(self, params: Params, task: Task) -> tuple[Tensor, Tensor]:
        """Outer KD loss on the query set after inner KD (scalar) and query accuracy (0-d, no graph)."""
        task = self._on_device(task)
        target = teacher_logits(task, "query", like=task.query_x)
        logits = self.query_logits(params, task)
        acc = (logits.detach().argmax(-1) == task.query_y).double().mean()
        return kd_loss(logits, target, self.config.temperature), acc

    def loss(self, params: Params, task: Task) -> Tensor:
        """Outer KD loss of ``task`` (after inner KD on its support set); a scalar."""
        return self.task_loss(params, task)[0]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, temperature={self.config.temperature}"
