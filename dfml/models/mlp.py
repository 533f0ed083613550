"""A small multi-layer perceptron for toy pools and feature inputs."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """``Linear -> [BatchNorm1d] -> ReLU`` per hidden layer, then a linear ``head``.

    Args:
        in_features: input size ``D``.
        num_classes: outputs of ``head``.
        hidden: widths of the hidden layers (a list from JSON is accepted).
        batch_norm: insert ``BatchNorm1d`` after every hidden ``Linear``.

    Shapes:
        ``forward``: ``[B, in_features] -> [B, num_classes]``; ``encoder``: ``[B, in_features] -> [B, hidden[-1]]``.
    """

    def __init__(
        self, in_features: int, num_classes: int = 5, hidden: Sequence[int] = (64, 64), batch_norm: bool = False
    ) -> None:
        super().__init__()
        widths = [int(in_features), *[int(h) for h in hidden]]
        bad = [w for w in widths + [int(num_classes)] if w < 1]
        if bad:
            raise ValueError(
                f"MLP sizes must be >= 1, got in_features={in_features}, hidden={list(hidden)}, "
                f"num_classes={num_classes}"
            )
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers.append(nn.Linear(a, b))
            if batch_norm:
                layers.append(nn.BatchNorm1d(b))
            layers.append(nn.ReLU())
        self.encoder = nn.Sequential(*layers)
        self.feature_dim = widths[-1]
        self.head = nn.Linear(self.feature_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_features]`` -> ``[B, num_classes]`` logits."""
        return self.head(self.encoder(x))
