"""The pool's teachers as the data-free stream uses them: loaded once and cached, wrapped for
black-box access, and the one place where inputs cross between input domains.

Pool models may take other inputs than the meta-model (several datasets, other image sizes). A
teacher is inverted in its own domain; its task is carried to the meta-model's (``target``) after
its teacher-side uses (logits, agreement); a student handed to an inverter sees the teacher's
inputs converted to the meta-model's; a judge of another domain sees images converted to its own.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..data.domain import InputDomain, convert_inputs, convert_task
from ..pool import ModelPool
from ..types import Task

__all__ = ["DomainStudent", "Teachers"]


class Teachers:
    """Pool models loaded lazily, the ``cache`` most recently used kept, and their input domains.

    Args:
        pool: the model pool.
        cache: loaded teachers kept in memory (least recently used are dropped).
        access: wraps each loaded model before use, ``access(model, model_id)`` (e.g. a
            :class:`~dfml.inversion.blackbox.BlackBoxPool`); ``None``: the model itself.
        domains, target: the input domain of every pool model and the meta-model's; ``None``:
            every model takes the meta-model's inputs.
        device: where teachers run.
    """

    def __init__(self, pool: ModelPool, cache: int, *, access: Callable[[nn.Module, int], Any] | None = None,
                 domains: Sequence[InputDomain] | None = None, target: InputDomain | None = None,
                 device: torch.device | str = "cpu") -> None:
        if (domains is None) != (target is None):
            raise ValueError("give domains= (one per pool model) and target= (the meta-model's) together, or neither")
        if domains is not None and len(domains) != len(pool):
            raise ValueError(f"domains has {len(domains)} entries but the pool has {len(pool)} models; give one each")
        self.pool, self.cache, self.access = pool, cache, access
        self.domains = None if domains is None else list(domains)
        self.target = target
        self.device = torch.device(device)
        self._loaded: OrderedDict[int, nn.Module] = OrderedDict()

    def __call__(self, i: int) -> nn.Module:
        """Model ``i`` of the pool, loaded once and kept while recently used."""
        if i in self._loaded:
            self._loaded.move_to_end(i)
            return self._loaded[i]
        model = self.pool.load(i, device=self.device)
        if self.access is not None:
            model = self.access(model, i)
        self._loaded[i] = model
        while len(self._loaded) > self.cache:
            self._loaded.popitem(last=False)
        return model

    def domain(self, i: int) -> InputDomain | None:
        """The input domain of model ``i`` (``None`` when there are no domains)."""
        return None if self.domains is None else self.domains[i]

    def to_target(self, task: Task, i: int) -> Task:
        """``task``, recovered from model ``i`` in its domain, carried to the meta-model's."""
        if self.domains is None or self.target is None:
            return task
        return convert_task(task, self.domains[i], self.target)

    def as_seen_by(self, x: torch.Tensor, i: int, k: int) -> torch.Tensor:
        """Inputs of model ``i``'s domain as model ``k`` takes them."""
        if self.domains is None or self.domains[k] == self.domains[i]:
            return x
        return convert_inputs(x, self.domains[i], self.domains[k])

    def student_for(self, i: int, student: Any) -> Any:
        """``student`` as model ``i``'s inverter must call it: on inputs of model ``i``'s domain."""
        source = self.domain(i)
        if student is None or source is None or self.target is None or source == self.target:
            return student
        target = self.target
        if isinstance(student, nn.Module):
            return DomainStudent(student, source, target)
        return lambda sx, sy, qx: student(convert_inputs(sx, source, target), sy, convert_inputs(qx, source, target))


class DomainStudent(nn.Module):
    """A student module that takes inputs of ``source`` and sees them in ``target`` (its own domain)."""

    def __init__(self, student: nn.Module, source: InputDomain, target: InputDomain) -> None:
        super().__init__()
        self.student, self.source, self.target = student, source, target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(convert_inputs(x, self.source, self.target))
