"""Per-model generator inversion: train a fresh generator against one frozen teacher, keep the best batch.

For every teacher a generator (seeded from the caller's ``torch.Generator``) and its noise ``z``
(one row per synthetic input, learnable by default) are optimised with Adam for ``steps`` steps on

``class_loss(T(aug(x)), y) + bn_weight * BN-statistics match + l2_weight * l2(aug(x))
+ tv_weight * TV(x) [images] + boundary_weight * boundary(S(aug(x)), T(aug(x))) [with a student]``

where ``x = G(z[, y])`` and ``y`` holds ``n_shot + n_query`` targets per teacher class. The batch
kept is the generator output with the **lowest total loss** over all steps (the loss of the
forward pass that produced it, before that step's update), tracked on the device without syncs.
Tasks hold the kept batch in the teacher's input space: normalised with ``augment.mean``/``std``
when given (image generators end in a sigmoid, so the augmentation should carry the dataset's
normalisation), never cropped or flipped.

References:
    Hu et al., "Learning to Learn from APIs: Black-Box Data-Free Meta-Learning" (BiDf-MKD), ICML 2023;
    Yin et al., "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion", CVPR 2020.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..config import check_ranges
from ..models.generator import NORMS, UPSAMPLES, build_generator
from ..types import Task
from .base import Inverter, split_task
from .losses import BNStatMatch, DiffAugment, boundary_loss, class_loss, l2_prior, total_variation

__all__ = [
    "GeneratorInversionConfig",
    "GeneratorInverter",
    "check_classes",
    "check_request",
    "inversion_loss",
    "make_optimizer",
    "optimise_generator",
    "seeded_generator",
    "teacher_space",
]


@dataclass(frozen=True)
class GeneratorInversionConfig:
    """Hyper-parameters of :class:`GeneratorInverter` (and of the meta-generator's adaptation).

    Attributes:
        steps: generator optimisation steps per model (200 in BiDf-MKD/TGR; FREE adapts in 5).
        optimizer: ``"adam"`` or ``"sgd"`` (plain gradient steps) on the generator and ``z``.
        lr: Adam learning rate of the generator.
        z_lr: Adam learning rate of the noise (when ``learn_z``).
        learn_z: optimise ``z`` together with the generator (else it stays fixed).
        nz, width, norm: generator shape (see :func:`dfml.models.build_generator`).
        upsample: ``"nearest"`` (upsample, then convolve) or ``"phases"``: the same generator computed
            without the upsampled copies (:class:`~dfml.models.generator.UpsampledConv2d`), 1.5x faster
            forward and backward at 84x84 on a CPU; results equal to float rounding, not bit for bit,
            so a run's numbers move slightly (off by default).
        conditional: feed the label to the generator (an embedding concatenated to ``z``).
        bn_weight: weight of the BN-statistics match (teachers without BN ignore it).
        l2_weight: weight of the mean square of the teacher's input.
        tv_weight: weight of the total variation of generated images (ignored for vectors).
        boundary_weight: weight of the boundary term when a student is given.
        augment: differentiable augmentation (and normalisation) before the teacher; ``None``: none.
    """

    steps: int = 200
    optimizer: str = "adam"
    lr: float = 1e-3
    z_lr: float = 1e-2
    learn_z: bool = True
    nz: int = 64
    width: int = 64
    norm: str = "batch"
    upsample: str = "nearest"
    conditional: bool = False
    bn_weight: float = 1.0
    l2_weight: float = 0.0
    tv_weight: float = 0.0
    boundary_weight: float = 1.0
    augment: DiffAugment | None = field(default=None)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"generator inversion steps must be >= 1, got {self.steps}")
        if self.lr <= 0 or self.z_lr <= 0:
            raise ValueError(f"generator inversion lr and z_lr must be > 0, got {self.lr} and {self.z_lr}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"generator inversion optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.norm not in NORMS:
            raise ValueError(f"generator norm must be one of {list(NORMS)}, got {self.norm!r}")
        if self.upsample not in UPSAMPLES:
            raise ValueError(f"generator upsample must be one of {list(UPSAMPLES)}, got {self.upsample!r}")
        check_ranges(self, "GeneratorInversionConfig.", counts=("nz", "width"), positive=("lr", "z_lr"),
                     nonnegative=("bn_weight", "l2_weight", "tv_weight", "boundary_weight"))


def seeded_generator(
    input_shape: tuple[int, ...], config: GeneratorInversionConfig, n_classes: int, generator: torch.Generator
) -> nn.Module:
    """A freshly initialised generator whose weights depend only on ``generator`` (one draw from it).

    The global torch RNG is left as it was.
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_generator(
            input_shape, nz=config.nz, width=config.width, norm=config.norm, upsample=config.upsample,
            n_classes=n_classes if config.conditional else 0,
        )


def teacher_space(x: Tensor, augment: DiffAugment | None) -> Tensor:
    """Generator outputs ``x`` as the teacher takes them: normalised with ``augment``'s mean/std (no crop, no flip).

    Tasks hold inputs in this space, like real episodes (which are normalised by their dataset).
    """
    if augment is None or augment.mean is None:
        return x
    return replace(augment, pad=0, flip=False)(x, torch.Generator())  # draws nothing without crop and flip


def make_optimizer(groups: list[dict], config: GeneratorInversionConfig) -> torch.optim.Optimizer:
    """The per-teacher optimiser over ``groups`` (elementwise, so stacking teachers leaves it unchanged)."""
    return torch.optim.SGD(groups) if config.optimizer == "sgd" else torch.optim.Adam(groups)


def check_request(teacher: nn.Module, n_shot: int, n_query: int) -> None:
    """Raise ``ValueError`` for a teacher in training mode or impossible shot counts."""
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"the teacher must be a torch.nn.Module, got {type(teacher).__name__}")
    if teacher.training:
        raise ValueError("the teacher must be in eval mode (its BN running statistics are the prior); call .eval()")
    if n_shot < 1 or n_query < 0:
        raise ValueError(f"need n_shot >= 1 and n_query >= 0, got n_shot={n_shot}, n_query={n_query}")


