"""Training one pool classifier: held-out split, tensor augmentation, best-epoch selection."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.base import ArrayDataset
from ..models.registry import build_model

logger = logging.getLogger(__name__)


def derive_seed(seed: int, index: int) -> int:
    """The seed of pool model ``index`` in a build seeded with ``seed`` (independent of build order)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def init_model(arch: str, arch_kwargs: dict[str, Any], seed: int) -> nn.Module:
    """``build_model`` with initial weights drawn from ``seed`` (the global RNG state is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(arch, **arch_kwargs)


def split_holdout(
    dataset: ArrayDataset, class_ids: Sequence[int], holdout_frac: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split each class's examples into training and held-out parts.

    Args:
        class_ids: classes of ``dataset``; class ``class_ids[j]`` gets local label ``j``.
        holdout_frac: fraction of each class held out (at least one example each side).
        seed: seeds the per-class shuffles.

    Returns:
        ``(train_idx, train_y, heldout_idx, heldout_y)``: dataset indices and local labels.

    Raises:
        ValueError: a class with fewer than two examples.
    """
    rng = np.random.default_rng(seed)
    by_class = dataset.indices_by_class()
    parts: list[list[np.ndarray]] = [[], [], [], []]
    for j, c in enumerate(class_ids):
        idx = rng.permutation(by_class[int(c)])
        if len(idx) < 2:
            raise ValueError(
                f"{dataset.name}: class {int(c)} ({dataset.classes[int(c)]!r}) has {len(idx)} example(s); "
                f"a pool model needs at least 2 per class (one to train on, one held out)"
            )
        n_hold = min(max(1, int(round(holdout_frac * len(idx)))), len(idx) - 1)
        parts[0].append(idx[n_hold:])
        parts[1].append(np.full(len(idx) - n_hold, j))
        parts[2].append(idx[:n_hold])
        parts[3].append(np.full(n_hold, j))
    train_idx, train_y, held_idx, held_y = (np.concatenate(p).astype(np.int64) for p in parts)
    return train_idx, train_y, held_idx, held_y


def augment_images(x: Tensor, generator: torch.Generator, padding: int = 4) -> Tensor:
    """Random crop with zero padding plus random horizontal flip, per example.

    Args:
        x: ``[B, C, H, W]`` images.
        generator: a CPU generator (the draws are made on CPU, then moved to ``x.device``).

    Returns:
        ``[B, C, H, W]`` augmented images.
    """
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # [B, H, 1]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, :]  # [B, 1, W]
    cols = torch.where(flip[:, None, None], cols.flip(-1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()  # [B, H, W, C] -> [B, C, H, W]


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module, dataset: ArrayDataset, indices: np.ndarray, labels: np.ndarray, *, batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> float:
    """Accuracy of ``model`` (switched to eval mode) on ``dataset[indices]`` against local ``labels``."""
    model.eval()
    correct = 0
    for start in range(0, len(indices), batch_size):
        x = dataset.get_batch(indices[start : start + batch_size]).to(device)
        pred = model(x).argmax(-1).cpu()
        correct += int((pred == torch.as_tensor(labels[start : start + batch_size])).sum())
    return correct / max(len(indices), 1)


@dataclass
class TrainResult:
    """What :func:`train_classifier` returns.

    Attributes:
        state: a detached CPU copy of the best epoch's state dict.
        heldout_acc: held-out accuracy of ``state``.
        best_epoch: 1-based epoch of ``state`` (0 when ``epochs == 0``: the initial weights).
        history: held-out accuracy after each epoch.
    """

    state: dict[str, Tensor]
    heldout_acc: float
    best_epoch: int
    history: list[float] = field(default_factory=list)


def _copy_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def train_classifier(
    model: nn.Module,
    dataset: ArrayDataset,
    class_ids: Sequence[int],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    holdout_frac: float,
    augment: bool,
    seed: int,
    clip_grad_norm: float = 0.0,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, float, nn.Module], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``class_ids`` of ``dataset`` (Adam, cross-entropy) and keep the best epoch.

    The held-out split, shuffling and augmentation all draw from ``seed``; after every epoch the
    held-out accuracy is measured and the weights of the best epoch so far are copied (ties keep
    the earlier epoch). ``clip_grad_norm > 0`` clips each step's gradient to that total norm.
    ``on_epoch(epoch, acc, model)`` is called after each epoch.
    """
    model.to(device)
    train_idx, train_y, held_idx, held_y = split_holdout(dataset, class_ids, holdout_frac, seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    pad = max(1, dataset.input_shape[-1] // 8) if dataset.is_image else 0
    best = TrainResult(_copy_state(model), float("-inf"), 0)
    if epochs == 0:
        best.heldout_acc = evaluate_accuracy(model, dataset, held_idx, held_y, device=device)
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(train_idx), generator=gen).numpy()
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            if len(batch) < 2:  # BatchNorm cannot train on a single example
                continue
            x = dataset.get_batch(train_idx[batch]).to(device)
            if augment and dataset.is_image:
                x = augment_images(x, gen, pad)
            y = torch.as_tensor(train_y[batch], device=device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            opt.step()
        acc = evaluate_accuracy(model, dataset, held_idx, held_y, device=device)
        best.history.append(acc)
        if acc > best.heldout_acc:
            best.state, best.heldout_acc, best.best_epoch = _copy_state(model), acc, epoch
        logger.debug("epoch %d: held-out acc %.4f (best %.4f @ %d)", epoch, acc, best.heldout_acc, best.best_epoch)
        if on_epoch is not None:
            on_epoch(epoch, acc, model)
    return best
