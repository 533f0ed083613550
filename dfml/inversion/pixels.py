"""The simplest white-box inversion: optimise the inputs themselves.

Learnable inputs (images or feature vectors), a fixed number per class, are optimised so that
the frozen teacher classifies them as their target class, while a prior keeps them plausible:
the BatchNorm-statistics match of DeepInversion (for teachers with BatchNorm: the batch mean and
variance entering every BN layer should equal the layer's running statistics) plus an L2 penalty.
The recovered inputs become a pseudo task: support and query sets for the teacher's own classes,
labels ``0..n_way-1`` in the teacher's output order.

References:
    Yin et al., "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion", CVPR 2020.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import check_ranges
from ..types import Task
from .base import INVERTERS, Inverter, split_task
from .losses import BNStatMatch, class_loss, l2_prior


@dataclass(frozen=True)
class PixelInversionConfig:
    """Hyper-parameters of :class:`PixelInverter`.

    Attributes:
        steps: optimisation steps per model.
        lr: Adam learning rate on the inputs.
        bn_weight: weight of the BatchNorm-statistics loss (teachers without BN ignore it).
        l2_weight: weight of the mean squared input (a Gaussian prior on normalised inputs).
        init_std: standard deviation of the Gaussian the inputs start from.
    """

    steps: int = 200
    lr: float = 0.1
    bn_weight: float = 1.0
    l2_weight: float = 1e-2
    init_std: float = 1.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"inversion steps must be >= 1, got {self.steps}")
        if self.lr <= 0:
            raise ValueError(f"inversion lr must be > 0, got {self.lr}")
        check_ranges(self, "PixelInversionConfig.", positive=("lr", "init_std"), nonnegative=("bn_weight", "l2_weight"))


@INVERTERS.register("pixel")
class PixelInverter(Inverter):
    """Recover a pseudo task from a frozen classifier by optimising its inputs.

    Args:
        input_shape: shape of one input, e.g. ``(3, 32, 32)`` or ``(32,)``.
        config: hyper-parameters.
    """

    def __init__(self, input_shape: tuple[int, ...], config: PixelInversionConfig | None = None) -> None:
        super().__init__(input_shape)
        self.config = config or PixelInversionConfig()

    def synthesize(self, teacher: nn.Module, n_per_class: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Optimise ``n_per_class`` inputs for every output class of ``teacher``.

        Returns:
            ``(x, y)``: inputs ``[n_way * n_per_class, *input_shape]`` (detached) and labels
            ``[n_way * n_per_class]`` grouped by class.
        """
        if teacher.training:
            raise ValueError("the teacher must be in eval mode (its BN running statistics are the prior); call .eval()")
        device = next(teacher.parameters()).device
        n_way = self.count_classes(teacher)
        y = torch.arange(n_way, device=device).repeat_interleave(n_per_class)
        x0 = torch.randn((len(y), *self.input_shape), generator=generator) * self.config.init_std
        x = x0.to(device).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=self.config.lr)
        with self.cost.timed(device), BNStatMatch(teacher) as bn:
            for _ in range(self.config.steps):
                opt.zero_grad(set_to_none=True)
                loss = class_loss(teacher(x), y) + self.config.l2_weight * l2_prior(x)
                bn_loss = bn.loss()
                if bn_loss is not None:
                    loss = loss + self.config.bn_weight * bn_loss
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"inversion loss became {loss.item()}; lower the inversion lr (now {self.config.lr})"
                    )
                loss.backward()
                opt.step()
        for p in teacher.parameters():  # the hooks never touch them, but grads must not leak out
            p.grad = None
        self.charge(self.config.steps * len(y), self.config.steps, len(y))
        return x.detach(), y

    def invert(
        self,
        teacher: nn.Module,
        n_shot: int,
        n_query: int,
        generator: torch.Generator,
        *,
        model_id: int | None = None,
        classes: tuple[int, ...] = (),
        student: nn.Module | None = None,
    ) -> Task:
        """Recover one pseudo task (support + query) for ``teacher``'s own classes."""
        x, y = self.synthesize(teacher, n_shot + n_query, generator)
        return split_task(x, int(y.max()) + 1, n_shot, n_query, model_id=model_id, classes=classes)