def inversion_loss(
    logits: Tensor,
    y: Tensor,
    x: Tensor,
    x_seen: Tensor,
    bn_loss: Tensor | None,
    config: GeneratorInversionConfig,
    student_logits: Tensor | None = None,
) -> Tensor:
    """The generator's objective for one teacher (a scalar; safe inside ``torch.vmap``).

    Args:
        logits: teacher logits on ``x_seen``, ``[B, n_way]``.
        y: targets ``[B]``.
        x: generator output ``[B, *input_shape]`` (TV is taken on it).
        x_seen: what the teacher saw (after augmentation/normalisation; the L2 prior is taken on it).
        bn_loss: the BN-statistics term of that forward pass, or ``None``.
        student_logits: a student's logits on ``x_seen`` for the boundary term, or ``None``.
    """
    loss = class_loss(logits, y)
    if bn_loss is not None and config.bn_weight:
        loss = loss + config.bn_weight * bn_loss
    if config.l2_weight:
        loss = loss + config.l2_weight * l2_prior(x_seen)
    if config.tv_weight and x.dim() == 4:
        loss = loss + config.tv_weight * total_variation(x)
    if student_logits is not None and config.boundary_weight:
        loss = loss + config.boundary_weight * boundary_loss(student_logits, logits)
    return loss


