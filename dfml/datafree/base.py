"""Where a meta-trainer's tasks come from: the task-stream contract.

The :class:`~dfml.datafree.trainer.MetaTrainer` loop is written once; recipes plug in two parts:

* a :class:`TaskStream` hands out each step's meta-batch (sampling a fixed bank of recovered
  examples, or selecting models, inverting them, storing the tasks in a memory and mixing new,
  memory and interpolated tasks) and may take feedback after the update (a reward for a model
  selector); its ``state_dict`` is checkpointed with the trainer so runs resume exactly;
* a :class:`~dfml.meta.update.MetaUpdate` turns the meta-batch into a parameter update (MAML's meta-step by default;
  gradient alignment, group regularisation or distillation learners plug in here).

A stream that can make no more meta-batches (its teachers' query budgets are spent) raises
:class:`StreamExhausted`; the trainer then ends meta-training early instead of failing.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from ..types import Task

__all__ = ["BankStream", "StreamExhausted", "TaskBank", "TaskStream"]


class StreamExhausted(Exception):
    """A task stream can make no more meta-batches (e.g. no teacher's query budget funds another task).

    Not an error: :meth:`~dfml.datafree.trainer.MetaTrainer.fit` ends meta-training at this step,
    selects on meta-validation as usual and records ``str(exc)`` as the reason. Raised before
    anything of the refused step is spent. Before the first step it is an error (nothing was
    trained), whose message ends with ``fix``.
    """

    def __init__(self, reason: str, fix: str = "") -> None:
        super().__init__(reason)
        self.fix = fix


@runtime_checkable
class TaskStream(Protocol):
    """A source of meta-batches.

    ``next_batch`` must draw all its randomness from ``generator`` (the trainer's, checkpointed),
    or from state it returns in ``state_dict``.
    """

    def next_batch(self, step: int, generator: torch.Generator) -> list[Task]:
        """The meta-batch of step ``step`` (0-based); :class:`StreamExhausted` when there is none to make."""
        ...

    def feedback(self, step: int, tasks: list[Task], metrics: dict[str, float], learner: Any) -> dict[str, float]:
        """Called after the update of step ``step``; returns named scalars to log (may be empty)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class TaskBank(Protocol):
    """A fixed bank of recovered examples that samples tasks (e.g. :class:`~dfml.datafree.bank.SyntheticBank`)."""

    def sample_task(self, n_way: int, n_shot: int, n_query: int, generator: torch.Generator, step: int) -> Task: ...


class BankStream:
    """Meta-batches sampled from a fixed bank of recovered examples (anything with ``sample_task``).

    Args:
        bank: e.g. :class:`~dfml.datafree.bank.SyntheticBank`.
        n_way, n_shot, n_query: shape of each task.
        meta_batch_size: tasks per step.
    """

    def __init__(self, bank: Any, n_way: int, n_shot: int, n_query: int, meta_batch_size: int) -> None:
        if not isinstance(bank, TaskBank):
            raise TypeError(f"BankStream needs an object with sample_task(...), got {type(bank).__name__}")
        self.bank = bank
        self.shape = (n_way, n_shot, n_query)
        self.meta_batch_size = meta_batch_size

    def next_batch(self, step: int, generator: torch.Generator) -> list[Task]:
        return [self.bank.sample_task(*self.shape, generator, step) for _ in range(self.meta_batch_size)]

    def feedback(self, step: int, tasks: list[Task], metrics: dict[str, float], learner: Any) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}  # the bank is fixed; sampling uses the trainer's generator

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
