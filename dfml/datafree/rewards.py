"""Data-free rewards for a learning model selector, as strategy objects looked up by name.

A reward sees each step twice: :meth:`Reward.judge` right after the step's tasks are recovered
(in the teachers' own input domains) and :meth:`Reward.prepare` once they are in the meta-model's
domain and the memory took them; after the meta-update :meth:`Reward.pay` rewards the selector and
returns what to log. Both rewards are data-free:

* ``heldout``: the meta-learner's loss improvement on tasks recovered earlier from *other* models;
* ``agreement``: how often the other pool models that advertise one of a model's classes classify
  its recovered images of that class as that class (:func:`agreement`);
* ``none``: no reward.
"""

from __future__ import annotations

from abc import ABC
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from .. import distributed as dist
from ..registry import Registry
from ..selection import improvement_reward
from ..types import Task
from .tasks import task_from_state, task_state

if TYPE_CHECKING:
    from .stream import DataFreeStream

__all__ = ["REWARDS", "AgreementReward", "HeldoutReward", "NoReward", "Reward", "agreement"]

REWARDS: Registry[type[Reward]] = Registry("reward")
"""Reward classes by name (``datafree.reward``): ``REWARDS.get("heldout")(reward_tasks=4)``."""


class Reward(ABC):
    """What a learning selector is rewarded with; the base rewards nothing.

    Attributes:
        needs_learner: the reward reads the meta-learner (its parameters before and after a step).
    """

    needs_learner: ClassVar[bool] = False

    def judge(self, stream: DataFreeStream, ids: list[int], tasks: list[Task]) -> None:
        """See the step's recovered ``tasks`` (from models ``ids``, in their own domains)."""

    def prepare(self, stream: DataFreeStream, ids: list[int], tasks: list[Task], generator: torch.Generator) -> None:
        """See the step's new ``tasks`` in the meta-model's domain, before the meta-update."""

    def pay(self, stream: DataFreeStream, learner: Any) -> dict[str, float]:
        """Reward the selector after the meta-update; named scalars to log (``reward`` when one was paid)."""
        return {}

    def reset(self) -> None:
        """Forget the current step (a replay step recovers nothing and rewards nothing)."""

    def state_dict(self) -> dict[str, Any]:
        """The reward's state as stream checkpoint entries (``recent``: the held-out tasks, for every reward)."""
        return {"recent": {}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (entries of the stream's checkpoint)."""


@REWARDS.register("none")
class NoReward(Reward):
    """No reward: the selector never learns."""


@REWARDS.register("heldout")
class HeldoutReward(Reward):
    """The meta-learner's mean loss improvement over a step on ``reward_tasks`` tasks recovered
    earlier from models other than the step's (:func:`~dfml.selection.improvement_reward`).

    Args:
        reward_tasks: how many of those held-out tasks score each update.
    """

    needs_learner = True

    def __init__(self, reward_tasks: int = 4) -> None:
        self.reward_tasks = reward_tasks
        self.recent: dict[int, Task] = {}  # the last task recovered from each model
        self._pending: tuple[list[int], dict[str, torch.Tensor], list[Task]] | None = None

    def prepare(self, stream: DataFreeStream, ids: list[int], tasks: list[Task], generator: torch.Generator) -> None:
        self._pending = None
        if stream.learner is not None and ids:
            held = [t for m, t in self.recent.items() if m not in set(ids)]
            if held:
                order = torch.randperm(len(held), generator=generator)[: self.reward_tasks].tolist()
                before = {k: v.detach().clone() for k, v in stream.learner.params().items()}
                self._pending = (ids, before, [held[k] for k in order])
        self.recent.update(zip(ids, tasks))

    def pay(self, stream: DataFreeStream, learner: Any) -> dict[str, float]:
        if self._pending is None:
            return {}
        ids, before, held = self._pending
        self._pending = None
        reward = dist.broadcast_object(improvement_reward(learner.loss, before, learner.params(), held))
        return {"reward": reward, **{f"selector/{k}": v for k, v in stream.selector.update(ids, reward).items()}}

    def reset(self) -> None:
        self._pending = None

    def state_dict(self) -> dict[str, Any]:
        return {"recent": {i: task_state(t) for i, t in self.recent.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.recent = {int(i): task_from_state(s) for i, s in state["recent"].items()}


@REWARDS.register("agreement")
class AgreementReward(Reward):
    """Each selected model is rewarded with the agreement of the other pool models with its recovered
    images (pools with overlapping label sets; a model no other model can judge is not updated)."""

    def __init__(self) -> None:
        self._scores: list[tuple[int, float]] = []

    def judge(self, stream: DataFreeStream, ids: list[int], tasks: list[Task]) -> None:
        self._scores = dist.broadcast_object(
            [(i, r) for i, t in zip(ids, tasks) if (r := stream.agreement(i, t)) is not None])

    def pay(self, stream: DataFreeStream, learner: Any) -> dict[str, float]:
        if not self._scores:
            return {}
        metrics: dict[str, float] = {}
        for i, r in self._scores:
            metrics = stream.selector.update([i], r)
        out = {"reward": sum(r for _, r in self._scores) / len(self._scores)}
        out.update({f"selector/{k}": v for k, v in metrics.items() if k.startswith("w/") or k == "max_weight"})
        self._scores = []
        return out

    def reset(self) -> None:
        self._scores = []


def agreement(stream: DataFreeStream, i: int, task: Task) -> float | None:
    """Share of model ``i``'s recovered images of class ``c`` that other models advertising ``c`` call ``c``.

    ``task`` is in model ``i``'s input domain; a judge of another domain sees the images
    converted to its own. Only models of model ``i``'s dataset judge (class ids are per dataset),
    and, on a query budget the inverter stops within, only those that can still pay for it.
    ``None`` when no other model advertises any of the task's classes. The judges' queries are
    added to ``stream.judge_queries``.
    """
    if task.source is None or not task.source.classes:
        return None
    x = torch.cat([task.support_x, task.query_x])
    y = torch.cat([task.support_y, task.query_y])
    hits, total = 0.0, 0
    for k in range(len(stream.pool)):
        if k == i:
            continue
        theirs = list(stream.pool.entry(k).class_ids)
        shared = [(label, theirs.index(c)) for label, c in enumerate(task.source.classes) if c in theirs]
        if not shared or stream.pool.entry(k).dataset != stream.pool.entry(i).dataset:
            continue
        rows = torch.cat([torch.nonzero(y == label).view(-1) for label, _ in shared])
        if not stream.budget.can_judge(k, int(rows.numel())):
            continue  # a judge whose query budget is spent (on_budget='stop') does not judge
        want = torch.cat([torch.full((int((y == label).sum()),), col) for label, col in shared]).to(y.device)
        with torch.no_grad():
            pred = stream.teacher(k)(stream.teachers.as_seen_by(x[rows], i, k)).argmax(-1)
        stream.judge_queries += int(rows.numel())
        hits += float((pred == want).sum())
        total += int(rows.numel())
    return hits / total if total else None
