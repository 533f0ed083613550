"""Generators for data-free inversion: noise (and optionally a label) -> images or feature vectors.

* :class:`ImageGenerator`: DCGAN-style, ``Linear -> reshape -> 2 x (upsample, conv3x3, norm,
  LeakyReLU) -> conv3x3 -> output activation``: ``z [B, nz] -> [B, C, H, W]`` for any
  ``image_size`` divisible by 4 (32, 84, 16 in tests).
* :class:`VectorGenerator`: an MLP ``z [B, nz] -> [B, D]`` for feature inputs (the toy world).

Both optionally condition on the label (``n_classes > 0``): a learnt embedding of ``y`` is
concatenated to ``z``. Normalisation layers (``norm="batch"|"instance"|"none"``) never track
running statistics, so a generator's output depends only on its parameters and the batch it is
given, in train and eval mode alike: there is no state to update, which keeps
``torch.func.functional_call`` and ``torch.vmap`` over stacked generator parameters free of
in-place buffer updates. ``"batch"`` normalises with the statistics of the batch (as the papers'
generators do); ``"instance"`` per sample; ``"none"`` not at all.

References:
    Radford et al., "Unsupervised Representation Learning with Deep Convolutional Generative
    Adversarial Networks" (DCGAN), ICLR 2016; Hu et al., "Learning to Learn from APIs: Black-Box
    Data-Free Meta-Learning" (BiDf-MKD), ICML 2023; Wei et al., "FREE: Faster and Better Data-Free
    Meta-Learning", CVPR 2024.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["NORMS", "OUTPUTS", "UPSAMPLES", "ImageGenerator", "UpsampledConv2d", "VectorGenerator", "build_generator"]

NORMS = ("batch", "instance", "none")
OUTPUTS = ("sigmoid", "tanh", "none")
UPSAMPLES = ("nearest", "phases")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"generator {name} must be one of {list(choices)}, got {value!r}")


def _norm(kind: str, channels: int, dims: int) -> nn.Module:
    """A stateless normalisation layer (no running statistics) over ``channels``."""
    if kind == "batch":
        cls = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        return cls(channels, track_running_stats=False)
    if kind == "instance":
        if dims == 2:
            return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)
        return nn.LayerNorm(channels)  # per-sample normalisation of a vector
    return nn.Identity()


class UpsampledConv2d(nn.Conv2d):
    """A 3x3 convolution (padding 1) of the 2x nearest-neighbour upsampling of its input, without upsampling.

    ``UpsampledConv2d(c, c', 3, padding=1)(x)`` is ``Conv2d(c, c', 3, padding=1)(Upsample(2)(x))`` with the
    same parameters: output pixel ``(2i + a, 2j + b)`` only sees input rows ``i - 1 + a, i + a`` and columns
    ``j - 1 + b, j + b``, so each of the four phases ``(a, b)`` is a 2x2 convolution of ``x`` whose kernel
    sums the 3x3 kernel's taps that land on the same input pixel. That is 16 multiply-adds per output and
    input channel instead of 36, and no ``[B, C, 2H, 2W]`` upsampled copy. The sums are rounded in
    another order, so outputs differ from the upsample-then-convolve module by float rounding (about
    1e-6 relative in float32; equal to 1e-12 in float64).

    Shapes: ``[B, C, H, W] -> [B, C', 2H, 2W]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1,
                 bias: bool = True) -> None:
        if kernel_size != 3 or padding != 1:
            raise ValueError(f"UpsampledConv2d is a 3x3 convolution with padding 1, got kernel_size={kernel_size}, "
                             f"padding={padding}")
        super().__init__(in_channels, out_channels, 3, padding=1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight  # [C', C, 3, 3]: taps of rows/columns -1, 0, +1
        rows = [torch.stack([w[:, :, 0], w[:, :, 1] + w[:, :, 2]], 2),  # phase 0: input rows i - 1, i
                torch.stack([w[:, :, 0] + w[:, :, 1], w[:, :, 2]], 2)]  # phase 1: input rows i, i + 1
        kernels = [torch.stack([r[..., 0], r[..., 1] + r[..., 2]], -1) if b == 0
                   else torch.stack([r[..., 0] + r[..., 1], r[..., 2]], -1) for r in rows for b in (0, 1)]
        c_out, h, wd = w.shape[0], x.shape[-2], x.shape[-1]
        bias = None if self.bias is None else self.bias.repeat(4)
        y = F.conv2d(F.pad(x, (1, 1, 1, 1)), torch.cat(kernels), bias)  # [B, 4C', H + 1, W + 1], phases (a, b)
        phases = [y[:, k * c_out:(k + 1) * c_out, a:a + h, b:b + wd] for k, (a, b) in
                  enumerate(((0, 0), (0, 1), (1, 0), (1, 1)))]
        return F.pixel_shuffle(torch.stack(phases, 2).flatten(1, 2), 2)  # channel c * 4 + 2a + b -> (2i + a, 2j + b)


def _upsampled_conv(kind: str, in_channels: int, out_channels: int) -> list[nn.Module]:
    """``[Upsample(2), Conv2d 3x3]`` or, for ``"phases"``, ``[Identity, UpsampledConv2d]`` (same parameter names)."""
    if kind == "phases":
        return [nn.Identity(), UpsampledConv2d(in_channels, out_channels, 3, padding=1, bias=False)]
    return [nn.Upsample(scale_factor=2), nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)]


