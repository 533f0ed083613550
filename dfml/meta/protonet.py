"""Prototypical networks: classify queries by distance to class-mean support embeddings."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.norm import use_batch_stats
from ..types import Params, Task
from .inner import functional_forward
from .learner import Learner

__all__ = ["ProtoNet", "prototype_logits", "prototypes"]


def prototypes(support_z: Tensor, support_y: Tensor) -> Tensor:
    """Class means of the support embeddings.

    Args:
        support_z: embeddings ``[n_way * n_shot, d]``.
        support_y: labels ``[n_way * n_shot]`` in ``0..n_way-1``, every label present.

    Returns:
        Prototypes ``[n_way, d]`` (row ``c`` is the mean embedding of class ``c``).

    Raises:
        ValueError: labels that are not exactly ``0..n_way-1`` (a class without support examples).
    """
    if support_z.dim() != 2:
        raise ValueError(f"support embeddings must be [n, d], got shape {tuple(support_z.shape)}; flatten them")
    labels = support_y.long()
    n_way = int(labels.max()) + 1 if labels.numel() else 0
    counts = labels.bincount(minlength=n_way)
    if n_way == 0 or bool((counts == 0).any()):
        raise ValueError(
            f"support labels must cover 0..n_way-1 with at least one example each, got labels "
            f"{sorted(set(labels.tolist()))}; relabel the episode to 0..n_way-1"
        )
    sums = support_z.new_zeros(n_way, support_z.shape[1]).index_add(0, labels, support_z)
    return sums / counts.to(support_z.dtype).unsqueeze(1)


def prototype_logits(query_z: Tensor, protos: Tensor) -> Tensor:
    """Negative squared Euclidean distances: logits ``[n_query_total, n_way]``.

    ``logits[i, c] = -||query_z[i] - protos[c]||^2``, computed as an explicit difference (not the
    ``a^2 - 2ab + b^2`` expansion) so that it is exact for equal vectors.
    """
    return -(query_z.unsqueeze(1) - protos.unsqueeze(0)).pow(2).sum(-1)


class ProtoNet(Learner):
    """Prototypical network over an ``encoder`` (``[B, *input_shape] -> [B, d]``; more dims are flattened).

    Support and query sets are embedded in one forward pass (``cat([support_x, query_x])``), as
    in the reference implementation of Snell et al.; with ``use_batch_stats`` (applied to the
    encoder in place) BatchNorm then normalises both with the statistics of the whole episode, so
    prototypes and queries live in the same normalised space and nothing leaks across episodes.
    There is no fine-tuning: ``adapt`` returns the parameters unchanged. The same class serves
    as a meta-learner (``meta_loss``/``meta_step`` from ``Learner``) and as a meta-test head.

    References:
        Snell et al., "Prototypical Networks for Few-shot Learning", NeurIPS 2017.
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be an nn.Module, got {type(encoder).__name__}")
        self.network = use_batch_stats(encoder)

    def embed(self, params: Params, x: Tensor) -> Tensor:
        """Embeddings ``[B, d]`` of ``x`` with ``params`` (feature maps are flattened)."""
        return functional_forward(self.network, params, x).flatten(1)

    def query_logits(self, params: Params, task: Task) -> Tensor:
        """Logits ``[n_way * n_query, n_way]``: minus squared distances to the support prototypes."""
        task = self._on_device(task)
        n_support = task.support_x.shape[0]
        z = self.embed(params, torch.cat([task.support_x, task.query_x]))
        return prototype_logits(z[n_support:], prototypes(z[:n_support], task.support_y))

    def predict(self, params: Params, task: Task) -> Tensor:
        """Predicted query labels ``[n_way * n_query]`` (nearest prototype)."""
        return self.query_logits(params, task).argmax(-1)

