"""Task interpolation: mix two tasks class by class, on inputs or on hidden features.

Input level mixes the inputs themselves. Feature level keeps the first task's inputs and carries
the partner's inputs, ``lam`` and the layer in a :class:`MixedInputs` tensor; the meta-model's
functional forward (``dfml.meta.functional_forward``) runs both through the encoder up to that
layer, mixes the hidden features and finishes the forward, so MAML differentiates through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..types import Task, TaskSource

__all__ = ["LEVELS", "MixedInputs", "interpolate", "sample_lambda"]

LEVELS = ("input", "feature")
"""Where tasks can be mixed: on the inputs or on hidden features of the meta-model's encoder."""

# Tensor methods a MixedInputs answers like a plain tensor (metadata only).
_METADATA: set[Callable[..., Any]] = {
    Tensor.shape.__get__,  # type: ignore[attr-defined]
    Tensor.device.__get__,  # type: ignore[attr-defined]
    Tensor.dtype.__get__,  # type: ignore[attr-defined]
    Tensor.requires_grad.__get__,  # type: ignore[attr-defined]
    Tensor.is_floating_point,
    Tensor.dim,
    Tensor.size,
    Tensor.numel,
    Tensor.__len__,
}
# Tensor methods applied to both the inputs and the partner inputs.
_MOVES: set[Callable[..., Any]] = {
    Tensor.to,
    Tensor.cpu,
    Tensor.cuda,
    Tensor.float,
    Tensor.double,
    Tensor.detach,
    Tensor.clone,
    Tensor.contiguous,
}


