"""Conv4: the four-block convolutional backbone of the few-shot and DFML literature."""

from __future__ import annotations

import math

from torch import Tensor, nn

CONV4_INITS = ("kaiming_fan_out", "pytorch")
"""Conv4 weight initialisations: the DFML/few-shot papers' (default) and PyTorch's layer defaults."""


def init_fan_out_(module: nn.Module) -> None:
    """The few-shot literature's initialisation, applied to every conv and BatchNorm of ``module``.

    Conv weights ~ N(0, 2 / n) with n = kernel_h * kernel_w * out_channels (He et al.'s fan-out
    rule for ReLU), BatchNorm weight 1 and bias 0; conv biases and linear layers keep PyTorch's
    defaults. This is what the official DFML code (and the CloserLook few-shot code it derives
    from) does, and it changes the score of a randomly initialised meta-model under the 10-step
    fine-tuning protocol by several points (5-shot), so it is part of the protocol.

    References:
        He et al., "Delving Deep into Rectifiers", ICCV 2015; Chen et al., "A Closer Look at
        Few-shot Classification", ICLR 2019.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _pooled_size(size: int, n_pools: int) -> int:
    for _ in range(n_pools):
        size //= 2
    return size


class ConvBlock(nn.Module):
    """conv3x3 (padding 1, with bias) -> BatchNorm2d -> ReLU -> MaxPool2d(2): ``[B, C, H, W] -> [B, C', H/2, W/2]``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.relu(self.bn(self.conv(x))))


class Conv4(nn.Module):
    """Four :class:`ConvBlock` s, flatten, and a linear ``head``.

    Args:
        in_channels: input image channels.
        num_classes: outputs of ``head``.
        hidden: channels of every block (32 in the DFML papers, 64 in much of few-shot work).
        image_size: input height = width; fixes the head's input size
            (32 -> ``2*2*hidden``, 84 -> ``5*5*hidden``).
        init: ``"kaiming_fan_out"`` (default; the papers' :func:`init_fan_out_`) or ``"pytorch"``
            (PyTorch's layer defaults, dfml's convention before 2026-12).

    Shapes:
        ``forward``: ``[B, in_channels, image_size, image_size] -> [B, num_classes]``;
        ``encoder``: same input -> ``[B, feature_dim]``.

    References:
        Vinyals et al., "Matching Networks for One Shot Learning", NeurIPS 2016; Finn et al., MAML, ICML 2017.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 5,
        hidden: int = 32,
        image_size: int = 32,
        init: str = "kaiming_fan_out",
    ) -> None:
        super().__init__()
        if init not in CONV4_INITS:
            raise ValueError(f"Conv4 init must be one of {list(CONV4_INITS)}, got {init!r}")
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes), ("hidden", hidden)):
            if int(value) < 1:
                raise ValueError(f"Conv4 {name} must be >= 1, got {value}")
        spatial = _pooled_size(int(image_size), 4)
        if spatial < 1:
            raise ValueError(f"Conv4 needs image_size >= 16 (four 2x2 max-pools), got {image_size}")
        channels = [in_channels] + [hidden] * 4
        self.encoder = nn.Sequential(
            *[ConvBlock(channels[i], channels[i + 1]) for i in range(4)],
            nn.Flatten(),
        )
        self.feature_dim = hidden * spatial * spatial
        self.head = nn.Linear(self.feature_dim, num_classes)
        if init == "kaiming_fan_out":
            init_fan_out_(self)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` images -> ``[B, num_classes]`` logits."""
        return self.head(self.encoder(x))
