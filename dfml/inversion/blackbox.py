"""Black-box access to a teacher: outputs only, every input counted, a hard query budget.

A :class:`BlackBoxTeacher` stands for a model behind an API. Calling it classifies a batch and
returns logits, probabilities or top-1 labels; nothing else is reachable: no parameters, no
modules, no hooks (so no BatchNorm-statistics prior), and no gradients. Inputs are detached and
the model runs under ``torch.no_grad()``; the returned output is tied to the caller's input by a
node that refuses every way of differentiating: reverse mode (``backward``, ``torch.autograd.grad``),
forward mode (``torch.autograd.forward_ad`` dual numbers) and the ``torch.func`` transforms
(``grad``, ``vjp``, ``jvp``, ``jacrev``, ``jacfwd``, ``hessian``) all raise
:class:`BlackBoxGradientError`, so an attempt fails loudly instead of silently giving nothing (a
``None`` tangent) or zeros. ``torch.func.vmap`` is refused before any query: the model would
classify the whole mapped batch while the budget counted one slice of it.
(This is an API boundary, not a security boundary: Python can always dig out the wrapped object.)

Budgets. Each wrapper may have its own budget (per model) and share a :class:`QueryBudget` with
other wrappers (the total over a pool). A call is all-or-nothing: before the model runs, the
whole batch is checked against both budgets; a batch that would cross either one raises
:class:`QueryBudgetExceeded` *before any input is classified* and charges nothing, so the count
never exceeds a budget, not even by part of a batch. Inverters decide what to do about it
(``on_budget="raise"`` lets the error through, ``"stop"`` checks :meth:`BlackBoxTeacher.can_query`
first and stops optimising).

References:
    Hu et al., "Learning to Learn from APIs: Black-Box Data-Free Meta-Learning" (BiDf-MKD), ICML 2023.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch._C import _functorch

__all__ = ["BlackBoxGradientError", "BlackBoxPool", "BlackBoxTeacher", "QueryBudget", "QueryBudgetExceeded"]

OUTPUTS = ("logits", "probs", "label")


class QueryBudgetExceeded(RuntimeError):
    """A batch would cross a query budget; nothing of it was classified or charged.

    Attributes:
        budget: the budget's name.
        limit: its allowance; ``spent``: queries spent before the refused call;
        requested: inputs in the refused call.

    Args:
        fix: what to do about it (default: raise the budget, query smaller batches, or let the
            inverter stop gracefully with ``on_budget='stop'``); a caller that already stops
            gracefully names another fix.
    """

    def __init__(self, budget: str, limit: int, spent: int, requested: int, fix: str | None = None) -> None:
        self.budget, self.limit, self.spent, self.requested = budget, limit, spent, requested
        if fix is None:
            fix = ("Raise the budget, query smaller batches (fewer images or directions q), or let the inverter "
                   "stop gracefully with on_budget='stop' (datafree.blackbox.on_budget)")
        super().__init__(
            f"query budget {budget!r} exceeded: {spent} of {limit} queries spent, a batch of {requested} "
            f"needs {requested} but only {limit - spent} remain (nothing of this batch was classified). {fix}"
        )


class BlackBoxGradientError(RuntimeError):
    """Raised when someone back-propagates through a black-box teacher's output."""


class QueryBudget:
    """A query allowance, shared by any number of :class:`BlackBoxTeacher` wrappers.

    Args:
        limit: inputs that may be classified in all (``None``: unlimited, only counted).
        name: shown in errors.
    """

    def __init__(self, limit: int | None, name: str = "total") -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"a query budget must be an int >= 0 or None (unlimited), got {limit!r}")
        self.limit = limit
        self.name = name
        self.spent = 0

    @property
    def remaining(self) -> int | None:
        """Queries left (``None``: unlimited)."""
        return None if self.limit is None else self.limit - self.spent

    def can_afford(self, n: int) -> bool:
        """Whether a batch of ``n`` inputs fits."""
        return self.limit is None or self.spent + n <= self.limit

    def check(self, n: int, fix: str | None = None) -> None:
        """Raise :class:`QueryBudgetExceeded` (with ``fix``) unless a batch of ``n`` inputs fits (charges nothing)."""
        if not self.can_afford(n):
            raise QueryBudgetExceeded(self.name, int(self.limit), self.spent, n, fix)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"QueryBudget(name={self.name!r}, spent={self.spent}, limit={self.limit})"


