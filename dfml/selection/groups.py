"""Group-aware selection: invert dissimilar models together."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import SELECTORS, Selector
from .fisher import cosine_dissimilarity
from .spectral import spectral_clustering

__all__ = ["GroupSelector"]


@SELECTORS.register("group")
class GroupSelector(Selector):
    """Spectral clustering with *dissimilarity* as the affinity, so each group holds dissimilar models.

    Build it from a dissimilarity matrix, or from task embeddings with :meth:`from_embeddings`
    (e.g. :func:`fisher_embeddings` of a probe on every model's recovered data).
    ``select(n, generator)`` draws one group uniformly among those with at least ``n`` models,
    then ``n`` distinct models of that group uniformly; ``max_select`` is the largest group's size
    (a caller that needs more models draws again, e.g. the data-free stream when a step needs more
    new tasks than a group has models). Nothing is learnt; ``update`` is a no-op.

    Args:
        n_models: pool size.
        dissimilarity: ``[n_models, n_models]`` symmetric, non-negative.
        n_groups: number of groups, ``1..n_models``.
        seed: seeds the clustering's k-means (same seed, same groups).

    Attributes:
        dissimilarity: the matrix given (float64), for plotting.
        labels: ``[n_models]`` group of every model.
        groups: the model ids of every group, ``groups[g]`` sorted.

    References:
        Wei et al., "Task Groupings Regularization: Data-Free Meta-Learning with Heterogeneous
        Pre-trained Models", ICML 2024.
    """

    def __init__(self, n_models: int, dissimilarity: Tensor, n_groups: int, *, seed: int = 0) -> None:
        super().__init__(n_models)
        d = torch.as_tensor(dissimilarity).detach().double().cpu()
        if tuple(d.shape) != (n_models, n_models):
            raise ValueError(
                f"dissimilarity must have shape [n_models, n_models] = [{n_models}, {n_models}], got "
                f"{tuple(d.shape)}; pass one row and column per pool model"
            )
        self.dissimilarity = d
        self.n_groups = n_groups
        self.seed = seed
        self.labels = torch.from_numpy(spectral_clustering(d, n_groups, seed=seed))

    @classmethod
    def from_embeddings(cls, embeddings: Tensor, n_groups: int, *, seed: int = 0) -> GroupSelector:
        """Group models by ``1 - cosine similarity`` of their embeddings ``[n_models, n_params]``."""
        d = cosine_dissimilarity(embeddings)
        return cls(d.shape[0], d, n_groups, seed=seed)

    @property
    def groups(self) -> list[list[int]]:
        """Model ids per group (group ``g`` is ``groups[g]``)."""
        return [(self.labels == g).nonzero().flatten().tolist() for g in range(self.n_groups)]

    @property
    def max_select(self) -> int:
        """The size of the largest group: no selection can return more distinct models of one group."""
        return max(len(g) for g in self.groups)

    def select(self, n: int, generator: torch.Generator) -> list[int]:
        """``n`` distinct ids from one group (drawn uniformly among the groups with ``>= n`` models).

        Raises:
            ValueError: no group has ``n`` models.
        """
        self._check_select(n, generator)
        eligible = [g for g in self.groups if len(g) >= n]
        if not eligible:
            raise ValueError(
                f"no group has n={n} models (group sizes {[len(g) for g in self.groups]}); ask for at most "
                f"{max(len(g) for g in self.groups)} models per selection or use fewer groups"
            )
        group = eligible[int(torch.randint(len(eligible), (1,), generator=generator))]
        order = torch.randperm(len(group), generator=generator)[:n]
        return [group[i] for i in order.tolist()]

    def weights(self) -> Tensor:
        """Probability of each model being drawn first: ``(1 / n_groups) * (1 / |its group|)``."""
        sizes = torch.bincount(self.labels, minlength=self.n_groups).double()
        return 1.0 / (self.n_groups * sizes[self.labels])

    def within_group_dissimilarity(self) -> Tensor:
        """Mean dissimilarity between distinct members of each group, ``[n_groups]`` (NaN for singletons)."""
        out = []
        for g in self.groups:
            sub = self.dissimilarity[g][:, g]
            k = len(g)
            out.append(sub.sum() / (k * (k - 1)) if k > 1 else torch.tensor(float("nan"), dtype=torch.float64))
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        """Dissimilarity, groups and seed."""
        return {
            "n_models": self.n_models,
            "dissimilarity": self.dissimilarity.clone(),
            "labels": self.labels.clone(),
            "n_groups": self.n_groups,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the saved groups exactly (no re-clustering)."""
        super().load_state_dict(state)
        self.dissimilarity = state["dissimilarity"].clone()
        self.labels = state["labels"].clone()
        self.n_groups = int(state["n_groups"])
        self.seed = int(state["seed"])
