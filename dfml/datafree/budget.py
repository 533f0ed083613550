"""Query budgets of black-box teachers, as the data-free stream plans them.

With budgeted black-box access (a :class:`~dfml.inversion.BlackBoxPool`) and an inverter that stops
on its budget (``on_budget="stop"``, :meth:`~dfml.inversion.base.Inverter.task_queries`), a model
whose remaining allowance cannot fund one more task (a probe, one zeroth-order step and, when
distilling, its teacher logits) is never drawn; a task that can no longer be funded when its turn
comes in a step is left out of the step; and when no model can fund a task the stream raises
:class:`~dfml.datafree.base.StreamExhausted`.
"""

from __future__ import annotations

from typing import Any

import torch

from ..inversion.base import Inverter
from ..inversion.blackbox import BlackBoxPool
from ..pool import ModelPool
from ..selection import Selector
from .base import StreamExhausted

__all__ = ["QueryPlan"]


class QueryPlan:
    """Which models can still fund a task, and the selection that skips the others.

    Args:
        pool: the model pool.
        inverter: the stream's inverter (routed per model by :meth:`Inverter.for_model`).
        access: the stream's access wrapper; only a :class:`BlackBoxPool` has budgets.
        shape: ``(n_way, n_shot, n_query)`` of a task.
        teacher_logits: each task also asks its teacher for logits on all its inputs.
    """

    def __init__(self, pool: ModelPool, inverter: Inverter, access: Any, shape: tuple[int, int, int],
                 teacher_logits: bool) -> None:
        self.pool, self.inverter, self.access = pool, inverter, access
        self.n_way, self.n_shot, self.n_query = shape
        self.teacher_logits = teacher_logits

    def logit_queries(self) -> int:
        """Queries of one task's teacher logits (support and query sets of ``n_way`` classes), or 0."""
        return self.n_way * (self.n_shot + self.n_query) if self.teacher_logits else 0

    def task_cost(self, i: int) -> int | None:
        """The fewest queries a task from model ``i`` costs, when budgeted access and an inverter that stops
        on its budget make that a plan (``None``: nothing is planned; a budget that binds raises)."""
        if not isinstance(self.access, BlackBoxPool):
            return None
        return self.inverter.for_model(i).task_queries(self.pool.entry(i).n_way, self.n_shot, self.n_query,
                                                       self.logit_queries())

    def fundable(self, i: int, owed: int = 0) -> bool:
        """Whether model ``i``'s remaining query allowance funds one more task, beyond ``owed`` queries already
        promised (always, without a plan)."""
        cost = self.task_cost(i)
        return cost is None or self.access.can_afford(i, cost + owed)

    def can_judge(self, k: int, n: int) -> bool:
        """Whether model ``k`` may classify ``n`` more inputs (a spent judge under a plan does not judge)."""
        return self.task_cost(k) is None or self.access.can_afford(k, n)

    def select(self, selector: Selector, n: int, generator: torch.Generator) -> list[int]:
        """``n`` model ids from ``selector``, redrawing past models that cannot fund a task.

        Raises:
            StreamExhausted: no model can fund a task (nothing is drawn or spent).
        """
        fundable = [self.fundable(i) for i in range(len(self.pool))]
        if not any(fundable):
            raise StreamExhausted(*self.exhausted_reason())
        ids: list[int] = []
        for _ in range(100 * n):  # more new tasks than one selection gives (pool, TGR group): draw again
            if len(ids) >= n:
                break
            ids += [i for i in selector.select(min(n - len(ids), selector.max_select), generator) if fundable[i]]
        if not ids:
            raise StreamExhausted(f"the selector drew only models whose query budget cannot fund a task in {100 * n} "
                                  "selections")
        return ids

    def exhausted_reason(self) -> tuple[str, str]:
        """Why no model can fund a task (the cheapest task's cost against the budget that binds), and the fix."""
        cheapest = min(c for c in (self.task_cost(i) for i in range(len(self.pool))) if c is not None)
        parts = "a probe, one zeroth-order step" + (" and the teacher logits" if self.teacher_logits else "")
        total = self.access.total
        cheaper = "or make a task cheaper (fewer directions datafree.blackbox.q, fewer train.n_query)"
        if total.limit is not None and total.remaining < cheapest:
            where = f"the pool's total budget (datafree.access.total) has {total.remaining} of {total.limit} left"
            fix = f"raise datafree.access.total to at least {total.spent + cheapest} {cheaper}"
        else:
            most = max(self.access.remaining(i) or 0 for i in range(len(self.pool)))
            where = (f"no model's own budget (datafree.access.per_model) has that many left (at most {most} of "
                     f"{self.access.per_model})")
            fix = f"raise datafree.access.per_model to at least {cheapest} {cheaper}"
        reason = f"the query budgets cannot fund another task: one costs at least {cheapest} queries ({parts})"
        return f"{reason} and {where}", fix
