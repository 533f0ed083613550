"""The in-memory labelled dataset every dfml loader returns.

Real images are decoded once and kept as a uint8 array ``[N, H, W, C]``; the toy world keeps float
vectors ``[N, D]``. ``get_batch`` turns a list of indices into a normalised float batch in one
vectorised step (no per-item PIL work), which is what episode sampling uses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset


SPLITS = ("train", "val", "test")
"""The meta-train / meta-val / meta-test split names every dfml dataset accepts."""


def check_split(split: str, dataset: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise a ``ValueError`` naming the choices."""
    if split not in SPLITS:
        raise ValueError(f"{dataset}: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


class ArrayDataset(Dataset):
    """Labelled examples held in memory.

    Args:
        data: uint8 images ``[N, H, W, C]`` (HWC, as decoded) or float features ``[N, D]``.
        labels: int array ``[N]`` with values in ``0..len(classes)-1``.
        classes: class names; ``labels[i]`` indexes this list.
        mean, std: per-channel normalisation applied to images after scaling to ``[0, 1]``
            (ignored for float features). ``None`` leaves images in ``[0, 1]``.
        transform: optional callable applied per item in ``__getitem__`` (torchvision-style, on the
            normalised ``[C, H, W]`` tensor). ``get_batch`` does not apply it.
        name: dataset name recorded in pools and episode files (e.g. ``"cifar_fs/train"``).

    Raises:
        ValueError: labels out of range or a length mismatch.
    """

    def __init__(
        self,
        data: np.ndarray | Tensor,
        labels: np.ndarray | Sequence[int],
        classes: Sequence[str],
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        transform: Callable[[Tensor], Tensor] | None = None,
        name: str = "dataset",
    ) -> None:
        self.data = torch.as_tensor(np.asarray(data)) if not isinstance(data, Tensor) else data
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classes = [str(c) for c in classes]
        if self.data.shape[0] != self.labels.shape[0]:
            raise ValueError(f"{name}: {self.data.shape[0]} examples but {self.labels.shape[0]} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(
                f"{name}: labels must lie in 0..{len(self.classes) - 1} (one per class name), "
                f"got range {self.labels.min()}..{self.labels.max()}"
            )
        self.is_image = self.data.dtype == torch.uint8 and self.data.dim() == 4
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.transform = transform
        self.name = name
        self._by_class: list[np.ndarray] | None = None
        self._digest: tuple[str, str] | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x = self.get_batch([index])[0]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[index])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one decoded example: ``(C, H, W)`` for images, ``(D,)`` for features."""
        if self.is_image:
            _, h, w, c = self.data.shape
            return (int(c), int(h), int(w))
        return tuple(int(s) for s in self.data.shape[1:])

    def indices_by_class(self) -> list[np.ndarray]:
        """For each class id, the sorted indices of its examples (cached)."""
        if self._by_class is None:
            order = np.argsort(self.labels, kind="stable")
            counts = np.bincount(self.labels, minlength=self.num_classes)
            self._by_class = np.split(order, np.cumsum(counts)[:-1])
        return self._by_class

    def get_batch(self, indices: Sequence[int] | np.ndarray | Tensor) -> Tensor:
        """Decode ``indices`` into one float32 batch: ``[B, C, H, W]`` images or ``[B, D]`` features."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        x = self.data[idx]
        if not self.is_image:
            return x.float()
        x = x.permute(0, 3, 1, 2).float().div_(255.0)  # channels-last strides, kept: the network sees the same input
        if self.mean is not None and self.std is not None:
            x = x.sub_(self.mean).div_(self.std)  # in place: one float batch allocated, not three
        return x

    def fingerprint(self) -> dict[str, object]:
        """A small description used to refuse episode files or pools made on other data.

        Besides the name, size and class names it holds ``labels_sha1`` (the label of every example,
        in order) and ``data_sha1`` (a strided sample of 64 raw values of every example), so that the
        same split loaded in another example order (e.g. from another file layout) is told apart:
        episode files store example indices, which only mean the same images in the same order.
        """
        if self._digest is None:
            flat = self.data.reshape(len(self), -1)
            cols = torch.linspace(0, max(flat.shape[1] - 1, 0), steps=min(64, flat.shape[1])).long()
            sample = np.ascontiguousarray(flat[:, cols].numpy()) if len(self) else np.zeros(0, np.uint8)
            self._digest = (
                hashlib.sha1(np.ascontiguousarray(self.labels).tobytes()).hexdigest(),
                hashlib.sha1(sample.tobytes()).hexdigest(),
            )
        return {
            "name": self.name,
            "n_examples": len(self),
            "classes": list(self.classes),
            "labels_sha1": self._digest[0],
            "data_sha1": self._digest[1],
        }

    def subset_classes(self, class_ids: Sequence[int], name: str | None = None) -> ArrayDataset:
        """A new dataset with only ``class_ids`` (relabelled ``0..len-1`` in the given order)."""
        class_ids = [int(c) for c in class_ids]
        bad = [c for c in class_ids if not 0 <= c < self.num_classes]
        if bad:
            raise ValueError(f"{self.name}: class ids {bad} out of range 0..{self.num_classes - 1}")
        by_class = self.indices_by_class()
        idx = np.concatenate([by_class[c] for c in class_ids]) if class_ids else np.zeros(0, np.int64)
        remap = np.full(self.num_classes, -1, np.int64)
        remap[class_ids] = np.arange(len(class_ids))
        out = ArrayDataset(
            self.data[torch.as_tensor(idx)],
            remap[self.labels[idx]],
            [self.classes[c] for c in class_ids],
            mean=None,
            std=None,
            transform=self.transform,
            name=name or f"{self.name}[subset]",
        )
        out.mean, out.std = self.mean, self.std
        return out
