"""The black-box inverter (BiDf-MKD): a white-box generator trained through teachers that answer with
outputs only, its gradients estimated from those outputs (:func:`~dfml.inversion.zeroth_order.zo_gradient`).

References:
    Hu et al., "Learning to Learn from APIs: Black-Box Data-Free Meta-Learning" (BiDf-MKD), ICML 2023.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_ranges
from ..models.generator import NORMS, build_generator
from ..types import Task
from .base import INVERTERS, Inverter, split_task
from .blackbox import BlackBoxTeacher
from .losses import kl_per_sample
from .zeroth_order import DIRECTIONS, zo_gradient

__all__ = ["BlackBoxInversionConfig", "BlackBoxInverter", "per_sample_loss"]


@dataclass(frozen=True)
class BlackBoxInversionConfig:
    """Hyper-parameters of :class:`BlackBoxInverter`.

    Attributes:
        steps: generator updates per task (each costs ``B * (q + 1)`` teacher queries).
        q: random directions per image and step.
        mu: smoothing radius of the estimate, on the inputs' scale.
        directions: ``"sphere"`` or ``"gaussian"``.
        lr: Adam learning rate on the generator's parameters.
        temperature: the teacher's logits are divided by it before the cross-entropy.
        boundary_weight: weight of the boundary term (needs a student; 0 disables it).
        on_budget: ``"raise"``: a step the budget cannot pay for raises ``QueryBudgetExceeded``;
            ``"stop"``: stop optimising and return the best images so far, marked
            ``budget_exhausted`` in the task's provenance, leaving unspent the ``reserve`` the
            caller asked for (e.g. the distillation's teacher logits); a data-free stream then
            selects only models that can fund a task (:meth:`BlackBoxInverter.task_queries`) and
            ends meta-training when none can.
        nz, width, norm: shape of the default generator (see :func:`dfml.models.build_generator`).
        conditional: feed the target labels to the generator (``generator(z, y)``).
        mean, std: per-channel normalisation applied to the generator's ``[0, 1]`` images before the
            teacher sees them (the teacher's training normalisation, e.g. the dataset's); the tasks hold
            the normalised images, like real episodes. ``None``: the generator's output as it is.
        block: directions constant over ``block x block`` pixel tiles (see :func:`zo_gradient`);
            fewer queries for the same accuracy on images, ``1`` for per-pixel directions.
    """

    steps: int = 100
    q: int = 20
    mu: float = 1e-2
    directions: str = "sphere"
    lr: float = 1e-2
    temperature: float = 1.0
    boundary_weight: float = 0.0
    on_budget: str = "raise"
    nz: int = 16
    width: int = 64
    norm: str = "batch"
    conditional: bool = False
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    block: int = 1

    def __post_init__(self) -> None:
        if self.block < 1:
            raise ValueError(f"block must be >= 1, got {self.block}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give the black-box inverter both mean and std, or neither")
        if self.std is not None and any(v <= 0 for v in self.std):
            raise ValueError(f"std values must be > 0, got {self.std}")
        if self.steps < 1:
            raise ValueError(f"inversion steps must be >= 1, got {self.steps}")
        if self.q < 1:
            raise ValueError(f"the number of directions q must be >= 1, got {self.q}")
        if not (self.mu > 0 and self.lr > 0 and self.temperature > 0):
            raise ValueError(f"mu, lr and temperature must be > 0, got {self.mu}, {self.lr}, {self.temperature}")
        if self.directions not in DIRECTIONS:
            raise ValueError(f"directions must be one of {DIRECTIONS}, got {self.directions!r}")
        if self.on_budget not in ("raise", "stop"):
            raise ValueError(f"on_budget must be 'raise' or 'stop', got {self.on_budget!r}")
        if self.nz < 1 or self.norm not in NORMS:
            raise ValueError(f"need nz >= 1 and norm in {list(NORMS)}, got nz={self.nz}, norm={self.norm!r}")
        if self.boundary_weight < 0:
            raise ValueError(f"boundary_weight must be >= 0, got {self.boundary_weight}")
        check_ranges(self, "BlackBoxInversionConfig.", counts=("width",), positive=("mu", "lr", "temperature"),
                     nonnegative=("boundary_weight",))


def per_sample_loss(
    teacher_out: Tensor,
    targets: Tensor,
    *,
    probs: bool = False,
    temperature: float = 1.0,
    student_logits: Tensor | None = None,
    boundary_weight: float = 0.0,
) -> Tensor:
    """The black-box inversion loss per row, from the teacher's outputs only: ``[N]``.

    ``CE(teacher / T, target)`` plus ``boundary_weight`` times the per-row term of
    :func:`~dfml.inversion.losses.boundary_loss` (its batch mean equals that function). With
    ``probs`` the teacher's outputs are probabilities and ``log p`` serves as its logits.
    """
    logits = teacher_out.clamp_min(1e-12).log() if probs else teacher_out
    loss = F.cross_entropy(logits / temperature, targets, reduction="none")
    if student_logits is not None and boundary_weight > 0:
        kl = kl_per_sample(student_logits, logits, temperature)
        agree = (student_logits.argmax(-1) == logits.argmax(-1)).to(kl.dtype)
        loss = loss - boundary_weight * agree * kl
    return loss


@INVERTERS.register("blackbox")
class BlackBoxInverter(Inverter):
    """Recover pseudo tasks from black-box teachers: a white-box generator, zeroth-order gradients.

    For every task a fresh generator is built (its weights drawn from the caller's
    ``torch.Generator``; replace :attr:`make_generator` for another one). Each step generates the
    batch ``x = generator(z)`` (``z`` fixed per task), estimates every
    image's loss gradient from the teacher's outputs with :func:`zo_gradient` (one batched call,
    ``B * (q + 1)`` queries) and pushes it into the generator with ``x.backward(g / B)``. Every
    image slot keeps its lowest-loss version among those the teacher has already scored; after
    the last step the final batch is scored too (``B`` queries) when the budget allows.

    Queries of one task: ``steps * B * (q + 1)`` plus ``B`` for the final scoring, plus one probe
    for the number of classes when the teacher did not state it.

    Args:
        input_shape: shape of one teacher input, ``(C, H, W)`` or ``(D,)``.
        config: hyper-parameters.
        device: where generators are built and inputs made (the teacher wrapper moves them to
            the teacher's device and its answers back).

    Attributes:
        make_generator: ``(n_way, torch.Generator) -> nn.Module`` mapping ``z [B, config.nz]`` to
            inputs ``[B, *input_shape]`` (or ``(z, y) -> x`` when ``config.conditional``); ours, so
            autograd runs through it. Default: :func:`dfml.models.build_generator`, seeded.
        last_generator: the generator network of the last task (``None`` before the first);
            ``generator`` arguments are always random-number generators (``torch.Generator``).

    Example:
        >>> inv = BlackBoxInverter((32,), BlackBoxInversionConfig(steps=10, q=5, on_budget="stop"))
        >>> task = inv.invert(BlackBoxTeacher(pool.load(0), budget=1500), 2, 2, torch.Generator().manual_seed(0))

    References:
        Hu et al., BiDf-MKD, ICML 2023.
    """

    black_box = True
    boundary = True

    def __init__(
        self,
        input_shape: tuple[int, ...],
        config: BlackBoxInversionConfig | None = None,
        *,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(input_shape)
        self.config = config or BlackBoxInversionConfig()
        self.device = torch.device(device)
        self.make_generator: Callable[[int, torch.Generator], nn.Module] = self._default_generator
        self.last_generator: nn.Module | None = None

    @property
    def generator(self) -> nn.Module | None:
        """The earlier name of :attr:`last_generator` (kept so that existing code works)."""
        return self.last_generator

    def _default_generator(self, n_way: int, rng: torch.Generator) -> nn.Module:
        cfg = self.config
        seed = int(torch.randint(0, 2**62, (1,), generator=rng))
        with torch.random.fork_rng(devices=[]):  # weights from rng only; the global RNG is left alone
            torch.manual_seed(seed)
            return build_generator(
                self.input_shape, nz=cfg.nz, width=cfg.width, norm=cfg.norm, n_classes=n_way if cfg.conditional else 0
            )

    def synthesize(
        self,
        teacher: BlackBoxTeacher | nn.Module,
        n_per_class: int,
        generator: torch.Generator,
        *,
        student: nn.Module | None = None,
        reserve: int = 0,
    ) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """Generate ``n_per_class`` inputs for every class of ``teacher``.

        With ``on_budget="stop"``, every step and the final scoring leave ``reserve`` queries of the
        teacher's budgets unspent, for the caller's later queries of this teacher.

        Returns:
            ``(x, y, report)``: inputs ``[n_way * n_per_class, *input_shape]`` (detached), labels
            grouped by class, and a report: ``teacher_queries`` and ``steps`` of this call,
            ``teacher_accuracy`` (of the teacher on the returned inputs, from scores already paid
            for), ``budget_exhausted`` (stopped early under ``on_budget="stop"``) and
            ``final_scored`` (whether the budget paid for scoring the last generator update).

        Raises:
            QueryBudgetExceeded: a step does not fit the budget and ``on_budget="raise"``, or not
                even the first step fits (with the reserve: there is nothing to return); the
                latter charges nothing beyond the probe for the number of outputs.
            ValueError: the teacher returns labels only.
        """
        bb = teacher if isinstance(teacher, BlackBoxTeacher) else BlackBoxTeacher(teacher)
        return self._synthesize(bb, n_per_class, generator, student, bb.queries, reserve)

    def task_queries(self, n_classes: int, n_shot: int, n_query: int, reserve: int = 0) -> int | None:
        """The fewest queries one task of a teacher with ``n_classes`` outputs costs under ``on_budget="stop"``:
        a probe for the number of outputs, one zeroth-order step and ``reserve``. ``None`` under
        ``"raise"``: nothing is planned, a step that does not fit raises."""
        if self.config.on_budget != "stop":
            return None
        return 1 + n_classes * (n_shot + n_query) * (self.config.q + 1) + reserve

    def _synthesize(
        self, bb: BlackBoxTeacher, n_per_class: int, generator: torch.Generator, student: nn.Module | None, start: int,
        reserve: int = 0,
    ) -> tuple[Tensor, Tensor, dict[str, Any]]:
        """:meth:`synthesize` on a wrapped teacher; every query since ``start`` is charged to this task."""
        if bb.output == "label":
            raise ValueError("zeroth-order inversion needs scores; wrap the teacher with output='logits' or 'probs'")
        cfg = self.config
        device = self.device
        with self.cost.timed(device):
            n_way = bb.probe_outputs(self.input_shape)
            gen = self.last_generator = self.make_generator(n_way, generator).to(device)
            y = torch.arange(n_way, device=device).repeat_interleave(n_per_class)
            z = torch.randn((len(y), cfg.nz), generator=generator).to(device)
            best = _Best(len(y))
            keep = reserve if cfg.on_budget == "stop" else 0
            steps, exhausted = self._optimise(gen, bb, z, y, generator, student, best, keep)
            final_scored = bb.can_query(len(y) + keep)
            if final_scored:
                with torch.no_grad():
                    x = self._generate(gen, z, y)
                best.update(x, *self._score(bb, x, y, student))
        queries = bb.queries - start
        self.charge(queries, steps, len(y))
        accuracy = float((best.pred == y.cpu()).float().mean())
        report = dict(
            teacher_queries=queries, steps=steps, teacher_accuracy=accuracy, budget_exhausted=exhausted,
            final_scored=final_scored,
        )
        return best.x, y, report

    def invert(
        self,
        teacher: BlackBoxTeacher | nn.Module,
        n_shot: int,
        n_query: int,
        generator: torch.Generator,
        *,
        model_id: int | None = None,
        classes: tuple[int, ...] = (),
        student: nn.Module | None = None,
        reserve: int = 0,
    ) -> Task:
        """Recover one pseudo task (support + query) for ``teacher``'s own classes.

        The report of :meth:`synthesize` lands in ``task.source.extra`` (with ``kind="black-box"``);
        ``reserve`` is as there.
        """
        if n_shot < 1 or n_query < 0:
            raise ValueError(f"need n_shot >= 1 and n_query >= 0, got n_shot={n_shot}, n_query={n_query}")
        bb = teacher if isinstance(teacher, BlackBoxTeacher) else BlackBoxTeacher(teacher)
        start = bb.queries
        with self.cost.timed(self.device):
            n_way = bb.probe_outputs(self.input_shape)  # remembered: no second probe below
        if classes and len(classes) != n_way:
            self.cost.teacher_queries += bb.queries - start
            raise ValueError(
                f"classes {tuple(classes)} name {len(classes)} classes but the teacher has {n_way} outputs; "
                "pass one class id per output (in output order) or none"
            )
        x, y, report = self._synthesize(bb, n_shot + n_query, generator, student, start, reserve)
        task = split_task(x, n_way, n_shot, n_query, model_id=model_id, classes=classes, kind="black-box")
        return replace(task, source=replace(task.source, extra=report))

    def _optimise(
        self,
        gen: nn.Module,
        bb: BlackBoxTeacher,
        z: Tensor,
        y: Tensor,
        generator: torch.Generator,
        student: nn.Module | None,
        best: _Best,
        reserve: int = 0,
    ) -> tuple[int, bool]:
        """Up to ``config.steps`` zeroth-order steps on ``gen``; returns ``(steps done, stopped by the budget)``.

        Under ``on_budget="stop"`` a step runs only if it leaves ``reserve`` queries; the first one
        must (there is nothing to return without it).
        """
        cfg = self.config
        opt = torch.optim.Adam(gen.parameters(), lr=cfg.lr)
        need = len(y) * (cfg.q + 1)
        for step in range(cfg.steps):
            if cfg.on_budget == "stop" and not bb.can_query(need + reserve):
                if step > 0:
                    return step, True
                kept = f" + {reserve} kept for later queries of this teacher" if reserve else ""
                bb.check_query(need + reserve, fix=(
                    f"On a budget the inverter stops gracefully, but not even the first step of this task fits "
                    f"({need} queries{kept}), so there are no images to return: raise the budget or query smaller "
                    "batches (fewer images or directions q)"))
            x = self._generate(gen, z, y)
            scored: list[Tensor] = []

            def loss_fn(rows: Tensor, index: Tensor) -> Tensor:
                loss, pred = self._score(bb, rows, y[index], student)
                scored.append(pred[: len(y)])
                return loss

            g, f0 = zo_gradient(loss_fn, x, generator, q=cfg.q, mu=cfg.mu, directions=cfg.directions,
                                block=cfg.block)
            best.update(x.detach(), f0, scored[0])
            opt.zero_grad(set_to_none=True)
            x.backward(g / len(y))
            opt.step()
        return cfg.steps, False

    def _score(
        self, bb: BlackBoxTeacher, rows: Tensor, targets: Tensor, student: nn.Module | None
    ) -> tuple[Tensor, Tensor]:
        """Per-row loss and the teacher's top-1 class for ``rows`` (one batched teacher call)."""
        out = bb(rows.detach())
        s_logits = None
        if student is not None and self.config.boundary_weight > 0:
            with torch.no_grad():
                s_logits = student(rows.detach())
        loss = per_sample_loss(
            out, targets, probs=bb.output == "probs", temperature=self.config.temperature,
            student_logits=s_logits, boundary_weight=self.config.boundary_weight,
        )
        return loss, out.argmax(-1)

    def _generate(self, gen: nn.Module, z: Tensor, y: Tensor) -> Tensor:
        x = gen(z, y) if self.config.conditional else gen(z)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"the generator made inputs of shape {tuple(x.shape[1:])}, expected {self.input_shape}")
        cfg = self.config
        if cfg.mean is not None and cfg.std is not None:
            if len(cfg.mean) != x.shape[1] or len(cfg.std) != x.shape[1]:
                raise ValueError(
                    f"mean/std have {len(cfg.mean)}/{len(cfg.std)} values but the inputs have {x.shape[1]} channels; "
                    "give one value per channel"
                )
            view = (1, -1) + (1,) * (x.dim() - 2)
            mean = torch.tensor(cfg.mean, dtype=x.dtype, device=x.device).view(view)
            std = torch.tensor(cfg.std, dtype=x.dtype, device=x.device).view(view)
            x = (x - mean) / std
        return x


class _Best:
    """Per image slot, the lowest-loss version the teacher has scored."""

    def __init__(self, n: int) -> None:
        self.loss = torch.full((n,), float("inf"))
        self.x: Tensor | None = None
        self.pred = torch.full((n,), -1, dtype=torch.long)

    def update(self, x: Tensor, loss: Tensor, pred: Tensor) -> None:
        better = loss.detach().cpu() < self.loss
        if self.x is None:
            self.x = x.detach().clone()
        keep = better.to(x.device).view(-1, *([1] * (x.dim() - 1)))
        self.x = torch.where(keep, x.detach(), self.x)
        self.loss = torch.where(better, loss.detach().cpu(), self.loss)
        self.pred = torch.where(better, pred.cpu(), self.pred)
