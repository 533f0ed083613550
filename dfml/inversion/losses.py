"""The inversion losses, in one audited place: pure functions of tensors (and one hook context).

Every inverter and every distillation-based learner takes its losses from here:

* :func:`class_loss`: cross-entropy of the teacher on synthetic inputs towards their target labels.
* :class:`BNStatMatch`: DeepInversion's BatchNorm-statistics prior, via forward hooks that are
  always removed; the teacher stays in eval mode and is never modified.
* :func:`total_variation`, :func:`l2_prior`: image priors.
* :func:`kd_loss`: a true KL divergence on log-probabilities with temperature and the ``T**2``
  factor, batch-mean (the papers' code fed probabilities into ``kl_div``; this does not).
* :func:`boundary_loss`: pushes samples on which a student agrees with the teacher towards
  disagreement (BiDf-MKD's boundary queries, PURER's harder episodes).
* :class:`DiffAugment`: random crop with padding, horizontal flip and normalisation as a
  differentiable function of the input batch, applied before the teacher sees an image.

References:
    Yin et al., "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion", CVPR 2020;
    Hinton et al., "Distilling the Knowledge in a Neural Network", 2015;
    Hu et al., "Learning to Learn from APIs: Black-Box Data-Free Meta-Learning" (BiDf-MKD), ICML 2023;
    Hu et al., "Architecture, Dataset and Model-Scale Agnostic Data-free Meta-Learning" (PURER), CVPR 2023.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BNStatMatch",
    "DiffAugment",
    "boundary_loss",
    "class_loss",
    "kd_loss",
    "kl_per_sample",
    "l2_prior",
    "total_variation",
]


def class_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits [B, C]`` towards ``targets [B]`` (int64 in ``0..C-1``)."""
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"class_loss expects logits [B, C] and targets [B], got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    return F.cross_entropy(logits, targets)


