"""Input domains: the shape of one input and the normalisation a model expects.

A pool may hold models trained on different datasets (CIFAR-FS at 32x32, miniImageNet at 84x84),
each normalised with its own per-channel mean and standard deviation, while the meta-model has one
input domain (by default the meta-test dataset's). :func:`convert_inputs` carries inputs from one
domain to another: un-normalise to ``[0, 1]`` pixels, resize (bilinear, antialiased), normalise
again. It is differentiable, so images recovered at a teacher's resolution can be scored by a
meta-model at its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..types import Task

__all__ = ["InputDomain", "convert_inputs", "convert_task"]


def _floats(values: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


@dataclass(frozen=True)
class InputDomain:
    """What a model's inputs look like.

    Attributes:
        shape: one input, ``(C, H, W)`` for images or ``(D,)`` for feature vectors.
        mean, std: per-channel normalisation applied to ``[0, 1]`` images (``None``: none; always
            ``None`` for vectors).

    Raises:
        ValueError: a non-positive size, only one of ``mean``/``std``, a length other than the
            number of channels, a non-positive ``std``, or a normalisation on vectors.
    """

    shape: tuple[int, ...]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "mean", _floats(self.mean))
        object.__setattr__(self, "std", _floats(self.std))
        if not self.shape or min(self.shape) < 1 or len(self.shape) not in (1, 3):
            raise ValueError(f"an input shape is (C, H, W) or (D,) with positive sizes, got {self.shape}")
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"give both mean and std or neither, got mean={self.mean}, std={self.std}")
        if self.mean is not None and self.std is not None:
            if not self.is_image:
                raise ValueError(f"feature vectors {self.shape} take no per-channel normalisation; drop mean/std")
            if len(self.mean) != self.shape[0] or len(self.std) != self.shape[0]:
                raise ValueError(
                    f"mean/std need one value per channel ({self.shape[0]}), got {len(self.mean)} and {len(self.std)}"
                )
            if min(self.std) <= 0:
                raise ValueError(f"std must be positive, got {self.std}")

    @property
    def is_image(self) -> bool:
        """``True`` for ``(C, H, W)`` inputs."""
        return len(self.shape) == 3

    def resized(self, image_size: int) -> InputDomain:
        """The same channels and normalisation at ``image_size x image_size``.

        Raises:
            ValueError: vector inputs, or ``image_size < 1``.
        """
        if not self.is_image:
            raise ValueError(f"only images can be resized; this domain holds vectors of shape {self.shape}")
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        return replace(self, shape=(self.shape[0], int(image_size), int(image_size)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly ``{"shape": [...], "mean": [...] | None, "std": [...] | None}``."""
        return {"shape": list(self.shape), "mean": None if self.mean is None else list(self.mean),
                "std": None if self.std is None else list(self.std)}

    @classmethod
    def of_dataset(cls, dataset: Any) -> InputDomain:
        """The domain of an :class:`~dfml.data.ArrayDataset` (its ``input_shape``, ``mean`` and ``std``)."""
        mean = None if dataset.mean is None or not dataset.is_image else dataset.mean.flatten().tolist()
        std = None if dataset.std is None or not dataset.is_image else dataset.std.flatten().tolist()
        return cls(tuple(dataset.input_shape), mean, std)


def _pixels(x: Tensor, domain: InputDomain) -> Tensor:
    if domain.mean is None or domain.std is None:
        return x
    mean = torch.tensor(domain.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(domain.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x * std + mean


def _normalised(x: Tensor, domain: InputDomain) -> Tensor:
    if domain.mean is None or domain.std is None:
        return x
    mean = torch.tensor(domain.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(domain.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def convert_inputs(x: Tensor, src: InputDomain, dst: InputDomain) -> Tensor:
    """Carry inputs from domain ``src`` to domain ``dst`` (differentiable; ``x`` itself when they are equal).

    Images are un-normalised with ``src``'s mean/std, resized to ``dst``'s height and width
    (bilinear, antialiased when shrinking) and normalised with ``dst``'s mean/std. Values are not
    clipped: recovered images may lie outside ``[0, 1]``.

    Args:
        x: ``[B, *src.shape]``.

    Returns:
        ``[B, *dst.shape]``.

    Raises:
        ValueError: ``x`` does not have ``src``'s shape, or the domains cannot be converted (vectors
            of different sizes, images to vectors, different numbers of channels).
    """
    if tuple(x.shape[1:]) != src.shape:
        raise ValueError(f"inputs have shape {tuple(x.shape[1:])} but the source domain is {src.shape}")
    if src == dst:
        return x
    if not (src.is_image and dst.is_image):
        if src.shape == dst.shape:
            return x
        raise ValueError(
            f"cannot convert inputs of shape {src.shape} to {dst.shape}: only images can be resized; a meta-model "
            "for feature vectors needs teachers that take vectors of its size"
        )
    if src.shape[0] != dst.shape[0]:
        raise ValueError(
            f"cannot convert {src.shape[0]}-channel images to {dst.shape[0]} channels; keep teachers and meta-model "
            "on the same number of channels"
        )
    out = _pixels(x, src)
    if src.shape[1:] != dst.shape[1:]:
        shrink = dst.shape[1] < src.shape[1] or dst.shape[2] < src.shape[2]
        out = F.interpolate(out, size=dst.shape[1:], mode="bilinear", align_corners=False, antialias=shrink)
    return _normalised(out, dst)


def convert_task(task: Task, src: InputDomain, dst: InputDomain) -> Task:
    """``task`` with its support and query inputs carried from ``src`` to ``dst`` (``task`` itself if equal).

    The provenance records the source domain in ``source.extra["input_domain"]`` when it changed.
    """
    if src == dst:
        return task
    source = task.source
    if source is not None:
        source = replace(source, extra={**source.extra, "input_domain": src.to_dict()})
    return replace(task, support_x=convert_inputs(task.support_x, src, dst),
                   query_x=convert_inputs(task.query_x, src, dst), source=source)
