"""TaskMemory: recovered examples kept per class in ring buffers, sampled into new tasks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from ..types import ClassKey, Task, TaskSource
from .interpolate import interpolate, sample_lambda

__all__ = ["ClassKey", "MemoryConfig", "TaskMemory"]

# ClassKey: ``(dataset, class_id)``, from ``task.source.class_keys()``; ``dataset`` is a ``str`` or
# ``None`` so that ``state_dict`` loads with ``torch.load(..., weights_only=True)``.

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class MemoryConfig:
    """Settings of a :class:`TaskMemory`.

    Attributes:
        capacity_per_class: examples kept per class; the oldest is overwritten first (ring buffer).
        dtype: float dtype the examples are stored in (``"float32"``, ``"float64"``, ``"float16"``,
            ``"bfloat16"``).
    """

    capacity_per_class: int = 20
    dtype: str = "float32"

    def __post_init__(self) -> None:
        c = self.capacity_per_class
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise ValueError(f"memory.capacity_per_class must be an integer >= 1, got {c!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"memory.dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")


class TaskMemory:
    """A compact buffer of recovered tasks: one ring buffer of examples per class, on one device.

    ``add(task)`` files each support and query example under its class key ``(dataset, class_id)``
    (label ``k`` of a task is class ``task.source.class_keys()[k]``: the dataset comes from the
    task's provenance, so class 3 of one dataset never merges with class 3 of another) with its
    provenance (model id, step). ``sample`` draws a task across all stored classes, so classes
    recovered from different models meet in one task. The examples stay tensors on ``device`` in
    ``config.dtype``; ``state_dict`` holds everything, ring positions included, for exact resume.

    Args:
        config: capacity and dtype (default :class:`MemoryConfig`).
        device: where examples are kept; ``None``: the device of the first task added.

    Example:
        >>> memory = TaskMemory(MemoryConfig(capacity_per_class=20), device="cuda")
        >>> memory.add(task)  # task.source.classes names the class of every label
        >>> old = memory.sample(5, 1, 15, generator)

    References:
        Hu et al., "Task-Distributionally Robust Data-Free Meta-Learning", 2023 (task memory).
    """

    def __init__(self, config: MemoryConfig | None = None, *, device: torch.device | str | None = None) -> None:
        self.config = config or MemoryConfig()
        if not isinstance(self.config, MemoryConfig):
            raise TypeError(f"config must be a MemoryConfig, got {type(self.config).__name__}")
        self.device = torch.device(device) if device is not None else None
        self.dtype = _DTYPES[self.config.dtype]
        self.input_shape: tuple[int, ...] | None = None
        self._slots: dict[ClassKey, dict[str, Any]] = {}

    # ---------------------------------------------------------------- content
    def __len__(self) -> int:
        """Number of stored examples over all classes."""
        return sum(s["count"] for s in self._slots.values())

    @property
    def num_classes(self) -> int:
        """Number of class keys with at least one stored example."""
        return len(self._slots)

    def classes(self) -> list[ClassKey]:
        """The class keys in the order they were first added."""
        return list(self._slots)

    def count(self, key: ClassKey) -> int:
        """Stored examples of class ``key`` (``0`` for an unknown key)."""
        slot = self._slots.get(key)
        return 0 if slot is None else int(slot["count"])

    def can_sample(self, n_way: int, n_shot: int, n_query: int) -> bool:
        """Whether at least ``n_way`` classes hold ``n_shot + n_query`` examples."""
        return len(self._eligible(n_shot + n_query)) >= n_way

    def __repr__(self) -> str:
        return (
            f"TaskMemory(classes={self.num_classes}, examples={len(self)}, "
            f"capacity_per_class={self.config.capacity_per_class}, device={self.device})"
        )

    # -------------------------------------------------------------------- add
    def add(self, task: Task, *, step: int | None = None) -> None:
        """Store every support and query example of ``task`` under its class, overwriting the oldest.

        Args:
            task: labels ``0..n_way-1``; ``task.source.classes[k]`` is the class of label ``k``.
            step: the step recorded as provenance (default ``task.source.step``; ``-1`` if unknown).

        Raises:
            TypeError: ``task`` is not a ``Task``, or its inputs are not floating point.
            ValueError: ``task.source.classes`` is missing or too short for its labels, or the input
                shape differs from the stored one.
        """
        if not isinstance(task, Task):
            raise TypeError(f"TaskMemory.add takes a dfml.Task, got {type(task).__name__}")
        source = task.source
        if source is None or not source.classes:
            raise ValueError(
                "the task has no source classes, so its examples cannot be filed by class; build it with "
                "source=TaskSource(model_id=..., classes=(class id of label 0, label 1, ...), step=...)"
            )
        if not task.support_x.is_floating_point():
            raise TypeError(f"task inputs must be floating point, got {task.support_x.dtype}")
        shape = tuple(task.support_x.shape[1:])
        if self.input_shape is not None and shape != self.input_shape:
            raise ValueError(
                f"task inputs have shape {shape} but this memory stores {self.input_shape}; keep one input "
                "shape per TaskMemory (use one memory per input shape)"
            )
        x = torch.cat([task.support_x, task.query_x])
        y = torch.cat([task.support_y, task.query_y]).to(torch.int64)
        n_labels = int(y.max()) + 1 if y.numel() else 0
        if n_labels > len(source.classes) or (y.numel() and int(y.min()) < 0):
            raise ValueError(
                f"labels run to {n_labels - 1} but source.classes has {len(source.classes)} entries "
                f"{tuple(source.classes)}; give one class id per label 0..n_way-1"
            )
        if self.device is None:
            self.device = x.device
        self.input_shape = shape
        x = x.detach().to(device=self.device, dtype=self.dtype)
        keys = source.class_keys()
        model_id = -1 if source.model_id is None else int(source.model_id)
        step = source.step if step is None else step
        step = -1 if step is None else int(step)
        for label in range(n_labels):
            rows = (y == label).nonzero().flatten().to(self.device)
            if rows.numel():
                self._write(keys[label], x[rows], model_id, step)

    def _write(self, key: ClassKey, x: Tensor, model_id: int, step: int) -> None:
        cap = self.config.capacity_per_class
        slot = self._slots.get(key)
        if slot is None:
            slot = {
                "x": torch.zeros(cap, *x.shape[1:], dtype=self.dtype, device=self.device),
                "model_id": torch.full((cap,), -1, dtype=torch.int64, device=self.device),
                "step": torch.full((cap,), -1, dtype=torch.int64, device=self.device),
                "count": 0,
                "next": 0,
            }
            self._slots[key] = slot
        n = x.shape[0]
        pos = (slot["next"] + torch.arange(n, device=self.device)) % cap
        keep = slice(max(n - cap, 0), n)  # only the last `cap` examples survive
        slot["x"][pos[keep]] = x[keep]
        slot["model_id"][pos[keep]] = model_id
        slot["step"][pos[keep]] = step
        slot["next"] = (slot["next"] + n) % cap
        slot["count"] = min(slot["count"] + n, cap)

    def forget(self, model_ids: Sequence[int]) -> int:
        """Drop every stored example recovered from the given models; returns how many were dropped.

        The remaining examples of a class keep their order (oldest first) and the ring continues
        after them; a class left with no examples is removed. Used to stop replaying tasks of models
        the reliability weigher has learned to distrust.
        """
        drop = {int(m) for m in model_ids}
        if not drop:
            return 0
        dropped = torch.tensor(sorted(drop), device=self.device)
        removed = 0
        for key in list(self._slots):
            slot = self._slots[key]
            count, cap = slot["count"], self.config.capacity_per_class
            order = torch.arange(count, device=self.device)
            if count == cap:  # full ring: the oldest example sits at `next`
                order = (order + slot["next"]) % cap
            mids = slot["model_id"][order]
            bad = torch.isin(mids, dropped)
            n_bad = int(bad.sum())
            if n_bad == 0:
                continue
            removed += n_bad
            keep = order[~bad]
            if keep.numel() == 0:
                del self._slots[key]
                continue
            k = int(keep.numel())
            for name, fill in (("x", 0), ("model_id", -1), ("step", -1)):
                kept = slot[name][keep].clone()
                slot[name].fill_(fill)
                slot[name][:k] = kept
            slot["count"], slot["next"] = k, k % cap
        return removed

    # ----------------------------------------------------------------- sample
    def _eligible(self, per_class: int) -> list[ClassKey]:
        return [k for k, s in self._slots.items() if s["count"] >= per_class]

    def sample(self, n_way: int, n_shot: int, n_query: int, generator: torch.Generator) -> Task:
        """A plain memory task: ``n_way`` random stored classes, ``n_shot + n_query`` random examples each.

        Args:
            n_way, n_shot, n_query: task shape.
            generator: a CPU ``torch.Generator``; the draw depends on it alone (never the global RNG).

        Returns:
            A task on the memory's device: ``support_x [n_way * n_shot, *input_shape]``, labels
            ``0..n_way-1`` grouped by class, ``source.kind="memory"``, ``source.classes`` the class
            ids, ``source.model_id`` the model when all examples share one (else ``None``) and
            ``source.extra`` with ``class_keys`` and per-example ``support_model_ids``,
            ``support_steps``, ``query_model_ids``, ``query_steps`` (int64, ``-1`` if unknown).

        Raises:
            ValueError: a non-positive shape, or fewer than ``n_way`` classes holding
                ``n_shot + n_query`` examples.
        """
        for name, v in (("n_way", n_way), ("n_shot", n_shot), ("n_query", n_query)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        per_class = n_shot + n_query
        eligible = self._eligible(per_class)
        if len(eligible) < n_way:
            raise ValueError(
                f"only {len(eligible)} classes hold n_shot + n_query = {per_class} examples, fewer than "
                f"n_way={n_way} (memory: {self.num_classes} classes, capacity_per_class="
                f"{self.config.capacity_per_class}); add more tasks first (check can_sample()) or raise "
                "capacity_per_class"
            )
        chosen = [eligible[int(i)] for i in torch.randperm(len(eligible), generator=generator)[:n_way]]
        xs, mids, steps = [], [], []
        for key in chosen:
            slot = self._slots[key]
            idx = torch.randperm(slot["count"], generator=generator)[:per_class].to(self.device)
            xs.append(slot["x"][idx])
            mids.append(slot["model_id"][idx])
            steps.append(slot["step"][idx])
        x, mid, stp = torch.stack(xs), torch.stack(mids), torch.stack(steps)  # [n_way, per_class, ...]
        shape = x.shape[2:]
        models = torch.unique(mid)
        return Task(
            support_x=x[:, :n_shot].reshape(-1, *shape),
            support_y=torch.arange(n_way, device=self.device).repeat_interleave(n_shot),
            query_x=x[:, n_shot:].reshape(-1, *shape),
            query_y=torch.arange(n_way, device=self.device).repeat_interleave(n_query),
            source=TaskSource(
                model_id=int(models[0]) if models.numel() == 1 and int(models[0]) >= 0 else None,
                classes=tuple(k[1] for k in chosen),
                step=None,
                kind="memory",
                extra={
                    "class_keys": tuple(chosen),
                    "support_model_ids": mid[:, :n_shot].reshape(-1),
                    "support_steps": stp[:, :n_shot].reshape(-1),
                    "query_model_ids": mid[:, n_shot:].reshape(-1),
                    "query_steps": stp[:, n_shot:].reshape(-1),
                },
            ),
        )

    def sample_interpolated(
        self,
        n_way: int,
        n_shot: int,
        n_query: int,
        generator: torch.Generator,
        alpha: float = 0.5,
        level: str = "input",
        layer: int | Sequence[int] | None = None,
    ) -> Task:
        """Two memory tasks mixed class by class with ``lam ~ Beta(alpha, alpha)``.

        Draws, in this order from ``generator``: the first task, the partner, ``lam``, then the
        layer when ``layer`` is a sequence (one of its entries, uniformly).

        Args:
            n_way, n_shot, n_query, generator: as in :meth:`sample`.
            alpha: Beta concentration (small: ``lam`` near 0 or 1; 1: uniform).
            level: ``"input"`` or ``"feature"`` (see :func:`dfml.memory.interpolate`).
            layer: for ``"feature"``: an encoder layer, or candidates to draw one from.

        Returns:
            A task with ``source.kind="interpolated"`` (the first task's labels and classes).

        References:
            Hu et al., "Task-Distributionally Robust Data-Free Meta-Learning", 2023;
            Yao et al., "Meta-Learning with Fewer Tasks through Task Interpolation", ICLR 2022.
        """
        if level == "feature" and isinstance(layer, Sequence) and len(layer) == 0:
            raise ValueError("layer is an empty sequence; give an encoder layer or candidates, e.g. layer=(1, 2, 3)")
        a = self.sample(n_way, n_shot, n_query, generator)
        b = self.sample(n_way, n_shot, n_query, generator)
        lam = sample_lambda(alpha, generator)
        if level == "feature" and isinstance(layer, Sequence):
            layer = int(layer[int(torch.randint(len(layer), (1,), generator=generator))])
        return interpolate(a, b, lam, level=level, layer=layer)  # type: ignore[arg-type]

    interpolate = staticmethod(interpolate)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything to resume exactly (examples, provenance, ring positions); tensors are copies."""
        return {
            "config": asdict(self.config),
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "keys": [[k[0], k[1]] for k in self._slots],
            "slots": [
                {
                    "x": s["x"].clone(),
                    "model_id": s["model_id"].clone(),
                    "step": s["step"].clone(),
                    "count": s["count"],
                    "next": s["next"],
                }
                for s in self._slots.values()
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (onto this memory's device, or the stored one if unset).

        Raises:
            ValueError: the state was saved with another ``MemoryConfig``.
        """
        saved = MemoryConfig(**state["config"])
        if saved != self.config:
            raise ValueError(
                f"the state was saved with {saved} but this memory has {self.config}; build the TaskMemory "
                "with the saved config"
            )
        slots = {}
        for (dataset, cid), s in zip(state["keys"], state["slots"]):
            if self.device is None:
                self.device = s["x"].device
            slots[(dataset, int(cid))] = {
                "x": s["x"].to(device=self.device, dtype=self.dtype).clone(),
                "model_id": s["model_id"].to(self.device).clone(),
                "step": s["step"].to(self.device).clone(),
                "count": int(s["count"]),
                "next": int(s["next"]),
            }
        self._slots = slots
        self.input_shape = None if state["input_shape"] is None else tuple(state["input_shape"])