def _output(kind: str) -> nn.Module:
    return {"sigmoid": nn.Sigmoid(), "tanh": nn.Tanh(), "none": nn.Identity()}[kind]


class _Conditioning(nn.Module):
    """``(z [B, nz], y [B] or None) -> [B, nz (+ embed_dim)]``, checking the label when conditional."""

    def __init__(self, nz: int, n_classes: int, embed_dim: int) -> None:
        super().__init__()
        if nz < 1:
            raise ValueError(f"generator nz (noise size) must be >= 1, got {nz}")
        if n_classes < 0:
            raise ValueError(f"generator n_classes must be >= 0 (0: unconditional), got {n_classes}")
        self.nz, self.n_classes = int(nz), int(n_classes)
        self.embed = nn.Embedding(n_classes, embed_dim) if n_classes > 0 else None
        self.out_dim = nz + (embed_dim if n_classes > 0 else 0)

    def forward(self, z: Tensor, y: Tensor | None) -> Tensor:
        if z.dim() != 2 or z.shape[1] != self.nz:
            raise ValueError(f"generator expects noise z [B, {self.nz}], got shape {tuple(z.shape)}")
        if self.embed is None:
            if y is not None:
                raise ValueError("this generator is unconditional (n_classes=0) but got labels y; drop y or build "
                                 "it with n_classes > 0")
            return z
        if y is None or y.shape != z.shape[:1]:
            got = None if y is None else tuple(y.shape)
            raise ValueError(f"this conditional generator needs labels y [{z.shape[0]}] in 0..{self.n_classes - 1}, "
                             f"got {got}")
        return torch.cat([z, self.embed(y)], dim=1)


class ImageGenerator(nn.Module):
    """DCGAN-style image generator: ``z [B, nz] (+ y [B]) -> [B, out_channels, image_size, image_size]``.

    Args:
        nz: noise size.
        out_channels: image channels.
        image_size: output height = width, divisible by 4 (the first feature map is ``image_size/4``).
        width: base channel count ``ngf`` (the first map has ``2 * width`` channels).
        n_classes: ``> 0`` makes it label-conditional (embedding concatenated to ``z``); 0: unconditional.
        norm: ``"batch"`` (batch statistics), ``"instance"`` or ``"none"``; never running statistics.
        output: ``"sigmoid"`` (images in ``[0, 1]``, normalise them afterwards, e.g. in
            :class:`~dfml.inversion.losses.DiffAugment`), ``"tanh"`` or ``"none"``.
        embed_dim: label-embedding size (default ``nz``).
        upsample: ``"nearest"`` (upsample, then convolve) or ``"phases"`` (the same function computed by
            :class:`UpsampledConv2d`: 2.25x fewer multiply-adds in the two upsampling layers, results
            equal to float rounding, not bit for bit). Parameters and their names are the same.

    References:
        Radford et al., DCGAN, ICLR 2016; Hu et al., BiDf-MKD, ICML 2023.
    """

    def __init__(
        self,
        nz: int = 100,
        out_channels: int = 3,
        image_size: int = 32,
        width: int = 64,
        n_classes: int = 0,
        norm: str = "batch",
        output: str = "sigmoid",
        embed_dim: int | None = None,
        upsample: str = "nearest",
    ) -> None:
        super().__init__()
        _check_choice("norm", norm, NORMS)
        _check_choice("output", output, OUTPUTS)
        _check_choice("upsample", upsample, UPSAMPLES)
        if image_size < 4 or image_size % 4:
            raise ValueError(f"ImageGenerator image_size must be a positive multiple of 4, got {image_size}")
        if width < 1 or out_channels < 1:
            raise ValueError(f"ImageGenerator width and out_channels must be >= 1, got {width} and {out_channels}")
        self.cond = _Conditioning(nz, n_classes, embed_dim or nz)
        self.nz, self.n_classes, self.image_size = int(nz), int(n_classes), int(image_size)
        self.init_size = image_size // 4
        self.fc = nn.Linear(self.cond.out_dim, 2 * width * self.init_size**2)
        self.blocks = nn.Sequential(
            _norm(norm, 2 * width, 2),
            *_upsampled_conv(upsample, 2 * width, 2 * width),
            _norm(norm, 2 * width, 2),
            nn.LeakyReLU(0.2),
            *_upsampled_conv(upsample, 2 * width, width),
            _norm(norm, width, 2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, out_channels, 3, padding=1),
            _output(output),
        )

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """``z [B, nz]`` (and ``y [B]`` int64 when conditional) -> images ``[B, C, H, W]``."""
        h = self.fc(self.cond(z, y))
        return self.blocks(h.view(h.shape[0], -1, self.init_size, self.init_size))


