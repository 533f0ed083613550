"""ResNet backbones: the few-shot ResNet-12 and small-image ResNet-10/18 teachers."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class ResNet12Block(nn.Module):
    """Three conv3x3-BN layers (LeakyReLU 0.1 between), a 1x1 conv-BN shortcut, LeakyReLU, MaxPool2d(2).

    Shapes: ``[B, C_in, H, W] -> [B, C_out, H/2, W/2]``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv3 = _conv3x3(out_channels, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.pool(self.act(out + self.shortcut(x)))


class ResNet12(nn.Module):
    """The few-shot ResNet-12: four residual blocks, global average pool, linear ``head``.

    Args:
        in_channels: input image channels.
        num_classes: outputs of ``head``.
        channels: widths of the four blocks.

    Shapes:
        ``forward``: ``[B, in_channels, H, W] -> [B, num_classes]`` for any ``H, W >= 16``;
        ``encoder``: ``-> [B, channels[-1]]``.

    References:
        Lee et al., "Meta-Learning with Differentiable Convex Optimization" (MetaOptNet), CVPR 2019.
    """

    def __init__(
        self, in_channels: int = 3, num_classes: int = 5, channels: Sequence[int] = (64, 160, 320, 640)
    ) -> None:
        super().__init__()
        widths = [int(c) for c in channels]
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"ResNet12 channels must be 4 positive widths, got {list(channels)}")
        ins = [int(in_channels)] + widths[:-1]
        self.encoder = nn.Sequential(
            *[ResNet12Block(a, b) for a, b in zip(ins, widths)],
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.feature_dim = widths[-1]
        self.head = nn.Linear(self.feature_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, num_classes]`` logits."""
        return self.head(self.encoder(x))


class BasicBlock(nn.Module):
    """The ResNet basic block: two conv3x3-BN, identity or 1x1-conv-BN shortcut, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A BasicBlock ResNet with a small-image stem (teachers for DFML pools).

    Args:
        blocks: basic blocks per stage, e.g. ``(1, 1, 1, 1)`` (ResNet-10) or ``(2, 2, 2, 2)`` (ResNet-18).
        in_channels: input image channels.
        num_classes: outputs of ``head``.
        widths: channels of the four stages.
        small_input: ``True`` (default): 3x3 stride-1 stem and no initial max-pool, as for 32px CIFAR
            images; ``False``: the ImageNet stem (7x7 stride-2 conv + 3x3 stride-2 max-pool).

    Shapes:
        ``forward``: ``[B, in_channels, H, W] -> [B, num_classes]``; ``encoder``: ``-> [B, widths[-1]]``.

    References:
        He et al., "Deep Residual Learning for Image Recognition", CVPR 2016.
    """

    def __init__(
        self,
        blocks: Sequence[int],
        in_channels: int = 3,
        num_classes: int = 5,
        widths: Sequence[int] = (64, 128, 256, 512),
        small_input: bool = True,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) != len(blocks) or min(widths) < 1 or min(blocks) < 1:
            raise ValueError(f"ResNet needs one positive width per stage: blocks={list(blocks)}, widths={widths}")
        if small_input:
            stem: list[nn.Module] = [_conv3x3(in_channels, widths[0]), nn.BatchNorm2d(widths[0]), nn.ReLU()]
        else:
            stem = [
                nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(),
                nn.MaxPool2d(3, stride=2, padding=1),
            ]
        stages: list[nn.Module] = []
        prev = widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            layers = [BasicBlock(prev, w, stride=1 if i == 0 else 2)]
            layers += [BasicBlock(w, w) for _ in range(int(n) - 1)]
            stages.append(nn.Sequential(*layers))
            prev = w
        self.encoder = nn.Sequential(*stem, *stages, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = prev
        self.head = nn.Linear(self.feature_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, num_classes]`` logits."""
        return self.head(self.encoder(x))


class ResNet10(ResNet):
    """ResNet-10: one basic block per stage (see :class:`ResNet` for the arguments)."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 5,
        widths: Sequence[int] = (64, 128, 256, 512),
        small_input: bool = True,
    ) -> None:
        super().__init__((1, 1, 1, 1), in_channels, num_classes, widths, small_input)


class ResNet18(ResNet):
    """ResNet-18: two basic blocks per stage (see :class:`ResNet` for the arguments)."""

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 5,
        widths: Sequence[int] = (64, 128, 256, 512),
        small_input: bool = True,
    ) -> None:
        super().__init__((2, 2, 2, 2), in_channels, num_classes, widths, small_input)