_NO_GRADIENT = (
    "cannot differentiate through a black-box teacher: it returns outputs only. Estimate gradients from "
    "outputs with dfml.inversion.zeroth_order.zo_gradient and push them into your generator with "
    "x.backward(estimate)"
)


class _RefuseGradient(torch.autograd.Function):
    """Identity on the (already computed) outputs whose every derivative refuses to exist.

    ``setup_context`` makes it usable under ``torch.func`` transforms; the backward (reverse mode,
    ``grad``/``vjp``/``jacrev``) and the jvp (dual numbers, ``jvp``/``jacfwd``) both raise, and the
    vmap rule is generated (the forward is a copy), so ``jacrev``/``jacfwd`` reach those raises.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, out: Tensor) -> Tensor:  # noqa: ARG004 (x only anchors the graph)
        return out.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor], output: Tensor) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None]:
        raise BlackBoxGradientError(_NO_GRADIENT)

    @staticmethod
    def jvp(ctx: Any, x_tangent: Tensor | None, out_tangent: Tensor | None) -> Tensor:
        raise BlackBoxGradientError(_NO_GRADIENT)


def _refuse_vmap(x: Tensor, name: str) -> None:
    """Refuse an input batched by ``torch.func.vmap`` (its ``shape[0]`` is one slice, not what runs)."""
    if _functorch.is_batchedtensor(x):
        raise TypeError(
            f"{name}: a black-box teacher cannot be vmapped (the model would classify the whole mapped batch "
            "while its query budget counted one slice); call it on the whole batch [B, ...] instead"
        )


class BlackBoxTeacher:
    """A classifier reachable only through its outputs, with exact query accounting.

    Args:
        model: the teacher, in eval mode (its outputs must not depend on the rest of the batch).
        output: ``"logits"``, ``"probs"`` (softmax) or ``"label"`` (top-1 class ids, int64).
        budget: queries this wrapper may make (``None``: unlimited).
        total: a budget shared with other wrappers (e.g. over the whole pool).
        n_outputs: number of classes if the API documents it (otherwise found by one counted query).
        name: shown in errors, e.g. ``"model 3"``.

    Shapes:
        ``__call__``: ``[B, *input_shape] -> [B, n_outputs]`` (``[B]`` for ``"label"``), on the
        input's device.

    Raises:
        ValueError: unknown ``output``, bad budget, or a model in training mode.
    """

    __slots__ = ("_BlackBoxTeacher__model", "_device", "_n_outputs", "budget", "name", "output", "total")

    def __init__(
        self,
        model: nn.Module,
        *,
        output: str = "logits",
        budget: int | None = None,
        total: QueryBudget | None = None,
        n_outputs: int | None = None,
        name: str = "teacher",
    ) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"BlackBoxTeacher wraps an nn.Module, got {type(model).__name__}")
        if model.training:
            raise ValueError(
                "the teacher must be in eval mode (outputs must not depend on the rest of the batch); call .eval()"
            )
        if total is not None and not isinstance(total, QueryBudget):
            raise TypeError(f"total must be a QueryBudget, got {type(total).__name__}")
        self.__model = model
        tensors = [*model.parameters(), *model.buffers()]
        self._device = tensors[0].device if tensors else torch.device("cpu")
        self.output = output
        self.name = name
        self.budget = QueryBudget(budget, name=f"{name} (per model)")
        self.total = total
        self._n_outputs = n_outputs

    @property
    def queries(self) -> int:
        """Inputs this wrapper has had classified."""
        return self.budget.spent

    @property
    def remaining(self) -> int | None:
        """Queries this wrapper may still make under both budgets (``None``: unlimited)."""
        left = [b.remaining for b in (self.budget, self.total) if b is not None and b.limit is not None]
        return min(left) if left else None  # type: ignore[type-var]

    def can_query(self, n: int) -> bool:
        """Whether a batch of ``n`` inputs fits both budgets."""
        return self.budget.can_afford(n) and (self.total is None or self.total.can_afford(n))

    def check_query(self, n: int, fix: str | None = None) -> None:
        """Raise :class:`QueryBudgetExceeded` (naming the budget that binds, with ``fix``) unless ``n`` inputs fit."""
        self.budget.check(n, fix)
        if self.total is not None:
            self.total.check(n, fix)

    @property
    def n_outputs(self) -> int:
        """Number of classes: given at construction, or learnt from the first call or :meth:`probe_outputs`."""
        if self._n_outputs is None:
            raise ValueError(
                f"{self.name}: the number of outputs is unknown; pass n_outputs=... to BlackBoxTeacher, or call "
                "probe_outputs(input_shape) (one counted query)"
            )
        return self._n_outputs

    def probe_outputs(self, input_shape: tuple[int, ...]) -> int:
        """Classify one zero input of ``input_shape`` to learn (and remember) the number of outputs."""
        if self._n_outputs is None:
            out = self.__forward(torch.zeros((1, *input_shape), device=self._device))
            self._n_outputs = int(out.shape[1])
        return self._n_outputs

    def __call__(self, x: Tensor) -> Tensor:
        """Classify ``x`` (all-or-nothing against the budgets); see the class docstring."""
        if not isinstance(x, Tensor) or x.dim() < 1:
            raise TypeError(f"{self.name}: expected a batch tensor [B, ...], got {type(x).__name__}")
        _refuse_vmap(x, self.name)
        out = self.__forward(x)
        if self.output == "probs":
            out = out.softmax(-1)
        elif self.output == "label":
            return out.argmax(-1).to(x.device)
        return _RefuseGradient.apply(x, out.to(x.device))  # a plain input gives a plain output

    def __forward(self, x: Tensor) -> Tensor:
        n = int(x.shape[0])
        self.budget.check(n)
        if self.total is not None:
            self.total.check(n)
        with torch.no_grad():
            out = self.__model(x.detach().to(self._device))
        self.budget.spent += n  # the model ran: charged even if its answer turns out malformed
        if self.total is not None:
            self.total.spent += n
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != n:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"{self.name}: the teacher must return logits [batch={n}, classes], got {shape}")
        if self._n_outputs is None:
            self._n_outputs = int(out.shape[1])
        return out.detach()

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"BlackBoxTeacher has no {name!r}: a black-box teacher exposes its outputs only (call it on a "
            "batch); its parameters, modules, hooks and BatchNorm statistics are not reachable"
        )

    def __repr__(self) -> str:
        total = f", total={self.total!r}" if self.total is not None else ""
        return f"BlackBoxTeacher(name={self.name!r}, output={self.output!r}, budget={self.budget!r}{total})"


class BlackBoxPool:
    """Budgeted black-box access to every model of a pool, with counts that survive reloading.

    Calling ``access(model, model_id)`` wraps a loaded pool model in a :class:`BlackBoxTeacher`
    whose per-model budget object is kept here by ``model_id`` (so a teacher dropped from a cache
    and loaded again keeps its count), sharing one :class:`QueryBudget` for the whole pool.
    ``state_dict`` holds every count, so a resumed run continues with the same allowances.

    Args:
        output: what the teachers return (``logits``, ``probs``, ``label``).
        per_model: queries allowed per model (``None``: unlimited).
        total: queries allowed over the pool (``None``: unlimited).
    """

    def __init__(self, output: str = "logits", per_model: int | None = None, total: int | None = None) -> None:
        self.output = output
        self.per_model = per_model
        self.total = QueryBudget(total, name="pool total")
        self.budgets: dict[int, QueryBudget] = {}

    def __call__(self, model: nn.Module, model_id: int) -> BlackBoxTeacher:
        teacher = BlackBoxTeacher(model, output=self.output, total=self.total, name=f"model {model_id}")
        if model_id not in self.budgets:
            self.budgets[model_id] = QueryBudget(self.per_model, name=f"model {model_id} (per model)")
        teacher.budget = self.budgets[model_id]
        return teacher

    @property
    def spent(self) -> int:
        """Queries spent over the pool."""
        return self.total.spent

    def remaining(self, model_id: int) -> int | None:
        """Queries model ``model_id`` may still make under both budgets (``None``: unlimited)."""
        own = self.budgets.get(model_id)
        left = [b for b in (self.per_model - own.spent if own is not None and self.per_model is not None
                            else self.per_model, self.total.remaining) if b is not None]
        return min(left) if left else None

    def can_afford(self, model_id: int, n: int) -> bool:
        """Whether model ``model_id`` may classify ``n`` more inputs (one not loaded yet has its whole allowance)."""
        left = self.remaining(model_id)
        return left is None or n <= left

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total.spent, "per_model": {i: b.spent for i, b in self.budgets.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total.spent = int(state["total"])
        self.budgets = {}
        for i, spent in state["per_model"].items():
            self.budgets[int(i)] = QueryBudget(self.per_model, name=f"model {int(i)} (per model)")
            self.budgets[int(i)].spent = int(spent)
