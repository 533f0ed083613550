"""One inverter per input domain: pools whose models take different inputs (several datasets).

Inverters are built for one input shape (and, for generators, one normalisation). A pool that
mixes CIFAR-FS (32x32) and miniImageNet (84x84) models needs one of each; :class:`DomainInverters`
holds them and routes every request to the inverter of the requested model's domain. Tasks come
out in the teacher's own domain; the caller carries them to the meta-model's
(:func:`dfml.data.convert_task`) after anything that needs the teacher's view (its logits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..data.domain import InputDomain
from ..types import Task
from .base import InversionCost, Inverter

__all__ = ["DomainInverters", "domain_label"]


def domain_label(domain: InputDomain) -> str:
    """``"3x32x32"``: a short name for metrics and messages."""
    return "x".join(str(s) for s in domain.shape)


class DomainInverters(Inverter):
    """Inverters keyed by input domain, each pool model routed to its domain's.

    Args:
        make: builds the inverter of one domain, ``make(domain)`` (called once per distinct domain,
            in order of first appearance in ``domains``).
        domains: the input domain of every pool model, indexed by model id.

    The wrapper is an :class:`~dfml.inversion.base.Inverter`: ``invert`` (``model_id`` required),
    ``invert_many`` (models of one domain), ``meta_update`` (of the inverters used since the last
    one; metric names prefixed with :func:`domain_label` when there are several domains), ``cost``
    (the sum) and ``state_dict``. Its capabilities are its parts' as they declare them: it is
    stateful, black-box, boundary or curriculum when one of its parts is.

    Raises:
        ValueError: ``domains`` is empty.
    """

    batched = True  # models of one domain in one call (batched when that domain's inverter is)

    def __init__(self, make: Callable[[InputDomain], Inverter], domains: Sequence[InputDomain]) -> None:
        if not domains:
            raise ValueError("DomainInverters needs the input domain of at least one model")
        self.domains = list(domains)
        self.inverters: dict[InputDomain, Inverter] = {}
        for d in self.domains:
            if d not in self.inverters:
                self.inverters[d] = make(d)
        self._used: list[InputDomain] = []

    def __repr__(self) -> str:
        return f"DomainInverters({[domain_label(d) for d in self.inverters]})"

    def for_model(self, model_id: int | None) -> Inverter:
        """The inverter of model ``model_id``'s domain.

        Raises:
            ValueError: ``model_id`` is ``None`` or not a model of the pool.
        """
        if model_id is None or not 0 <= int(model_id) < len(self.domains):
            raise ValueError(
                f"DomainInverters routes by model_id, a pool index in 0..{len(self.domains) - 1}; got {model_id!r}"
            )
        domain = self.domains[int(model_id)]
        if domain not in self._used:
            self._used.append(domain)
        return self.inverters[domain]

    @property
    def parts(self) -> list[Inverter]:
        """The inverters, one per domain (their costs are the ones work adds to)."""
        return list(self.inverters.values())

    def cost_parts(self) -> list[InversionCost]:
        return [c for p in self.parts for c in p.cost_parts()]

    @property
    def stateful(self) -> bool:  # type: ignore[override]
        """Whether a domain's inverter learns across models (then the wrapper is never sharded)."""
        return any(inv.stateful for inv in self.parts)

    @property
    def black_box(self) -> bool:  # type: ignore[override]
        return any(inv.black_box for inv in self.parts)

    @property
    def boundary(self) -> bool:  # type: ignore[override]
        return any(inv.boundary for inv in self.parts)

    @property
    def curriculum(self) -> bool:  # type: ignore[override]
        return any(inv.curriculum for inv in self.parts)

    @property
    def cost(self) -> InversionCost:  # type: ignore[override]
        """The cost of all inverters together (a fresh object; the parts keep their own)."""
        total = InversionCost()
        for inverter in self.inverters.values():
            total.add(inverter.cost)
        return total

    def invert(
        self,
        teacher: nn.Module,
        n_shot: int,
        n_query: int,
        generator: torch.Generator,
        *,
        model_id: int | None = None,
        classes: tuple[int, ...] = (),
        student: Any = None,
    ) -> Task:
        """One task from ``teacher`` by its domain's inverter, in the teacher's domain."""
        return self.for_model(model_id).invert(teacher, n_shot, n_query, generator, model_id=model_id,
                                               classes=classes, student=student)

    def invert_many(
        self,
        teachers: Sequence[nn.Module],
        n_shot: int,
        n_query: int,
        generator: torch.Generator,
        model_ids: Sequence[int],
        classes: Sequence[tuple[int, ...]],
        generators: Sequence[torch.Generator] | None = None,
    ) -> list[Task]:
        """Tasks from several teachers of one domain (batched when that domain's inverter can).

        ``generators`` (one per model) make every model's task with its own generator, as the
        domain's inverter's ``invert_many`` does; without them all draw from ``generator``.

        Raises:
            ValueError: the models take inputs of different domains.
        """
        found = {self.domains[int(i)] for i in model_ids}
        if len(found) != 1:
            raise ValueError(
                f"invert_many needs models of one input domain; models {list(model_ids)} take "
                f"{sorted(domain_label(d) for d in found)}. Group them by domain first"
            )
        inverter = self.for_model(model_ids[0])
        per_model = {} if generators is None else {"generators": list(generators)}
        return inverter.invert_many(teachers, n_shot, n_query, generator, model_ids=list(model_ids),
                                    classes=list(classes), **per_model)

    def meta_update(self) -> dict[str, float]:
        """``meta_update()`` of every inverter used since the last call that has one."""
        out: dict[str, float] = {}
        several = len(self.inverters) > 1
        for domain in self._used:
            for k, v in self.inverters[domain].meta_update().items():
                out[f"{domain_label(domain)}/{k}" if several else k] = v
        self._used = []
        return out

    def state_dict(self) -> dict[str, Any]:
        """Each inverter's state (and cost), with the domains they belong to."""
        return {
            "domains": [d.to_dict() for d in self.inverters],
            "inverters": [inv.state_dict() or None for inv in self.inverters.values()],
            "costs": [inv.cost.as_dict() for inv in self.inverters.values()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        Raises:
            ValueError: the state was saved for other domains.
        """
        saved = [d["shape"] for d in state["domains"]]
        have = [list(d.shape) for d in self.inverters]
        if [d for d in state["domains"]] != [d.to_dict() for d in self.inverters]:
            raise ValueError(f"the state holds inverters for domains {saved} but this pool needs {have}")
        for inv, sub, cost in zip(self.inverters.values(), state["inverters"], state["costs"]):
            if sub is not None:
                inv.load_state_dict(sub)
            for k, v in cost.items():
                setattr(inv.cost, k, type(getattr(inv.cost, k))(v))
        self._used = []
