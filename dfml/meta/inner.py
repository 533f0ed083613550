"""The functional inner loop: SGD on fast weights with ``torch.func.functional_call``.

Fast weights are a plain ``Params`` dict (name -> tensor). Nothing here mutates the module or
the dict it is given: each step builds new tensors, so the same meta-parameters can be adapted
to many tasks and differentiated through (second order) or not (first order).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..types import Params

LossFn = Callable[[Tensor, Tensor], Tensor]
LearningRate = float | Sequence[float] | Tensor

__all__ = ["check_finetune", "functional_forward", "inner_update", "step_lrs"]


def functional_forward(
    model: nn.Module, params: Mapping[str, Tensor], x: Tensor, buffers: Mapping[str, Tensor] | None = None
) -> Tensor:
    """Run ``model`` on ``x`` with ``params`` (and ``buffers``) in place of its own tensors.

    Names missing from ``params``/``buffers`` fall back to the module's own tensors, so a partial
    dict (e.g. only the head) is allowed.

    Hook: an input that defines ``x.dfml_forward(model, params, buffers) -> Tensor`` computes the
    forward itself (``dfml.memory.MixedInputs`` mixes hidden features of two tasks this way), so
    every learner built on this function (MAML's inner loop and query forward, ProtoNet) trains
    on it unchanged. Plain tensors go straight to ``functional_call``.

    Args:
        model: the network; it is not modified.
        params: fast weights, name -> tensor, as in ``model.named_parameters()``.
        x: inputs ``[B, *input_shape]``.
        buffers: optional buffers, name -> tensor, as in ``model.named_buffers()``.

    Returns:
        The model's output, e.g. logits ``[B, n_classes]``.
    """
    custom = getattr(x, "dfml_forward", None)
    if custom is not None:
        return custom(model, params, buffers)
    return functional_call(model, (dict(params), dict(buffers or {})), (x,))


def step_lrs(lr: LearningRate, steps: int) -> list[float | Tensor]:
    """Expand ``lr`` into one learning rate per inner step.

    Args:
        lr: a float (every step), a sequence of ``steps`` floats, or a tensor that is a scalar or
            has shape ``[steps]`` (learnable per-step rates keep their graph).
        steps: number of inner steps.

    Returns:
        ``steps`` learning rates (floats or 0-d tensors).

    Raises:
        ValueError: a sequence or tensor whose length is not ``steps``, or a non-finite rate.
    """
    if isinstance(lr, Tensor):
        if lr.dim() == 0:
            return [lr] * steps
        if lr.dim() != 1 or lr.shape[0] != steps:
            raise ValueError(
                f"a tensor lr must be a scalar or have shape [steps]=[{steps}], got shape {tuple(lr.shape)}; "
                "pass one rate per inner step or a single rate"
            )
        return list(lr.unbind(0))
    if isinstance(lr, (int, float)):
        if not math.isfinite(lr):
            raise ValueError(f"lr must be finite, got {lr}")
        return [float(lr)] * steps
    rates = [float(v) for v in lr]
    if len(rates) != steps:
        raise ValueError(
            f"got {len(rates)} per-step learning rates for steps={steps}; pass exactly one rate per step "
            "or a single float"
        )
    if not all(math.isfinite(v) for v in rates):
        raise ValueError(f"learning rates must be finite, got {rates}")
    return rates


def inner_update(
    model: nn.Module,
    params: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    *,
    steps: int,
    lr: LearningRate,
    first_order: bool = False,
    loss_fn: LossFn = F.cross_entropy,
    buffers: Mapping[str, Tensor] | None = None,
    lr_setting: str | None = None,
) -> Params:
    """Take ``steps`` SGD steps on ``loss_fn(model(x), y)`` and return the new fast weights.

    Entries of ``params`` that require grad are adapted; the others (a frozen backbone, say) are
    passed through unchanged. With ``first_order=False`` the returned tensors keep the graph of
    the whole loop (``create_graph=True``), so the query loss can be differentiated through the
    adaptation (second-order MAML). With ``first_order=True`` the step gradients are detached:
    ``d new / d old`` is the identity and backpropagating the query loss gives the FOMAML
    gradient; a per-step learning-rate tensor still receives its gradient ``-g_t . dL/dphi``.

    Args:
        model: the network; not modified (its tensors are replaced through ``functional_call``).
        params: fast weights ``{name: tensor}``; the dict and its tensors are not modified.
        x: support inputs ``[n_way * n_shot, *input_shape]``.
        y: support labels ``[n_way * n_shot]``.
        steps: number of SGD steps (``0`` returns a shallow copy of ``params``).
        lr: step size: a float, one float per step, or a scalar / ``[steps]`` tensor (learnable).
        first_order: drop second-order terms (no graph through the gradients).
        loss_fn: ``loss_fn(output, y) -> scalar``.
        buffers: optional buffers for ``functional_call``.
        lr_setting: the configuration name of ``lr`` for a fine-tune whose result is scored
            (e.g. ``"eval.lr"``): the loop is then checked once, at the end, with
            :func:`check_finetune` (one host synchronisation per call, none per step). ``None``: no
            check (meta-training checks its own losses).

    Returns:
        New fast weights with the same keys as ``params``.

    Raises:
        ValueError: a negative or non-integer ``steps``, a malformed ``lr``, or no entry of
            ``params`` requiring grad while ``steps > 0``.
        FloatingPointError: with ``lr_setting``, the fine-tune diverged (see :func:`check_finetune`).

    References:
        Finn et al., "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks", ICML 2017;
        Antoniou et al., "How to train your MAML" (per-step learning rates), ICLR 2019.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    rates = step_lrs(lr, steps)
    fast: Params = dict(params)
    if steps == 0:
        return fast
    names = [k for k, v in fast.items() if v.requires_grad]
    if not names:
        raise ValueError(
            "no entry of params requires grad, so there is nothing to adapt; pass e.g. "
            "{k: v.detach().requires_grad_() for k, v in params.items()}"
        )
    for rate in rates:
        loss = loss_fn(functional_forward(model, fast, x, buffers), y)
        grads = torch.autograd.grad(
            loss, [fast[k] for k in names], create_graph=not first_order, allow_unused=True
        )
        for k, g in zip(names, grads):
            if g is None:  # the parameter does not reach the loss: zero gradient
                continue
            if first_order:
                g = g.detach()
            fast[k] = fast[k] - rate * g
    if lr_setting is not None:
        check_finetune(loss, {k: fast[k] for k in names}, lr=lr, steps=steps, lr_setting=lr_setting)
    return fast


def check_finetune(
    loss: Tensor, params: Mapping[str, Tensor], *, lr: LearningRate, steps: int, lr_setting: str
) -> None:
    """Refuse a diverged fine-tune: a loss or an adapted weight that is not finite.

    A fine-tune that overflowed leaves NaN weights whose predictions are all one class, which
    would otherwise be scored as a chance-level accuracy like any other. One host
    synchronisation for the whole check; the names of the bad weights are only looked up on failure.

    Args:
        loss: the fine-tune's last loss (a scalar).
        params: the adapted weights.
        lr, steps: the step size and number of steps the fine-tune took (shown in the error).
        lr_setting: the configuration name of ``lr`` (e.g. ``"eval.lr"``, ``"eval.val_lr"``).

    Raises:
        FloatingPointError: the loss or a weight is not finite; the message names ``lr_setting``
            and suggests a lower value.
    """
    flags = [torch.isfinite(loss.detach()).all()] + [torch.isfinite(v.detach()).all() for v in params.values()]
    if bool(torch.stack(flags).all()):
        return
    bad = [k for k, v in params.items() if not bool(torch.isfinite(v.detach()).all())]
    shown = bad if len(bad) <= 3 else bad[:3] + [f"... {len(bad) - 3} more"]
    parts = (["the loss"] if not bool(flags[0]) else []) + ([f"weights {shown}"] if bad else [])
    now = _lr_text(lr)
    hint = f", e.g. to {float(lr) / 10:g}" if isinstance(lr, (int, float)) else ""
    raise FloatingPointError(
        f"fine-tuning diverged: {' and '.join(parts)} {'is' if parts == ['the loss'] else 'are'} not finite after "
        f"{steps} steps at lr {now}; lower {lr_setting} (now {now}){hint}"
    )


def _lr_text(lr: LearningRate) -> str:
    if isinstance(lr, Tensor):
        return f"{float(lr):g}" if lr.dim() == 0 else str([round(float(v), 6) for v in lr])
    if isinstance(lr, (int, float)):
        return f"{float(lr):g}"
    return str([float(v) for v in lr])