class VectorGenerator(nn.Module):
    """MLP generator for feature inputs: ``z [B, nz] (+ y [B]) -> [B, out_features]``.

    ``Linear -> norm -> LeakyReLU(0.2)`` per hidden width, then a linear output layer and ``output``.

    Args:
        nz: noise size.
        out_features: size ``D`` of a generated vector.
        hidden: hidden widths.
        n_classes: ``> 0`` makes it label-conditional; 0: unconditional.
        norm: ``"batch"`` (batch statistics), ``"instance"`` (per-sample LayerNorm) or ``"none"``.
        output: ``"none"`` (default: unbounded features), ``"tanh"`` or ``"sigmoid"``.
        embed_dim: label-embedding size (default ``nz``).
    """

    def __init__(
        self,
        nz: int = 32,
        out_features: int = 32,
        hidden: Sequence[int] = (64, 64),
        n_classes: int = 0,
        norm: str = "batch",
        output: str = "none",
        embed_dim: int | None = None,
    ) -> None:
        super().__init__()
        _check_choice("norm", norm, NORMS)
        _check_choice("output", output, OUTPUTS)
        widths = [int(h) for h in hidden]
        if out_features < 1 or any(w < 1 for w in widths):
            raise ValueError(f"VectorGenerator sizes must be >= 1, got out_features={out_features}, hidden={widths}")
        self.cond = _Conditioning(nz, n_classes, embed_dim or nz)
        self.nz, self.n_classes, self.out_features = int(nz), int(n_classes), int(out_features)
        layers: list[nn.Module] = []
        prev = self.cond.out_dim
        for w in widths:
            layers += [nn.Linear(prev, w), _norm(norm, w, 1), nn.LeakyReLU(0.2)]
            prev = w
        layers += [nn.Linear(prev, out_features), _output(output)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """``z [B, nz]`` (and ``y [B]`` int64 when conditional) -> vectors ``[B, out_features]``."""
        return self.net(self.cond(z, y))


def build_generator(
    input_shape: Sequence[int],
    *,
    nz: int = 64,
    width: int = 64,
    n_classes: int = 0,
    norm: str = "batch",
    output: str | None = None,
    upsample: str = "nearest",
) -> nn.Module:
    """A generator for ``input_shape``: ``(C, H, W)`` -> :class:`ImageGenerator`, ``(D,)`` -> :class:`VectorGenerator`.

    Args:
        input_shape: shape of one teacher input.
        nz: noise size.
        width: ``ngf`` of the image generator; hidden width (two layers) of the vector generator.
        n_classes: ``> 0`` for a label-conditional generator.
        norm: ``"batch"``, ``"instance"`` or ``"none"``.
        output: output activation; default ``"sigmoid"`` for images, ``"none"`` for vectors.
        upsample: how the image generator upsamples (see :class:`ImageGenerator`); vectors ignore it.

    Raises:
        ValueError: an input shape that is neither ``(C, H, W)`` with ``H == W`` nor ``(D,)``.
    """
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3 and shape[1] == shape[2]:
        return ImageGenerator(nz, shape[0], shape[1], width, n_classes, norm, output or "sigmoid", upsample=upsample)
    if len(shape) == 1:
        return VectorGenerator(nz, shape[0], (width, width), n_classes, norm, output or "none")
    raise ValueError(f"no generator for input shape {shape}: expected (C, H, H) images or (D,) vectors")
