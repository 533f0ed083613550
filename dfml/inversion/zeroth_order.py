"""Zeroth-order gradient estimation: gradients of a loss from its values only.

For a per-input loss ``f`` (a function of the teacher's outputs on one input ``x`` of dimension
``d``) the forward-difference estimator with ``q`` random directions is

* ``directions="sphere"``: ``u_j`` uniform on the unit sphere,
  ``g = (d / q) * sum_j (f(x + mu u_j) - f(x)) / mu * u_j``;
* ``directions="gaussian"``: ``u_j ~ N(0, I)``, ``g = (1 / q) * sum_j (f(x + mu u_j) - f(x)) / mu * u_j``.

Bias and variance. ``g`` is an unbiased estimate of the gradient of a *smoothed* ``f`` (averaged
over a ball of radius ``mu`` for the sphere, over ``N(0, mu^2 I)`` for the Gaussian), not of
``f`` itself: for an ``L``-smooth ``f`` the bias is at most ``mu * L * d / 2`` (sphere) or
``mu / 2 * L * (d + 3) ** 1.5`` (Gaussian), and it vanishes for quadratics (the curvature term is
odd in ``u``). The variance shrinks like ``O(d / q) * ||grad f||^2``: the cosine between ``g`` and
the true gradient grows roughly like ``sqrt(q / (q + d))``. Small ``mu`` lowers the bias until
float round-off in the difference dominates (keep ``mu`` well above ``1e-4`` in float32).

Every estimate makes **one** batched call of ``loss_fn`` on ``B * (q + 1)`` rows (the inputs
themselves, then ``q`` perturbations of each), so a black-box teacher behind ``loss_fn`` is
queried exactly ``B * (q + 1)`` times.

References:
    Nesterov & Spokoiny, "Random Gradient-Free Minimization of Convex Functions", 2017;
    Liu et al., "A Primer on Zeroth-Order Optimization in Signal Processing and Machine Learning", 2020;
    Hu et al., "Learning to Learn from APIs: Black-Box Data-Free Meta-Learning" (BiDf-MKD), ICML 2023.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["DIRECTIONS", "zo_gradient"]

DIRECTIONS = ("sphere", "gaussian")

LossFn = Callable[[Tensor, Tensor], Tensor]


def zo_gradient(
    loss_fn: LossFn,
    x: Tensor,
    generator: torch.Generator,
    *,
    q: int = 20,
    mu: float = 1e-2,
    directions: str = "sphere",
    block: int = 1,
) -> tuple[Tensor, Tensor]:
    """Estimate ``d loss_fn(x_b) / d x_b`` for every row ``b`` of ``x`` from loss values only.

    Args:
        loss_fn: ``(rows [N, *shape], index [N]) -> losses [N]``, where ``index[r]`` is the row of
            ``x`` that ``rows[r]`` perturbs; row ``r``'s loss must depend on ``rows[r]`` only.
            Called exactly once, with ``N = B * (q + 1)``: ``rows[:B] = x``, then the ``q``
            perturbations of ``x_0``, those of ``x_1``, and so on.
        x: inputs ``[B, *shape]`` (treated as constants; detach them first if they carry a graph).
        generator: source of the directions (drawn on the CPU, so a seed gives the same
            directions on every device).
        q: directions per input (``>= 1``).
        mu: smoothing radius (``> 0``).
        directions: ``"sphere"`` or ``"gaussian"`` (see the module docstring).
        block: for images ``[B, C, H, W]``: directions are constant over ``block x block`` pixel
            tiles (drawn at ``H/block x W/block`` and repeated), so the ``q`` directions explore a
            ``C*H*W/block**2``-dimensional subspace and the estimate is that of the gradient
            projected onto it (tile means): far less variance per query, at the price of detail
            finer than a tile. ``1``: every pixel on its own.

    Returns:
        ``(grad [B, *shape], loss [B])``: the estimate and the loss at ``x`` itself.

    Raises:
        ValueError: bad ``q``, ``mu`` or ``directions``, or ``loss_fn`` returned the wrong shape.
        FloatingPointError: a loss value is not finite.
    """
    if isinstance(q, bool) or not isinstance(q, int) or q < 1:
        raise ValueError(f"the number of directions q must be an int >= 1, got {q!r}")
    if not mu > 0:
        raise ValueError(f"the smoothing radius mu must be > 0, got {mu}")
    if directions not in DIRECTIONS:
        raise ValueError(f"directions must be one of {DIRECTIONS}, got {directions!r}")
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be an int >= 1, got {block!r}")
    x = x.detach()
    b, shape = x.shape[0], x.shape[1:]
    d = x[0].numel()
    if block == 1:
        u = torch.randn((b, q, d), generator=generator, dtype=x.dtype)
        sub = d
    else:
        if x.dim() != 4 or shape[1] % block or shape[2] % block:
            raise ValueError(
                f"block={block} needs image inputs [B, C, H, W] with H and W divisible by it, got {tuple(x.shape)}; "
                "use block=1 or a divisor of the image size"
            )
        c, h, w = shape[0], shape[1] // block, shape[2] // block
        low = torch.randn((b * q, c, h, w), generator=generator, dtype=x.dtype)
        u = low.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3).reshape(b, q, d)
        u = u / block  # unit-variance coordinates in the orthonormal basis of tile indicators
        sub = c * h * w
    u = u.to(x.device)
    scale = 1.0
    if directions == "sphere":
        u = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)
        scale = float(sub)
    perturbed = x.reshape(b, 1, d) + mu * u  # [B, q, d]
    rows = torch.cat([x.reshape(b, d), perturbed.reshape(b * q, d)]).reshape(b * (q + 1), *shape)
    index = torch.cat([torch.arange(b), torch.arange(b).repeat_interleave(q)]).to(x.device)
    values = loss_fn(rows, index)
    if not isinstance(values, Tensor) or values.shape != (b * (q + 1),):
        got = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
        raise ValueError(f"loss_fn must return one loss per row, shape [{b * (q + 1)}], got {got}")
    if not torch.isfinite(values).all():
        raise FloatingPointError("a loss value in the zeroth-order estimate is not finite; lower mu or the lr")
    values = values.detach().to(x.dtype)
    f0, fu = values[:b], values[b:].reshape(b, q)
    slopes = (fu - f0[:, None]) / mu  # directional derivatives [B, q]
    grad = scale / q * torch.einsum("bq,bqd->bd", slopes, u)
    return grad.reshape(b, *shape), f0


_MOVED = ("BlackBoxInversionConfig", "BlackBoxInverter", "per_sample_loss")


def __getattr__(name: str) -> Any:
    """The black-box inverter moved to :mod:`dfml.inversion.blackbox_inverter`; its old import path still works."""
    if name in _MOVED:
        from . import blackbox_inverter

        return getattr(blackbox_inverter, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
