"""Spectral clustering with numpy/scipy only, deterministic from a seed."""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

__all__ = ["kmeans", "spectral_clustering"]


def _as_affinity(affinity: Tensor | np.ndarray) -> np.ndarray:
    a = affinity.detach().cpu().double().numpy() if isinstance(affinity, Tensor) else np.asarray(affinity, float)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"affinity must be a square matrix [n, n], got shape {a.shape}")
    if not np.all(np.isfinite(a)) or (a < 0).any():
        raise ValueError(
            "affinity must be finite and non-negative; e.g. use 1 - cosine similarity for Fisher embeddings"
        )
    if not np.allclose(a, a.T, atol=1e-8):
        raise ValueError("affinity must be symmetric; symmetrise it with (A + A.T) / 2")
    return a


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, *, n_init: int = 10, iters: int = 100) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding, best of ``n_init`` runs by inertia.

    Args:
        points: ``[n, d]``.
        k: clusters, ``1 <= k <= n``.
        rng: the only source of randomness.

    Returns:
        Labels ``[n]`` in ``0..k-1``.
    """
    n = points.shape[0]
    best, best_inertia = np.zeros(n, dtype=np.int64), np.inf
    for _ in range(n_init):
        centres = [points[rng.integers(n)]]
        for _ in range(1, k):
            d2 = np.min(((points[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
            p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
            centres.append(points[rng.choice(n, p=p)])
        c = np.asarray(centres)
        labels = np.zeros(n, dtype=np.int64)
        for _ in range(iters):
            d2 = ((points[:, None, :] - c[None]) ** 2).sum(-1)
            new = d2.argmin(1)
            for j in range(k):
                if (new == j).any():
                    c[j] = points[new == j].mean(0)
            if np.array_equal(new, labels):
                break
            labels = new
        inertia = ((points - c[labels]) ** 2).sum()
        if inertia < best_inertia - 1e-12:
            best, best_inertia = labels.copy(), inertia
    return best


def spectral_clustering(affinity: Tensor | np.ndarray, n_groups: int, *, seed: int = 0) -> np.ndarray:
    """Partition ``n`` items into ``n_groups`` groups of strongly connected items.

    Normalised spectral clustering (Ng, Jordan and Weiss): the ``n_groups`` eigenvectors of the
    smallest eigenvalues of ``I - D^-1/2 A D^-1/2`` (diagonal of ``A`` ignored), rows scaled to
    unit length, then k-means. The eigendecomposition is deterministic; k-means draws from
    ``numpy.random.default_rng(seed)``. Group labels are renumbered in order of first appearance,
    so item 0 is always in group 0.

    Args:
        affinity: ``[n, n]`` symmetric, non-negative (large = belong together).
        n_groups: ``1 <= n_groups <= n``.
        seed: seeds k-means.

    Returns:
        Labels ``[n]`` int64 in ``0..n_groups-1``.

    References:
        Ng, Jordan and Weiss, "On Spectral Clustering: Analysis and an algorithm", NeurIPS 2001.
    """
    a = _as_affinity(affinity).copy()
    n = a.shape[0]
    if isinstance(n_groups, bool) or not isinstance(n_groups, int) or not 1 <= n_groups <= n:
        raise ValueError(f"n_groups must be an integer in 1..{n} (the number of items), got {n_groups!r}")
    np.fill_diagonal(a, 0.0)
    deg = np.maximum(a.sum(1), 1e-12)
    inv_sqrt = 1.0 / np.sqrt(deg)
    lap = np.eye(n) - inv_sqrt[:, None] * a * inv_sqrt[None, :]
    _, vecs = scipy.linalg.eigh((lap + lap.T) / 2, subset_by_index=[0, n_groups - 1])
    rows = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    labels = kmeans(rows, n_groups, np.random.default_rng(seed))
    order = {old: new for new, old in enumerate(dict.fromkeys(labels.tolist()))}
    return np.array([order[v] for v in labels.tolist()], dtype=np.int64)
