"""The built-in toy world: a synthetic class-structured dataset for tests and the demo.

Every class is a Gaussian blob in a small latent space. All classes share one fixed non-linear
"renderer" that maps a latent point into a few signal dimensions of the observation, while the
remaining dimensions carry large class-independent nuisance noise. A network that has learnt
*which* directions carry signal (shared across classes) separates new classes from one example;
a randomly initialised one is distracted by the nuisance. That shared structure is what
meta-learning (and a pool of models trained on other classes) has to offer, so the toy world
shows real gaps between methods in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import ArrayDataset

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ToyWorldConfig:
    """Shape of the toy world.

    Attributes:
        n_classes: total classes, divided into ``split_sizes`` (meta-train/val/test, disjoint).
        dim: observation size ``D`` (the MLP input size).
        latent_dim: size of the latent space the class blobs live in.
        signal_dim: observation dimensions that carry signal; the other ``dim - signal_dim`` are noise.
        n_per_class: examples per class.
        class_spread: within-class standard deviation in latent space (class centres are N(0, I)).
        nuisance: standard deviation of the nuisance dimensions.
        seed: the world's seed (same seed, same world).
        name: the dataset name (splits are ``<name>/train``...); another name makes another
            dataset for pools, whose class ids never merge with the default world's.
    """

    n_classes: int = 100
    split_sizes: tuple[int, int, int] = (64, 16, 20)
    dim: int = 32
    latent_dim: int = 8
    signal_dim: int = 16
    n_per_class: int = 100
    class_spread: float = 0.45
    nuisance: float = 1.5
    seed: int = 0
    name: str = "toy"

    def __post_init__(self) -> None:
        if sum(self.split_sizes) != self.n_classes:
            raise ValueError(f"split_sizes {self.split_sizes} must add up to n_classes={self.n_classes}")
        if not 0 < self.signal_dim <= self.dim:
            raise ValueError(f"signal_dim must lie in 1..dim={self.dim}, got {self.signal_dim}")
        if self.n_per_class < 1:
            raise ValueError(f"n_per_class must be >= 1, got {self.n_per_class}")


def make_toy_world(config: ToyWorldConfig | None = None, **overrides: object) -> dict[str, ArrayDataset]:
    """Generate the toy world's meta-train / meta-val / meta-test splits.

    Args:
        config: the world's shape; keyword ``overrides`` replace its fields (``make_toy_world(seed=1)``).

    Returns:
        ``{"train": ArrayDataset, "val": ..., "test": ...}`` with float features ``[N, dim]`` and
        disjoint classes named ``toy_000``...
    """
    cfg = config or ToyWorldConfig()
    if overrides:
        cfg = ToyWorldConfig(**{**cfg.__dict__, **overrides})  # type: ignore[arg-type]
    rng = np.random.default_rng(cfg.seed)
    # The shared renderer: latent -> hidden -> signal dims, fixed for the whole world.
    w1 = rng.normal(0, 1 / np.sqrt(cfg.latent_dim), (cfg.latent_dim, 2 * cfg.signal_dim))
    w2 = rng.normal(0, 1 / np.sqrt(2 * cfg.signal_dim), (2 * cfg.signal_dim, cfg.signal_dim))
    rotation, _ = np.linalg.qr(rng.normal(size=(cfg.dim, cfg.dim)))  # hides which dims are signal
    centres = rng.normal(size=(cfg.n_classes, cfg.latent_dim))
    z = centres[:, None, :] + cfg.class_spread * rng.normal(size=(cfg.n_classes, cfg.n_per_class, cfg.latent_dim))
    signal = np.tanh(z @ w1) @ w2
    signal = signal / signal.std()
    noise = cfg.nuisance * rng.normal(size=(cfg.n_classes, cfg.n_per_class, cfg.dim - cfg.signal_dim))
    x = np.concatenate([signal, noise], axis=-1) @ rotation.T
    x = x.astype(np.float32)
    names = [f"toy_{i:03d}" for i in range(cfg.n_classes)]
    out: dict[str, ArrayDataset] = {}
    start = 0
    for split, size in zip(SPLITS, cfg.split_sizes):
        cls = np.arange(start, start + size)
        data = x[cls].reshape(-1, cfg.dim)
        labels = np.repeat(np.arange(size), cfg.n_per_class)
        out[split] = ArrayDataset(data, labels, [names[c] for c in cls], name=f"{cfg.name}/{split}")
        start += size
    return out