class MixedInputs(Tensor):
    """Inputs whose hidden features are mixed with a partner's inside the meta-model's forward.

    It is a tensor with the shape, dtype and device of ``inputs``, so it fits in a ``Task`` and
    moves with ``Task.to``. ``dfml.meta.functional_forward`` (hence MAML's inner loop and query
    forward, and ProtoNet) calls :meth:`dfml_forward`, which computes
    ``h = lam * f(inputs) + (1 - lam) * f(partner)`` where ``f`` is the encoder up to ``layer``
    (each branch normalised with its own batch statistics), then the rest of the network on ``h``.
    Metadata (shape, dtype, device), moves (``to``, ``cpu``, ``cuda``, ``clone``, ``detach``...) and ``torch.cat``
    of MixedInputs with the same ``lam`` and ``layer`` act on both tensors; any other use as a
    tensor raises ``TypeError`` rather than silently training on ``inputs``.

    Args:
        inputs: the first task's inputs ``[B, *input_shape]`` (they fix the labels).
        partner: the partner task's inputs ``[B, *input_shape]``, row ``i`` paired with row ``i``.
        lam: weight of ``inputs`` in ``[0, 1]``; ``1`` gives exactly the plain forward.
        layer: mix after ``encoder[:layer]`` (``0``: on the inputs, ``len(encoder)``: before the head).

    References:
        Yao et al., "Meta-Learning with Fewer Tasks through Task Interpolation" (MLTI), ICLR 2022;
        Hu et al., "Task-Distributionally Robust Data-Free Meta-Learning", 2023.
    """

    inputs: Tensor
    partner: Tensor
    lam: float
    layer: int

    @staticmethod
    def __new__(cls, inputs: Tensor, partner: Tensor, lam: float, layer: int) -> MixedInputs:
        if isinstance(inputs, MixedInputs) or isinstance(partner, MixedInputs):
            raise TypeError("MixedInputs cannot be nested; interpolate plain tasks")
        if inputs.shape != partner.shape:
            raise ValueError(
                f"inputs {tuple(inputs.shape)} and partner {tuple(partner.shape)} must have the same shape; "
                "pair tasks with equal n_way, n_shot, n_query and input shape"
            )
        obj = Tensor._make_subclass(cls, inputs.detach())
        obj.inputs = inputs
        obj.partner = partner.to(device=inputs.device, dtype=inputs.dtype)
        obj.lam = float(lam)
        obj.layer = int(layer)
        return obj

    def __init__(self, inputs: Tensor, partner: Tensor, lam: float, layer: int) -> None:
        pass  # everything is set in __new__

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _METADATA:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **kwargs)
        if func in _MOVES:
            self = args[0]
            return MixedInputs(
                func(self.inputs, *args[1:], **kwargs), func(self.partner, *args[1:], **kwargs), self.lam, self.layer
            )
        if func is torch.cat:
            return _cat(*args, **kwargs)
        name = getattr(func, "__name__", repr(func))
        raise TypeError(
            f"{name} is not defined on MixedInputs (feature-level interpolated inputs); run the model through "
            "dfml.meta.functional_forward (as MAML and ProtoNet do), or use level='input' interpolation"
        )

    def __repr__(self, *args: Any, **kwargs: Any) -> str:
        return f"MixedInputs(shape={tuple(self.shape)}, lam={self.lam}, layer={self.layer})"

    def dfml_forward(
        self, model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """The forward of ``model`` with features mixed after ``encoder[:layer]``.

        Args:
            model: an ``nn.Sequential`` encoder, or a network with an ``encoder`` (``nn.Sequential``)
                and a ``head`` whose forward is ``head(encoder(x))`` (dfml's Conv4, ResNets, MLP).
            params: fast weights, name -> tensor, as in ``model.named_parameters()``.
            buffers: optional buffers, name -> tensor.

        Returns:
            The output ``[B, ...]`` (logits for a network with a head, features for an encoder).

        Raises:
            TypeError: ``model`` has no ``nn.Sequential`` encoder.
            ValueError: ``layer`` is past the end of the encoder.
        """
        tensors = {**dict(buffers or {}), **dict(params)}
        if isinstance(model, nn.Sequential):
            encoder, head, prefix = model, None, ""
        elif isinstance(getattr(model, "encoder", None), nn.Sequential) and isinstance(
            getattr(model, "head", None), nn.Module
        ):
            encoder, head, prefix = model.encoder, model.head, "encoder."
        else:
            raise TypeError(
                f"feature-level mixing needs an nn.Sequential or a model with an nn.Sequential `encoder` and a "
                f"`head`, got {type(model).__name__}; use level='input' interpolation for this model"
            )
        if not 0 <= self.layer <= len(encoder):
            raise ValueError(
                f"layer={self.layer} is outside the encoder's 0..{len(encoder)} layers; pick a layer in that range"
            )
        enc = _strip(tensors, prefix)
        front, back = encoder[: self.layer], encoder[self.layer :]
        h_a = _call(front, enc, self.inputs)
        h_b = _call(front, enc, self.partner)
        h = _call(back, enc, self.lam * h_a + (1.0 - self.lam) * h_b)
        return h if head is None else functional_call(head, _strip(tensors, "head."), (h,))


def _cat(tensors: Sequence[Tensor], dim: int = 0) -> MixedInputs:
    """``torch.cat`` of MixedInputs that share ``lam`` and ``layer`` (ProtoNet embeds support and query at once)."""
    parts = list(tensors)
    mixed = [t for t in parts if isinstance(t, MixedInputs)]
    if len(mixed) != len(parts) or len({(t.lam, t.layer) for t in mixed}) != 1:
        raise TypeError(
            "torch.cat of MixedInputs needs MixedInputs only, all with the same lam and layer (the support and "
            "query of one interpolated task)"
        )
    inputs, partner = torch.cat([t.inputs for t in mixed], dim), torch.cat([t.partner for t in mixed], dim)
    return MixedInputs(inputs, partner, mixed[0].lam, mixed[0].layer)


def _strip(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _call(seq: nn.Sequential, tensors: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """``seq(x)`` with the entries of ``tensors`` that belong to ``seq``'s blocks (names keep their index)."""
    own = {k: v for k, v in tensors.items() if k.split(".", 1)[0] in seq._modules}
    return functional_call(seq, own, (x,))


def sample_lambda(alpha: float, generator: torch.Generator) -> float:
    """Draw ``lam ~ Beta(alpha, alpha)`` deterministically from ``generator`` (the global RNG is untouched).

    Raises:
        ValueError: ``alpha`` is not a positive number.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha must be a positive number (Beta(alpha, alpha)), got {alpha!r}; e.g. alpha=0.5")
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _aligned_partner(x_a: Tensor, y_a: Tensor, x_b: Tensor, y_b: Tensor, split: str) -> Tensor:
    """``x_b`` reordered so that row ``i`` has the label of row ``i`` of ``x_a`` (stable per class)."""
    if x_a.shape != x_b.shape:
        raise ValueError(
            f"{split} inputs differ in shape: {tuple(x_a.shape)} vs {tuple(x_b.shape)}; interpolate tasks with "
            "equal n_way, n_shot, n_query and input shape"
        )
    ia, ib = torch.argsort(y_a, stable=True), torch.argsort(y_b.to(y_a.device), stable=True)
    if not torch.equal(y_a[ia], y_b.to(y_a.device)[ib]):
        raise ValueError(
            f"the two tasks' {split} labels differ per class; both need the same labels 0..n_way-1 with equal "
            "counts (interpolate tasks of the same n_way, n_shot, n_query)"
        )
    partner = torch.empty_like(x_a)
    partner[ia] = x_b.to(device=x_a.device, dtype=x_a.dtype)[ib.to(x_a.device)]
    return partner


def interpolate(a: Task, b: Task, lam: float, *, level: str = "input", layer: int | None = None) -> Task:
    """Mix ``a`` and ``b`` class by class: label ``k`` of ``a`` with label ``k`` of ``b``, keeping ``a``'s labels.

    Support is paired with support and query with query, examples of one class in order.
    Input level: ``x = lam * x_a + (1 - lam) * x_b``. Feature level: the inputs become
    :class:`MixedInputs` and the mix happens after ``encoder[:layer]`` of the meta-model.

    Args:
        a: the first task; its labels, classes and step are kept.
        b: the partner, same ``n_way``, ``n_shot``, ``n_query`` and input shape as ``a``.
        lam: weight of ``a`` in ``[0, 1]`` (``1`` returns ``a``'s inputs exactly).
        level: ``"input"`` or ``"feature"``.
        layer: the encoder layer for ``level="feature"`` (``None`` for ``"input"``).

    Returns:
        A task with ``source.kind="interpolated"`` and ``source.extra`` holding ``lam``, ``level``,
        ``layer`` and both tasks' sources (``"first"``, ``"partner"``).

    Raises:
        ValueError: ``lam`` outside ``[0, 1]``, an unknown ``level``, a missing or stray ``layer``,
            or tasks whose shapes or per-class label counts differ.

    References:
        Yao et al., "Meta-Learning with Fewer Tasks through Task Interpolation" (MLTI), ICLR 2022;
        Hu et al., "Task-Distributionally Robust Data-Free Meta-Learning", 2023.
    """
    if not isinstance(a, Task) or not isinstance(b, Task):
        raise TypeError(f"interpolate takes two dfml.Task, got {type(a).__name__} and {type(b).__name__}")
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be a number in [0, 1], got {lam!r}; draw it with sample_lambda(alpha, generator)")
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    if level == "feature" and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 0):
        raise ValueError(f"level='feature' needs layer, an integer >= 0 (mix after encoder[:layer]), got {layer!r}")
    if level == "input" and layer is not None:
        raise ValueError(f"layer={layer!r} only applies to level='feature'; pass layer=None for level='input'")
    lam = float(lam)
    mixed = []
    for split in ("support", "query"):
        x_a, y_a = getattr(a, f"{split}_x"), getattr(a, f"{split}_y")
        x_b = _aligned_partner(x_a, y_a, getattr(b, f"{split}_x"), getattr(b, f"{split}_y"), split)
        mixed.append(lam * x_a + (1.0 - lam) * x_b if level == "input" else MixedInputs(x_a, x_b, lam, layer or 0))
    first = a.source or TaskSource()
    return Task(
        support_x=mixed[0],
        support_y=a.support_y,
        query_x=mixed[1],
        query_y=a.query_y,
        source=TaskSource(
            model_id=None,
            classes=first.classes,
            step=first.step,
            kind="interpolated",
            extra={"lam": lam, "level": level, "layer": layer, "first": a.source, "partner": b.source},
        ),
    )
