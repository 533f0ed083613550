"""A new inverter in one file: keep, for every class, the random inputs the teacher is surest of.

``BestOfInverter`` draws ``candidates`` Gaussian inputs per wanted input, asks the frozen teacher once
for all of them, and keeps for each class the inputs with the highest probability of that class. It
optimises nothing, so it is cheap and a baseline for the optimising inverters (``pixel``,
``generator``...). Two registrations make it a part: the class in ``INVERTERS`` (what it is and can
do) and a builder in ``BUILD_INVERTER`` (how a run's configuration makes one); then
``datafree.inverter: best_of`` selects it.
"""

from __future__ import annotations

import torch
from torch import nn

from dfml.data.domain import InputDomain
from dfml.datafree.build import BUILD_INVERTER, DataFreeContext
from dfml.datafree.config import DataFreeConfig
from dfml.inversion.base import INVERTERS, Inverter, split_task
from dfml.types import Task


@INVERTERS.register("best_of")
class BestOfInverter(Inverter):
    """Pseudo tasks from the teacher's most confident random inputs.

    Capabilities: the defaults of :class:`~dfml.inversion.base.Inverter` (not batched, stateless,
    white-box: it only needs the outputs, but plans no query budget).

    Args:
        input_shape: shape of one teacher input, e.g. ``(3, 32, 32)`` or ``(32,)``.
        candidates: random inputs drawn for each input kept (``>= 1``).
    """

    def __init__(self, input_shape: tuple[int, ...], candidates: int = 8) -> None:
        super().__init__(input_shape)
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise ValueError(f"candidates must be an integer >= 1, got {candidates!r}")
        self.candidates = candidates

    def invert(self, teacher: nn.Module, n_shot: int, n_query: int, generator: torch.Generator, *,
               model_id: int | None = None, classes: tuple[int, ...] = (), student: object = None) -> Task:
        """One task for ``teacher``'s classes: ``n_shot + n_query`` inputs a class, labels ``0..n_way-1``."""
        device = next(teacher.parameters()).device
        n_way = self.count_classes(teacher)  # the base counts the probe as teacher queries
        per_class = n_shot + n_query
        x = torch.randn((n_way * per_class * self.candidates, *self.input_shape), generator=generator).to(device)
        with self.cost.timed(device), torch.no_grad():
            probs = teacher(x).softmax(-1)  # [candidates, n_way]
        best = probs.topk(per_class, dim=0).indices.T  # [n_way, per_class]: each class's surest inputs
        self.charge(queries=len(x), steps=0, images=n_way * per_class)
        return split_task(x[best.reshape(-1)], n_way, n_shot, n_query, model_id=model_id, classes=classes)


@BUILD_INVERTER.register("best_of")
def build_best_of(cfg: DataFreeConfig, ctx: DataFreeContext, domain: InputDomain) -> Inverter:
    """The inverter for teachers of ``domain``'s inputs (one per input domain of the pool)."""
    return BestOfInverter(domain.shape)
