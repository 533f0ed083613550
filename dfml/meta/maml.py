"""MAML: meta-learn an initialisation that adapts to a task in a few SGD steps."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.norm import use_batch_stats
from ..types import Params, Task
from .inner import functional_forward, inner_update
from .learner import LEARNERS, Learner

__all__ = ["MAML"]


@LEARNERS.register("maml")
class MAML(Learner):
    """Model-Agnostic Meta-Learning, second order or first order (FOMAML).

    ``model``'s BatchNorm layers are switched to batch statistics with ``use_batch_stats`` (in
    place; ``model`` is returned as ``self.network``). This is the few-shot convention: each
    forward pass normalises with the batch it is given (support while adapting, query while
    scoring), so the inner loop is a pure function of the fast weights, nothing is carried from
    one task to the next, and train/eval mode no longer matters at meta-test.

    Args:
        model: the network to meta-learn; its output size must be ``n_way``.
        inner_steps: SGD steps on the support set per task (``>= 0``).
        inner_lr: inner step size (initial value when ``learn_inner_lr``).
        first_order: drop second-order terms: the meta-gradient is the query-loss gradient at the
            adapted weights (FOMAML).
        learn_inner_lr: learn one inner step size per step (``self.inner_lrs``, a parameter of
            this module, so it is in ``parameters()`` and the ``state_dict``).
        loss_fn: inner (support) loss ``loss_fn(logits, y) -> scalar``.

    Example:
        >>> maml = MAML(net, inner_steps=5, inner_lr=0.01)
        >>> opt = torch.optim.Adam(maml.parameters(), lr=1e-3)
        >>> metrics = maml.meta_step(tasks, opt)  # {"loss": ..., "acc": ...}

    References:
        Finn et al., "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks", ICML 2017;
        Antoniou et al., "How to train your MAML" (learnt per-step rates), ICLR 2019.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        inner_steps: int = 5,
        inner_lr: float = 0.01,
        first_order: bool = False,
        learn_inner_lr: bool = False,
        loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if isinstance(inner_steps, bool) or not isinstance(inner_steps, int) or inner_steps < 0:
            raise ValueError(f"inner_steps must be an integer >= 0, got {inner_steps!r}")
        if not isinstance(inner_lr, (int, float)) or not inner_lr > 0:
            raise ValueError(f"inner_lr must be a positive number, got {inner_lr!r}")
        if learn_inner_lr and inner_steps == 0:
            raise ValueError("learn_inner_lr=True needs inner_steps >= 1 (there is no step to learn a rate for)")
        self.network = use_batch_stats(model)
        self.inner_steps = inner_steps
        self.inner_lr = float(inner_lr)
        self.first_order = first_order
        self.loss_fn = loss_fn
        lrs = None
        if learn_inner_lr:
            p = next(model.parameters(), None)
            kw = {"dtype": p.dtype, "device": p.device} if p is not None else {}
            lrs = nn.Parameter(torch.full((inner_steps,), float(inner_lr), **kw))
        self.inner_lrs: nn.Parameter | None
        self.register_parameter("inner_lrs", lrs)

    def _lrs(self, steps: int) -> float | Tensor:
        if self.inner_lrs is None:
            return self.inner_lr
        if steps <= self.inner_steps:
            return self.inner_lrs[:steps]
        # More steps than were meta-learnt (e.g. at meta-test): keep the last learnt rate.
        extra = self.inner_lrs[-1:].expand(steps - self.inner_steps)
        return torch.cat([self.inner_lrs, extra])

    def adapt(self, params: Params, task: Task, steps: int | None = None) -> Params:
        """Fast weights after ``steps`` (default ``inner_steps``) SGD steps on the support set.

        Args:
            params: starting weights, usually ``self.params()``.
            task: the episode; only ``support_x [n_way * n_shot, ...]`` and ``support_y`` are used.
            steps: inner steps; with learnt rates, steps beyond ``inner_steps`` reuse the last rate.

        Returns:
            Adapted fast weights (with graph to ``params`` and the learnt rates).
        """
        steps = self.inner_steps if steps is None else steps
        task = self._on_device(task)
        return inner_update(
            self.network,
            params,
            task.support_x,
            task.support_y,
            steps=steps,
            lr=self._lrs(steps) if steps > 0 else self.inner_lr,
            first_order=self.first_order,
            loss_fn=self.loss_fn,
        )

    def query_logits(self, params: Params, task: Task) -> Tensor:
        """Query logits ``[n_way * n_query, n_way]`` at the weights adapted on the support set."""
        task = self._on_device(task)
        return functional_forward(self.network, self.adapt(params, task), task.query_x)

    def extra_repr(self) -> str:
        return (
            f"inner_steps={self.inner_steps}, inner_lr={self.inner_lr}, first_order={self.first_order}, "
            f"learn_inner_lr={self.inner_lrs is not None}"
        )
