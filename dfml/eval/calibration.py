"""Inversion calibration after the inner loop: meta-test adaptation on real support + inverted pseudo-support.

A data-free meta-model is meta-trained on inverted (synthetic) tasks but meta-tested on real ones.
After the usual inner loop on an episode's real support set, :func:`calibrate` inverts the
*adapted* model into pseudo examples of the episode's classes, with the inversion objective of
meta-training (dfml's :class:`~dfml.inversion.PixelBankInverter`: class loss on augmented inputs, the
BatchNorm-statistics prior, TV/L2 priors), and takes further fine-tuning steps on
``support_weight * CE(support) + pseudo_weight * CE(pseudo-support)``, so the adapted model also
fits data of the kind it was meta-trained on. Only the support set is read: the function never
receives the query set.

The adapted meta-model has no running BatchNorm statistics (it normalises with batch statistics,
see :mod:`dfml.models.norm`), so the statistics prior of the inversion is the one thing that
defines "the adapted model's data": :func:`adapted_teacher` freezes a copy of the adapted network
whose BatchNorm layers hold the *support set's* statistics under the adapted weights, so that in
eval mode it computes exactly what the adapted network computes on the support batch. Each forward
pass of the fine-tuning normalises its own batch (support and pseudo-support separately).

References:
    Hu et al., "Architecture, Dataset and Model-Scale Agnostic Data-free Meta-Learning" (PURER,
    ICFIL: inversion calibration following inner loop), CVPR 2023.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..inversion.bank import PixelBankInverter, PixelBankConfig
from ..meta.inner import check_finetune, functional_forward
from ..models.norm import use_batch_stats
from ..types import Params

__all__ = ["CalibrationConfig", "adapted_teacher", "calibrate", "episode_generator"]


def _inversion_default() -> PixelBankConfig:
    return PixelBankConfig(per_class=5, steps=50)


@dataclass(frozen=True)
class CalibrationConfig:
    """Inversion calibration after the inner loop (meta-test only; off by default).

    Attributes:
        enabled: calibrate every meta-test episode (``evaluate`` then also reports the
            uncalibrated score of the same episodes and the paired difference).
        inversion: the inversion of the adapted model, one :meth:`PixelBankInverter.refine` of
            ``inversion.steps`` Adam steps on ``inversion.per_class`` inputs per class from
            Gaussian noise (default 5 per class, 50 steps; the other fields as in meta-training's
            bank: ``bn_weight`` 0.1 towards the support set's statistics, L2 0.01, crop-and-flip
            augmentation). The curriculum fields do not apply and must stay off.
        steps: fine-tuning steps after the inversion, from the adapted weights.
        lr: their step size (``None``: the meta-test fine-tuning ``lr``).
        support_weight: weight of the real support set's cross-entropy in those steps.
        pseudo_weight: weight of the pseudo-support's cross-entropy (``0``: no inversion at all,
            the steps are plain extra fine-tuning on the support set: the control arm).
        seed: seed of the inversions; episode ``i`` uses :func:`episode_generator` ``(seed, i)``.
    """

    enabled: bool = False
    inversion: PixelBankConfig = field(default_factory=_inversion_default)
    steps: int = 10
    lr: float | None = None
    support_weight: float = 1.0
    pseudo_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.inversion, PixelBankConfig):
            raise TypeError(f"CalibrationConfig.inversion must be a PixelBankConfig, got {type(self.inversion).__name__}")
        if self.inversion.curriculum:
            raise ValueError("CalibrationConfig.inversion.curriculum must be false: the calibration inverts the adapted "
                             "model once, with no student to make episodes harder for")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ValueError(f"CalibrationConfig.steps must be an integer >= 0, got {self.steps!r}")
        for name in ("support_weight", "pseudo_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"CalibrationConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"CalibrationConfig.lr must be > 0 or None (the meta-test lr), got {self.lr!r}")
        if isinstance(self.lr, int) and not isinstance(self.lr, bool):  # "--set ...lr=1" reads as an int
            object.__setattr__(self, "lr", float(self.lr))
        if self.support_weight == 0 and self.pseudo_weight == 0 and self.steps > 0:
            raise ValueError("CalibrationConfig.support_weight and pseudo_weight are both 0: the calibration steps "
                             "would have no loss; give one of them a positive weight or set steps=0")


def episode_generator(seed: int, index: int) -> torch.Generator:
    """The random source of episode ``index``'s inversion: the same whatever episodes come before it."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(index)) % 2**63)


