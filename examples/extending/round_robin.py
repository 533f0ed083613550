"""A new model selector: visit the pool's models in turn, so every model is inverted equally often.

A selector derives from :class:`~dfml.selection.Selector` and writes ``select`` and ``weights``;
one whose choice depends on the past keeps it in ``state_dict`` so that a killed run resumes to the
same choices. Registered in ``SELECTORS`` with a builder in ``BUILD_SELECTOR``, it is
``datafree.selector: round_robin``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from dfml.datafree.build import BUILD_SELECTOR, DataFreeContext
from dfml.datafree.config import DataFreeConfig
from dfml.inversion.base import Inverter
from dfml.selection import SELECTORS, Selector


@SELECTORS.register("round_robin")
class RoundRobinSelector(Selector):
    """Models ``0, 1, ..., n_models - 1, 0, 1, ...``, ``n`` at a time (learns nothing: ``learns`` is False).

    Example:
        >>> sel = RoundRobinSelector(3)
        >>> sel.select(2, torch.Generator()), sel.select(2, torch.Generator())
        ([0, 1], [2, 0])
    """

    def __init__(self, n_models: int) -> None:
        super().__init__(n_models)
        self.next = 0

    def select(self, n: int, generator: torch.Generator) -> list[int]:
        """The next ``n`` models in turn (``generator`` is checked, not used: the order is fixed)."""
        self._check_select(n, generator)
        ids = [(self.next + k) % self.n_models for k in range(n)]
        self.next = (self.next + n) % self.n_models
        return ids

    def weights(self) -> Tensor:
        """``[n_models]``: every model is drawn equally often in the long run."""
        return torch.full((self.n_models,), 1.0 / self.n_models, dtype=torch.float64)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "next": self.next}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)  # refuses a state saved for another pool size
        self.next = int(state["next"])


@BUILD_SELECTOR.register("round_robin")
def build_round_robin(cfg: DataFreeConfig, ctx: DataFreeContext, inverter: Inverter,
                      device: torch.device) -> Selector:
    """One selector over the whole pool."""
    return RoundRobinSelector(len(ctx.pool))
