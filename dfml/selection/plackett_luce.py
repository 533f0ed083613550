"""Ordered sampling without replacement from ``softmax(logits)`` (Plackett-Luce) and its log-probability."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["gumbel_top_k", "plackett_luce_log_prob"]


def gumbel_top_k(logits: Tensor, n: int, generator: torch.Generator) -> list[int]:
    """Draw ``n`` distinct indices, in order, from the Plackett-Luce distribution of ``logits``.

    Adding independent Gumbel(0, 1) noise to the logits and taking the ``n`` largest, in
    decreasing order, samples exactly the sequential process "draw one index from
    ``softmax(logits)`` over the indices not drawn yet, ``n`` times".

    Args:
        logits: ``[n_models]`` unnormalised log-weights (no grad is taken).
        n: how many indices, ``1 <= n <= n_models``.
        generator: the only source of randomness (a CPU generator; the noise is moved to
            ``logits.device``).

    Returns:
        ``n`` indices, the first drawn first.

    References:
        Kool et al., "Stochastic Beams and Where to Find Them: The Gumbel-Top-k Trick", ICML 2019.
    """
    if logits.dim() != 1:
        raise ValueError(f"logits must have shape [n_models], got {tuple(logits.shape)}")
    if not 1 <= n <= logits.shape[0]:
        raise ValueError(f"n={n} must be in 1..{logits.shape[0]} (the number of logits)")
    u = torch.rand(logits.shape[0], generator=generator, dtype=torch.float64)
    tiny = torch.finfo(torch.float64).tiny
    gumbel = -torch.log(-torch.log(u.clamp(min=tiny, max=1.0 - 1e-16)))
    keys = logits.detach().double().cpu() + gumbel
    return torch.topk(keys, n).indices.tolist()


def plackett_luce_log_prob(logits: Tensor, ids: Sequence[int]) -> Tensor:
    """Exact log-probability of drawing ``ids`` in this order without replacement from ``softmax(logits)``.

    ``log P = sum_k [ logits[ids[k]] - logsumexp(logits[j] for j not in ids[:k]) ]``.

    Args:
        logits: ``[n_models]``; the result keeps the graph to it.
        ids: distinct indices, in the order drawn.

    Returns:
        A 0-d tensor (differentiable in ``logits``).
    """
    ids = list(ids)
    n_models = logits.shape[0]
    drawn = torch.zeros(n_models, dtype=torch.bool, device=logits.device)
    total = logits.new_zeros(())
    for i in ids:
        rest = logits.masked_fill(drawn, float("-inf"))
        total = total + logits[i] - torch.logsumexp(rest, dim=0)
        drawn = drawn.clone()
        drawn[i] = True
    return total