def adapted_teacher(network: nn.Module, params: Params, support_x: Tensor) -> nn.Module:
    """A frozen eval-mode copy of ``network`` with ``params``, its BatchNorm statistics taken from ``support_x``.

    Every BatchNorm layer's running mean and (biased) variance are set to the statistics of its
    input when the support batch goes through the adapted network, so ``teacher(support_x)``
    equals the adapted network's batch-statistics output on the support set, and inversion's
    BatchNorm prior (:class:`~dfml.inversion.losses.BNStatMatch`) pulls inverted batches towards
    the support set's statistics. ``network`` and ``params`` are not modified.

    Args:
        network: the meta-model's network (any BatchNorm regime; the copy uses batch statistics
            while the support statistics are measured).
        params: the adapted weights ``{name: tensor}`` (names missing keep the network's own).
        support_x: the support inputs ``[n_way * n_shot, *input_shape]``.

    Returns:
        The teacher: eval mode, ``requires_grad=False`` everywhere.
    """
    teacher = use_batch_stats(copy.deepcopy(network))
    with torch.no_grad():
        for name, p in teacher.named_parameters():
            if name in params:
                p.copy_(params[name].detach())
    teacher.requires_grad_(False)
    layers = [m for m in teacher.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    stats: dict[nn.Module, tuple[Tensor, Tensor]] = {}

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], _out: Tensor) -> None:
        h = inputs[0]
        dims = [0] + list(range(2, h.dim()))
        stats[module] = (h.mean(dims), h.var(dims, unbiased=False))

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.no_grad():
            teacher(support_x)
    finally:
        for h in handles:
            h.remove()
    for m in layers:
        mean, var = stats[m]
        m.running_mean, m.running_var = mean.clone(), var.clone()
        m.num_batches_tracked = torch.tensor(1, device=mean.device)
        m.track_running_stats = True
    return teacher.eval()


def calibrate(
    network: nn.Module,
    params: Params,
    support_x: Tensor,
    support_y: Tensor,
    config: CalibrationConfig,
    generator: torch.Generator,
    *,
    lr: float | None = None,
    lr_setting: str = "CalibrationConfig.lr",
) -> tuple[Params, dict[str, Any]]:
    """Calibrate adapted weights: invert them into a pseudo-support set, then fine-tune on support + pseudo-support.

    Args:
        network: the meta-model's network in the batch-statistics regime (as ``evaluate`` holds it).
        params: the weights after the inner loop on the support set (not modified).
        support_x: real support inputs ``[n_way * n_shot, *input_shape]``.
        support_y: their labels ``[n_way * n_shot]`` in ``0..n_way-1``.
        config: the calibration settings (``config.enabled`` is not consulted here).
        generator: every random draw of the inversion comes from it (see :func:`episode_generator`).
        lr: the step size when ``config.lr`` is ``None`` (the meta-test fine-tuning rate).
        lr_setting: the configuration name of the step size, named when the steps diverge.

    Returns:
        The calibrated weights (detached, same keys as ``params``) and a dict
        ``{"pseudo_acc": the adapted model's accuracy on its own inverted examples (no augmentation)
        or None, "inversion": the inversion's last losses, "teacher_queries", "seconds"}``.

    Raises:
        ValueError: no step size (``config.lr`` and ``lr`` both ``None``) while ``config.steps > 0``.
        FloatingPointError: the fine-tuning steps diverged (a loss or weight not finite after them,
            checked once at the end; the message names ``lr_setting``).
    """
    rate = config.lr if config.lr is not None else lr
    if rate is None and config.steps > 0:
        raise ValueError("calibrate needs a step size: set CalibrationConfig.lr or pass lr= (the meta-test lr)")
    start = time.perf_counter()
    fast = {k: v.detach().requires_grad_(v.is_floating_point()) for k, v in params.items()}
    info: dict[str, Any] = {"pseudo_acc": None, "inversion": {}, "teacher_queries": 0}
    pseudo: tuple[Tensor, Tensor] | None = None
    if config.pseudo_weight > 0:
        teacher = adapted_teacher(network, fast, support_x)
        bank = PixelBankInverter(tuple(support_x.shape[1:]), config.inversion)
        info["inversion"] = bank.refine(teacher, 0, generator)
        images = bank.images(0)  # [n_out, per_class, *input_shape]
        labels = torch.arange(images.shape[0], device=images.device).repeat_interleave(images.shape[1])
        pseudo = (images.reshape(-1, *images.shape[2:]), labels)
        with torch.no_grad():
            info["pseudo_acc"] = float((teacher(pseudo[0]).argmax(-1) == labels).double().mean())
        info["teacher_queries"] = bank.cost.teacher_queries + len(labels)
    names = [k for k, v in fast.items() if v.requires_grad]
    for _ in range(config.steps):
        loss = config.support_weight * F.cross_entropy(functional_forward(network, fast, support_x), support_y)
        if pseudo is not None:
            loss = loss + config.pseudo_weight * F.cross_entropy(functional_forward(network, fast, pseudo[0]), pseudo[1])
        grads = torch.autograd.grad(loss, [fast[k] for k in names], allow_unused=True)
        for k, g in zip(names, grads):
            if g is not None:
                fast[k] = (fast[k] - rate * g).detach().requires_grad_(True)
    if config.steps > 0:
        check_finetune(loss, {k: fast[k] for k in names}, lr=rate, steps=config.steps, lr_setting=lr_setting)
    info["seconds"] = time.perf_counter() - start
    return {k: v.detach() for k, v in fast.items()}, info
