"""Conv4: the four-block convolutional backbone of the few-shot and DFML literature."""

from __future__ import annotations

from torch import Tensor, nn


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

    Shapes:
        ``forward``: ``[B, in_channels, image_size, image_size] -> [B, num_classes]``;
        ``encoder``: same input -> ``[B, feature_dim]``.

    References:
        Vinyals et al., "Matching Networks for One Shot Learning", NeurIPS 2016; Finn et al., MAML, ICML 2017.
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 5, hidden: int = 32, image_size: int = 32) -> None:
        super().__init__()
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

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` images -> ``[B, num_classes]`` logits."""
        return self.head(self.encoder(x))
