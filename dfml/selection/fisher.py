"""Task embeddings: the diagonal Fisher information of a probe network on a model's recovered data."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

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


def fisher_embedding(probe: nn.Module, data: Data, *, kind: str = "empirical", chunk_size: int = 64) -> Tensor:
    """Diagonal Fisher information of ``probe`` on ``data``: one task's embedding.

    ``F = mean_i E_y [ (d/dtheta log p_theta(y | x_i))^2 ]`` over the probe's parameters, where
    ``y`` is the given label (``kind="empirical"``) or ranges over all classes weighted by the
    probe's own predictive probabilities (``kind="expected"``, the true Fisher, computed exactly
    without sampling). Per-example gradients come from ``torch.func`` (``vmap`` of ``grad``).

    The probe runs in eval mode (BatchNorm uses its running statistics; its mode is restored
    afterwards); it is not modified. It is the caller's: dfml never downloads one.

    Args:
        probe: a classifier whose output ``[N, n_classes]`` covers every label in ``data``.
        data: a :class:`Task` (support and query sets together) or ``(inputs [N, ...], labels [N])``.
        kind: ``"empirical"`` or ``"expected"``.
        chunk_size: examples per ``vmap`` chunk (bounds memory).

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
    params = {k: v.detach() for k, v in probe.named_parameters()}
    if not params:
        raise ValueError(f"probe {type(probe).__name__} has no parameters to take a Fisher embedding of")
    device = next(iter(params.values())).device
    buffers = dict(probe.named_buffers())
    x, y = x.to(device), y.to(device=device, dtype=torch.long)

    def log_lik(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        logits = functional_call(probe, (p, buffers), (xi.unsqueeze(0),))
        return F.log_softmax(logits, dim=-1)[0, yi]

    per_example = vmap(grad(log_lik), in_dims=(None, 0, 0), chunk_size=chunk_size)
    was_training = probe.training
    probe.eval()
    try:
        with torch.no_grad():
            logits = probe(x)
        if y.numel() and not (0 <= int(y.min()) and int(y.max()) < logits.shape[-1]):
            raise ValueError(
                f"labels span {int(y.min())}..{int(y.max())} but the probe has {logits.shape[-1]} outputs; "
                "give the probe a head with at least max(label) + 1 outputs"
            )
        if kind == "empirical":
            xs, ys, w = x, y, torch.full((x.shape[0],), 1.0, dtype=logits.dtype, device=device)
        else:
            n_classes = logits.shape[-1]
            xs = x.repeat_interleave(n_classes, dim=0)
            ys = torch.arange(n_classes, device=device).repeat(x.shape[0])
            w = torch.softmax(logits, dim=-1).reshape(-1)
        grads = per_example(params, xs, ys)
    finally:
        probe.train(was_training)
    flat = torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], dim=1)
    return (w[:, None] * flat.pow(2)).sum(0) / x.shape[0]


def fisher_embeddings(probe: nn.Module, datas: Sequence[Data], **kwargs: object) -> Tensor:
    """:func:`fisher_embedding` of every model's data with the same probe: ``[n_models, n_params]``."""
    if not datas:
        raise ValueError("datas is empty; pass one Task (or (inputs, labels)) per pool model")
    return torch.stack([fisher_embedding(probe, d, **kwargs) for d in datas])


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
    e = embeddings.detach().double()
    norms = e.norm(dim=1)
    zero = (norms == 0).nonzero().flatten().tolist()
    if zero:
        raise ValueError(
            f"embeddings of models {zero} are all zero, so their cosine similarity is undefined; "
            "check their recovered data (a probe that fits it perfectly has zero Fisher information)"
        )
    unit = e / norms[:, None]
    d = (1.0 - unit @ unit.T).clamp(min=0.0)
    d = (d + d.T) / 2
    d.fill_diagonal_(0.0)
    return d
