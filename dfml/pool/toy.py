"""A toy pool: small MLPs on the toy world's meta-train split, built in seconds."""

from __future__ import annotations

from pathlib import Path

from ..data.base import ArrayDataset
from ..data.toy import make_toy_world
from .corrupt import add_untrustworthy
from .pool import ModelPool
from .pretrain import PretrainConfig, pretrain_pool

TOY_HIDDEN = (64, 64)


def toy_pretrain_config(*, n_models: int = 10, n_way: int = 5, seed: int = 0, epochs: int = 20) -> PretrainConfig:
    """The pretraining config of :func:`build_toy_pool` (MLP 32-64-64-n_way, Adam 3e-3, no augmentation)."""
    return PretrainConfig(
        n_models=n_models, n_way=n_way, class_mode="random", arch="mlp", arch_kwargs={"hidden": list(TOY_HIDDEN)},
        epochs=epochs, batch_size=64, lr=3e-3, weight_decay=0.0, holdout_frac=0.2, augment=False, seed=seed,
    )


def build_toy_pool(
    out_dir: str | Path,
    *,
    n_models: int = 10,
    n_way: int = 5,
    seed: int = 0,
    epochs: int = 20,
    world: dict[str, ArrayDataset] | None = None,
    untrustworthy_ratio: float = 0.0,
    deceptive_source: ArrayDataset | None = None,
) -> ModelPool:
    """Pretrain MLPs on ``world["train"]`` (default: ``make_toy_world()``), one random class subset each.

    Args:
        out_dir: the pool directory. With ``untrustworthy_ratio > 0`` the clean pool is built in
            ``out_dir/clean`` and ``out_dir`` gets the corrupted copy (half deceptive, half untrained).
        untrustworthy_ratio: share of untrustworthy models (deceptive ones train on other classes of
            ``world["train"]`` unless ``deceptive_source`` is given).
        deceptive_source: the dataset deceptive models really train on while advertising the pool's
            classes, e.g. another toy world's meta-train split,
            ``make_toy_world(seed=1, name="toy_other")["train"]``: its classes are rendered into other
            signal directions, so tasks recovered from those models teach the meta-learner to look in
            the wrong place (other classes of the same world would still make good tasks).

    Returns:
        The pool (about 0.98 mean held-out accuracy with the defaults). Resumable like :func:`pretrain_pool`.
    """
    world = world if world is not None else make_toy_world()
    config = toy_pretrain_config(n_models=n_models, n_way=n_way, seed=seed, epochs=epochs)
    out = Path(out_dir)
    if deceptive_source is not None and untrustworthy_ratio <= 0.0:
        raise ValueError("deceptive_source is what deceptive models train on, but untrustworthy_ratio is 0 (no "
                         "untrustworthy models); pass untrustworthy_ratio > 0, e.g. 0.4, or drop deceptive_source")
    if untrustworthy_ratio <= 0.0:
        return pretrain_pool(world["train"], out, config)
    clean = pretrain_pool(world["train"], out / "clean", config)
    source = deceptive_source if deceptive_source is not None else world["train"]
    return add_untrustworthy(clean, out, ratio=untrustworthy_ratio, source_dataset=source, seed=seed)
