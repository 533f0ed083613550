"""The ``Selector`` interface, the selector registry and the uniform selector."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..registry import Registry

__all__ = ["SELECTORS", "Selector", "UniformSelector", "build_selector", "check_ids", "check_reward"]

SELECTORS: Registry[type[Selector]] = Registry("selector")
"""Selector classes by name: ``SELECTORS.get("reliability")(n_models=10, ...)``."""


class Selector(ABC):
    """Chooses which pool models to invert at each meta-training step.

    A subclass writes ``select`` and ``weights``; a selector that learns overrides ``update``
    and the state methods. All randomness comes from the ``generator`` passed to ``select``, never
    from the global RNG, so a run is reproduced by restoring the generator and ``state_dict()``.

    Args:
        n_models: number of models in the pool (ids are ``0..n_models-1``).

    Attributes:
        learns: ``update`` learns from rewards (a stream then pays it its reward; otherwise none).
    """

    learns: ClassVar[bool] = False

    def __init__(self, n_models: int) -> None:
        if isinstance(n_models, bool) or not isinstance(n_models, int) or n_models < 1:
            raise ValueError(f"n_models must be an integer >= 1 (the pool size), got {n_models!r}")
        self.n_models = n_models

    @abstractmethod
    def select(self, n: int, generator: torch.Generator) -> list[int]:
        """``n`` distinct model ids in ``0..n_models-1``, drawn with ``generator``."""

    @property
    def max_select(self) -> int:
        """The largest ``n`` one ``select`` call serves (the pool size, unless a subclass says less)."""
        return self.n_models

    def update(self, ids: Sequence[int], reward: float | Tensor) -> dict[str, float]:
        """Learn from the reward obtained with the models ``ids``; returns named scalars (none here)."""
        check_ids(ids, self.n_models)
        check_reward(reward)
        return {}

    @abstractmethod
    def weights(self) -> Tensor:
        """Probability of each model being drawn first, ``[n_models]`` float64 (for logging)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (stateless selectors: the pool size only)."""
        return {"n_models": self.n_models}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; a different pool size raises ``ValueError``."""
        if int(state.get("n_models", -1)) != self.n_models:
            raise ValueError(
                f"state was saved for n_models={state.get('n_models')!r} but this {type(self).__name__} has "
                f"n_models={self.n_models}; build the selector for the same pool"
            )

    def _check_select(self, n: int, generator: torch.Generator) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.n_models:
            raise ValueError(
                f"cannot select n={n!r} models without replacement from a pool of {self.n_models}; "
                f"pass an integer n in 1..{self.n_models}"
            )
        if not isinstance(generator, torch.Generator):
            raise TypeError(
                f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)), "
                f"got {type(generator).__name__}"
            )


def check_ids(ids: Sequence[int], n_models: int) -> list[int]:
    """Validate model ids: a non-empty sequence of distinct integers in ``0..n_models-1``.

    Raises:
        ValueError: empty, repeated or out-of-range ids (the message names them).
    """
    ids = [int(i) for i in ids]
    if not ids:
        raise ValueError("ids is empty; pass the model ids returned by select()")
    bad = [i for i in ids if not 0 <= i < n_models]
    if bad:
        raise ValueError(f"model ids {bad} are out of range for a pool of {n_models} (valid: 0..{n_models - 1})")
    if len(set(ids)) != len(ids):
        raise ValueError(f"model ids {ids} contain repeats; selections are without replacement")
    return ids


def check_reward(reward: float | Tensor) -> float:
    """The reward as a finite float; it must be a number or a one-element tensor.

    Raises:
        ValueError: a tensor with more than one element or a non-finite reward.
        TypeError: neither a number nor a tensor.
    """
    if isinstance(reward, Tensor):
        if reward.numel() != 1:
            raise ValueError(
                f"reward must be a scalar (one number for the whole selection), got a tensor of shape "
                f"{tuple(reward.shape)}; reduce it first, e.g. reward.mean()"
            )
        reward = float(reward.detach())
    elif isinstance(reward, bool) or not isinstance(reward, (int, float)):
        raise TypeError(f"reward must be a float or a one-element tensor, got {type(reward).__name__}")
    reward = float(reward)
    if reward != reward or reward in (float("inf"), float("-inf")):
        raise ValueError(f"reward must be finite, got {reward}; check the reward computation for NaN/inf losses")
    return reward


@SELECTORS.register("uniform")
class UniformSelector(Selector):
    """Every model equally likely: a uniform random subset in random order.

    Example:
        >>> sel = UniformSelector(10)
        >>> sel.select(4, torch.Generator().manual_seed(0))  # 4 distinct ids
    """

    def select(self, n: int, generator: torch.Generator) -> list[int]:
        """``n`` distinct ids, uniformly at random (a prefix of a random permutation)."""
        self._check_select(n, generator)
        return torch.randperm(self.n_models, generator=generator)[:n].tolist()

    def weights(self) -> Tensor:
        """``[n_models]``, all ``1 / n_models``."""
        return torch.full((self.n_models,), 1.0 / self.n_models, dtype=torch.float64)


def build_selector(name: str, n_models: int, **kwargs: Any) -> Selector:
    """Build the selector registered as ``name`` for a pool of ``n_models`` models.

    Raises:
        KeyError: unknown ``name`` (the message lists the registered names).
    """
    return SELECTORS.get(name)(n_models=n_models, **kwargs)