def optimise_generator(
    gen: nn.Module,
    z: Tensor,
    y: Tensor,
    teacher: nn.Module,
    config: GeneratorInversionConfig,
    rng: torch.Generator,
    student: nn.Module | None = None,
    final_grad: bool = False,
) -> tuple[Tensor, Tensor, Tensor, list[Tensor] | None]:
    """Run ``config.steps`` Adam steps on ``gen``'s parameters (and ``z``); keep the lowest-loss batch.

    Gradients are taken with ``torch.autograd.grad`` on the generator's leaves only, so nothing
    accumulates in the teacher's or the student's ``.grad``.

    Args:
        gen: the generator (updated in place).
        z: noise ``[B, nz]``; a leaf requiring grad when learnt.
        y: targets ``[B]``.
        final_grad: after the last step, one more forward pass at the adapted parameters whose
            gradient w.r.t. the generator's parameters is returned (FOMAML); its batch may be kept.

    Returns:
        ``(best_x [B, ...], best_loss, best_step, grads or None)``; ``best_step`` counts forward passes.
    """
    params = [p for p in gen.parameters() if p.requires_grad]
    groups = [{"params": params, "lr": config.lr}] + ([{"params": [z], "lr": config.z_lr}] if config.learn_z else [])
    opt = make_optimizer(groups, config)
    leaves = params + ([z] if config.learn_z else [])
    student_params = None if student is None else {k: v.detach() for k, v in student.named_parameters()}
    best_loss = torch.tensor(float("inf"), device=z.device, dtype=z.dtype)
    best_step = torch.tensor(-1, device=z.device)
    best_x: Tensor | None = None
    grads: list[Tensor] | None = None
    with BNStatMatch(teacher) as bn:
        for step in range(config.steps + int(final_grad)):
            x = gen(z, y) if config.conditional else gen(z)
            x_seen = config.augment(x, rng) if config.augment is not None else x
            logits = teacher(x_seen)
            s_logits = None if student is None else functional_call(student, student_params, (x_seen,))
            loss = inversion_loss(logits, y, x, x_seen, bn.loss(), config, s_logits)
            better = loss.detach() < best_loss
            best_x = x.detach() if best_x is None else torch.where(better, x.detach(), best_x)
            best_step = torch.where(better, torch.tensor(step, device=z.device), best_step)
            best_loss = torch.minimum(loss.detach(), best_loss)
            g = torch.autograd.grad(loss, leaves)
            if step == config.steps:  # the FOMAML pass: gradient at the adapted parameters, no update
                grads = list(g[: len(params)])
                break
            for p, gp in zip(leaves, g):
                p.grad = gp
            opt.step()
    for p in leaves:
        p.grad = None
    assert best_x is not None
    return best_x, best_loss, best_step, grads


class GeneratorInverter(Inverter):
    """Recover a pseudo task from a frozen teacher with a generator trained for it from scratch.

    Args:
        input_shape: shape of one teacher input, ``(C, H, W)`` or ``(D,)``.
        config: hyper-parameters.

    Example:
        >>> inv = GeneratorInverter((32,), GeneratorInversionConfig(steps=200))
        >>> task = inv.invert(pool.load(0), 1, 15, torch.Generator().manual_seed(0), model_id=0)

    References:
        Hu et al., BiDf-MKD, ICML 2023; Yin et al., DeepInversion, CVPR 2020.
    """

    boundary = True

    def __init__(self, input_shape: tuple[int, ...], config: GeneratorInversionConfig | None = None) -> None:
        super().__init__(input_shape)
        self.config = config or GeneratorInversionConfig()

    def build_generator(self, n_way: int, generator: torch.Generator) -> nn.Module:
        """A fresh generator for a teacher with ``n_way`` outputs (one draw from ``generator``); override to swap it."""
        return seeded_generator(self.input_shape, self.config, n_way, generator)

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
        """One pseudo task for ``teacher``'s own classes: the best batch split into support + query.

        Returns:
            A :class:`Task` with ``n_way * n_shot`` support and ``n_way * n_query`` query inputs,
            labels ``0..n_way-1``; ``source.extra`` holds ``best_loss`` and ``best_step``.

        Raises:
            ValueError: teacher in training mode, ``n_shot < 1``, ``classes`` not one per output.
        """
        check_request(teacher, n_shot, n_query)
        like = next(teacher.parameters())
        device, dtype = like.device, like.dtype
        with self.cost.timed(device):
            n_way = self.count_classes(teacher, like=like)
            check_classes(classes, n_way)
            n = n_way * (n_shot + n_query)
            gen = self.build_generator(n_way, generator).to(device=device, dtype=dtype)
            z = torch.randn((n, self.config.nz), generator=generator, dtype=dtype).to(device)
            z.requires_grad_(self.config.learn_z)
            y = torch.arange(n_way, device=device).repeat_interleave(n_shot + n_query)
            x, best_loss, best_step, _ = optimise_generator(gen, z, y, teacher, self.config, generator, student)
        self.charge(self.config.steps * n, self.config.steps, n)
        task = split_task(teacher_space(x, self.config.augment), n_way, n_shot, n_query, model_id=model_id,
                          classes=classes)
        task.source.extra.update(inverter="generator", best_loss=float(best_loss), best_step=int(best_step))
        return task


def check_classes(classes: tuple[int, ...], n_way: int) -> None:
    """``classes`` must be empty or name one class per teacher output."""
    if classes and len(classes) != n_way:
        raise ValueError(
            f"classes {tuple(classes)} name {len(classes)} classes but the teacher has {n_way} outputs; "
            "pass one class id per output (in output order) or none"
        )