def kl_per_sample(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """``KL(softmax(t/T) || softmax(s/T))`` per row, computed on log-probabilities: ``[B]``."""
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 2:
        raise ValueError(
            f"KD needs student and teacher logits of one shape [B, C], got {tuple(student_logits.shape)} "
            f"and {tuple(teacher_logits.shape)}; map the teacher's outputs to the task's labels first"
        )
    if temperature <= 0:
        raise ValueError(f"KD temperature must be > 0, got {temperature}")
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(-1)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Knowledge-distillation loss: ``T**2 * mean_b KL(p_teacher || p_student)`` at temperature ``T``.

    Args:
        student_logits: ``[B, C]``.
        teacher_logits: ``[B, C]`` (gradients flow into it too unless the caller detaches it).
        temperature: softening temperature ``T > 0``.

    Returns:
        A scalar; equals ``F.kl_div(log_softmax(s/T), log_softmax(t/T), log_target=True,
        reduction="batchmean") * T**2``.
    """
    return kl_per_sample(student_logits, teacher_logits, temperature).mean() * temperature**2


def boundary_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Adversarial term for boundary samples: minimising it raises student-teacher disagreement.

    Only samples on which the student's argmax equals the teacher's contribute (they carry no
    information for distillation yet); for them the per-sample KL is negated. The result is
    ``-sum_b agree_b * KL_b / B`` (``0`` when nothing agrees).

    Args:
        student_logits, teacher_logits: ``[B, C]``.
        temperature: softening temperature of the KL.
    """
    kl = kl_per_sample(student_logits, teacher_logits, temperature)
    agree = (student_logits.detach().argmax(-1) == teacher_logits.detach().argmax(-1)).to(kl.dtype)
    return -(agree * kl).sum() / kl.shape[0]


def total_variation(x: Tensor, p: int = 2) -> Tensor:
    """Total variation of images ``[B, C, H, W]``: mean ``|Δ|**p`` over vertical plus horizontal neighbours."""
    if x.dim() != 4:
        raise ValueError(f"total_variation expects images [B, C, H, W], got shape {tuple(x.shape)}")
    if p not in (1, 2):
        raise ValueError(f"total_variation supports p=1 or p=2, got {p}")
    dh = x[..., 1:, :] - x[..., :-1, :]
    dw = x[..., :, 1:] - x[..., :, :-1]
    if p == 1:
        return dh.abs().mean() + dw.abs().mean()
    return dh.pow(2).mean() + dw.pow(2).mean()


def l2_prior(x: Tensor) -> Tensor:
    """Mean squared input value (a Gaussian prior on normalised inputs)."""
    return x.pow(2).mean()


class BNStatMatch:
    """Forward hooks on a teacher's BatchNorm layers measuring input statistics against running ones.

    For BN layer ``l`` with input ``h`` the term is ``||mean(h) - running_mean||_2 +
    ||var(h) - running_var||_2`` (biased variance over every dimension but channels), weighted by
    ``layer_weights[l]`` (DeepInversion gives the first layer a larger weight). Use as a context
    manager so the hooks are always removed::

        with BNStatMatch(teacher) as bn:
            logits = teacher(x)
            loss = class_loss(logits, y) + 0.1 * bn.loss()

    Args:
        teacher: a model in eval mode (its running statistics are the prior).
        layer_weights: one weight per BN layer with running statistics, in ``modules()`` order, or
            ``None`` for all ones.

    Raises:
        ValueError: the teacher is in training mode, or the weights do not match the BN layers.
    """

    def __init__(self, teacher: nn.Module, layer_weights: Sequence[float] | None = None) -> None:
        if teacher.training:
            raise ValueError("the teacher must be in eval mode (its BN running statistics are the prior); call .eval()")
        self.layers = [
            m
            for m in teacher.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
        ]
        weights = [1.0] * len(self.layers) if layer_weights is None else [float(w) for w in layer_weights]
        if len(weights) != len(self.layers):
            raise ValueError(
                f"layer_weights has {len(weights)} entries but the teacher has {len(self.layers)} BN layers "
                "with running statistics; give one weight per layer"
            )
        self.weights = weights
        self.terms: list[Tensor] = []
        self.handles: list = []

    def __enter__(self) -> BNStatMatch:
        self.handles = [m.register_forward_hook(self._hook(w)) for m, w in zip(self.layers, self.weights)]
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _hook(self, weight: float):
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], _out: Tensor) -> None:
            h = inputs[0]
            dims = [0] + list(range(2, h.dim()))
            mean = h.mean(dims)
            var = h.var(dims, unbiased=False)
            self.terms.append(
                weight
                * (
                    torch.linalg.vector_norm(mean - module.running_mean)
                    + torch.linalg.vector_norm(var - module.running_var)
                )
            )

        return hook

    @property
    def active(self) -> bool:
        """True when the teacher has BN layers with running statistics (else :meth:`loss` is 0)."""
        return bool(self.layers)

    def loss(self) -> Tensor | None:
        """Sum of the terms collected since the last call (then cleared); ``None`` if there were none."""
        out = torch.stack(self.terms).sum() if self.terms else None
        self.terms = []
        return out

    def remove(self) -> None:
        """Remove the hooks (idempotent)."""
        for h in self.handles:
            h.remove()
        self.handles = []
        self.terms = []


@dataclass(frozen=True)
class DiffAugment:
    """Differentiable augmentation before the teacher: random crop with zero padding, flip, normalisation.

    Calling it on images ``[B, C, H, W]`` pads by ``pad`` pixels, crops a random ``H x W`` window per
    image, flips each image horizontally with probability 1/2 (when ``flip``), then normalises with
    ``mean``/``std`` if given. Gradients flow to the input; randomness comes from the ``generator``
    argument only. Non-image inputs (``[B, D]``) are only normalised.

    Attributes:
        pad: padding of the random crop in pixels (0 disables cropping).
        flip: random horizontal flips.
        mean, std: per-channel normalisation applied last (``None``: none).
    """

    pad: int = 4
    flip: bool = True
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.pad < 0:
            raise ValueError(f"DiffAugment.pad must be >= 0, got {self.pad}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give DiffAugment both mean and std, or neither")

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if x.dim() == 4:
            b, _, h, w = x.shape
            if self.pad > 0:
                xp = F.pad(x, (self.pad, self.pad, self.pad, self.pad))
                oy = torch.randint(0, 2 * self.pad + 1, (b,), generator=generator).to(x.device)
                ox = torch.randint(0, 2 * self.pad + 1, (b,), generator=generator).to(x.device)
                rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # [B, 1, H, 1]
                cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # [B, 1, 1, W]
                batch = torch.arange(b, device=x.device)[:, None, None, None]
                chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
                x = xp[batch, chans, rows, cols]
            if self.flip:
                flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)[:, None, None, None]
                x = torch.where(flip, x.flip(-1), x)
        if self.mean is not None and self.std is not None:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
            std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
            x = (x - mean) / std
        return x
