"""Task embeddings: the diagonal Fisher information of a probe network on a model's recovered data."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..types import Task

__all__ = ["cosine_dissimilarity", "fisher_embedding", "fisher_embeddings"]

Data = Task | tuple[Tensor, Tensor]


def _inputs_labels(data: Data) -> tuple[Tensor, Tensor]:
    if isinstance(data, Task):
        return torch.cat([data.support_x, data.query_x]), torch.cat([data.support_y, data.query_y])
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if not isinstance(x, Tensor) or not isinstance(y, Tensor) or y.dim() != 1 or x.shape[0] != y.shape[0]:
            raise ValueError(
                "data must be a Task or (inputs [N, ...], labels [N]) with as many labels as inputs, got "
                f"shapes {getattr(x, 'shape', None)} and {getattr(y, 'shape', None)}"
            )
        return x, y
    raise TypeError(f"data must be a dfml.Task or a pair (inputs, labels), got {type(data).__name__}")


def fisher_embedding(probe: nn.Module, data: Data, *, kind: str = "empirical") -> Tensor:
    """Diagonal Fisher information of ``probe`` on ``data``: one task's embedding.

    ``F = mean_i E_y [ (d/dtheta log p_theta(y | x_i))^2 ]`` over the probe's parameters, where
    ``y`` is the given label (``kind="empirical"``) or ranges over all classes weighted by the
    probe's own predictive probabilities (``kind="expected"``, the true Fisher, computed exactly
    without sampling: ``n_classes`` backward passes per example).

    The probe runs in eval mode (BatchNorm uses its running statistics; its mode is restored
    afterwards); it is not modified. It is the caller's: dfml never downloads one.

    Args:
        probe: a classifier whose output ``[N, n_classes]`` covers every label in ``data``.
        data: a :class:`Task` (support and query sets together) or ``(inputs [N, ...], labels [N])``.
        kind: ``"empirical"`` or ``"expected"``.

    Returns:
        ``[n_params]``: the diagonal, all of ``probe.named_parameters()`` flattened and concatenated
        in that order (float, on the probe's device).

    References:
        Achille et al., "Task2Vec: Task Embedding for Meta-Learning", ICCV 2019;
        Wei et al., "Task Groupings Regularization: Data-Free Meta-Learning with Heterogeneous
        Pre-trained Models", ICML 2024.
    """
    if kind not in ("empirical", "expected"):
        raise ValueError(f"kind must be 'empirical' or 'expected', got {kind!r}")
    x, y = _inputs_labels(data)
    params = {k: v.detach().requires_grad_(True) for k, v in probe.named_parameters()}
    if not params:
        raise ValueError(f"probe {type(probe).__name__} has no parameters to take a Fisher embedding of")
    if x.shape[0] == 0:
        raise ValueError("data has no examples; pass the model's recovered inputs and labels (N >= 1)")
    first = next(iter(params.values()))
    buffers = dict(probe.named_buffers())
    x = x.to(first.device, dtype=first.dtype if x.is_floating_point() else None)
    y = y.to(device=first.device, dtype=torch.long)
    was_training = probe.training
    probe.eval()
    try:
        with torch.enable_grad():
            total = _squared_grads(probe, params, buffers, x, y, kind)
    finally:
        probe.train(was_training)
    return total / x.shape[0]


def _squared_grads(
    probe: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, y: Tensor, kind: str
) -> Tensor:
    # One backward pass per (example, class): plain autograd, no torch.func transforms (their
    # first call costs seconds), fine for the few hundred examples recovered per model.
    leaves = list(params.values())
    total = torch.cat([torch.zeros_like(v).reshape(-1) for v in leaves])
    for xi, yi in zip(x, y):
        log_p = F.log_softmax(functional_call(probe, (params, buffers), (xi.unsqueeze(0),))[0], dim=-1)
        if not 0 <= int(yi) < log_p.shape[0]:
            raise ValueError(
                f"label {int(yi)} is out of range for a probe with {log_p.shape[0]} outputs; "
                "give the probe a head with at least max(label) + 1 outputs"
            )
        classes = [int(yi)] if kind == "empirical" else range(log_p.shape[0])
        probs = log_p.detach().exp()
        for c in classes:
            grads = torch.autograd.grad(log_p[c], leaves, retain_graph=True, allow_unused=True)
            flat = torch.cat([(torch.zeros_like(v) if g is None else g).reshape(-1) for v, g in zip(leaves, grads)])
            total += (1.0 if kind == "empirical" else probs[c]) * flat.pow(2)
    return total


def fisher_embeddings(probe: nn.Module, datas: Iterable[Data], **kwargs: object) -> Tensor:
    """:func:`fisher_embedding` of every model's data with the same probe: ``[n_models, n_params]``.

    ``datas`` is consumed one item at a time, so a generator that recovers each model's task only
    when it is needed holds one task in memory, not one per pool model.
    """
    rows = [fisher_embedding(probe, d, **kwargs) for d in datas]
    if not rows:
        raise ValueError("datas is empty; pass one Task (or (inputs, labels)) per pool model")
    return torch.stack(rows)


def cosine_dissimilarity(embeddings: Tensor) -> Tensor:
    """``1 - cosine similarity`` between every pair of embeddings.

    Args:
        embeddings: ``[n_models, n_params]``.

    Returns:
        ``[n_models, n_models]`` float64, symmetric, zero diagonal, in ``[0, 2]`` (``[0, 1]`` for
        non-negative embeddings such as Fisher diagonals).

    Raises:
        ValueError: not 2-D, or an all-zero embedding (its direction is undefined).
    """
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings must have shape [n_models, n_params], got {tuple(embeddings.shape)}")
    e = embeddings.detach().to(torch.float64, copy=True)  # normalised in place below: one [n, p] copy, not two
    norms = e.norm(dim=1)
    zero = (norms == 0).nonzero().flatten().tolist()
    if zero:
        raise ValueError(
            f"embeddings of models {zero} are all zero, so their cosine similarity is undefined; "
            "check their recovered data (a probe that fits it perfectly has zero Fisher information)"
        )
    unit = e.div_(norms[:, None])
    d = (1.0 - unit @ unit.T).clamp(min=0.0)
    d = (d + d.T) / 2
    d.fill_diagonal_(0.0)
    return d
