"""``ModelPool``: a directory of pre-trained models described by ``pool.json``, loaded lazily."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from ..models.registry import build_model
from ..files import read_state_dict
from .manifest import (
    MANIFEST_NAME,
    PoolEntry,
    PoolManifest,
    sha256_file,
    unfinished_build,
    unfinished_message,
    write_atomic,
)

logger = logging.getLogger(__name__)

VERIFY_SHOWN = 10  # failed models a verify names before "and N more"
BUILD_HINT = (
    "build one with `dfml pool build` or dfml.pool.pretrain_pool(...), import the papers' files with "
    "dfml.pool.import_official_pool(...), or make a toy pool with dfml.pool.build_toy_pool(...)"
)


def save_state_dict(state: dict[str, Tensor], path: str | Path) -> str:
    """``torch.save`` a state dict atomically; returns the file's SHA-256.

    The bytes depend only on the tensors (not on the file name), so equal weights give equal hashes.
    """
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
    path = write_atomic(path, buf.getvalue())
    return sha256_file(path)


def check_state_dict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Raise ``ValueError`` unless ``state`` has exactly ``model``'s keys and shapes.

    Raises:
        ValueError: missing/unexpected keys (named), or a key whose shape differs (both shapes named).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(
            f"{source}: state dict does not match the architecture: missing keys {missing[:8]}, "
            f"unexpected keys {unexpected[:8]}. Check the entry's arch/arch_kwargs."
        )
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise ValueError(
                f"{source}: shape mismatch for {key!r}: file has {tuple(state[key].shape)}, "
                f"the architecture expects {tuple(value.shape)}. Check the entry's arch/arch_kwargs."
            )


class ModelPool:
    """A pool of pre-trained classifiers on disk.

    Args:
        path: the pool directory (holding ``pool.json``) or the ``pool.json`` file itself.
        allow_partial: open a ``dfml pool build`` that was stopped before every model was built
            (for ``dfml pool info``; :attr:`unfinished` says how far it got). Everything that uses
            the models refuses such a pool: it would silently use fewer models than asked for.

    Attributes:
        unfinished: ``(models built, models asked for)`` of a stopped build, else ``None``.

    Raises:
        FileNotFoundError: no ``pool.json`` there (the message says how to build one, or that a
            stopped build is there and how to finish it).
        ValueError: the manifest is malformed, lists no models, or (unless ``allow_partial``) the
            build that writes it was stopped (the message says how many models are built and how
            to finish it).

    Example:
        >>> pool = ModelPool("pools/toy")
        >>> teacher = pool.load(0)          # frozen, eval mode, BN running stats kept
        >>> pool.entry(0).classes           # the names behind its outputs
    """

    def __init__(self, path: str | Path, *, allow_partial: bool = False) -> None:
        path = Path(path)
        if path.name == MANIFEST_NAME and path.is_file():
            path = path.parent
        self.root = path
        manifest = path / MANIFEST_NAME
        if not manifest.is_file():
            stopped = unfinished_build(path, None)
            if stopped is not None:
                raise FileNotFoundError(f"no {MANIFEST_NAME} yet: {unfinished_message(path, stopped)}")
            where = "directory does not exist" if not path.exists() else "directory has no manifest"
            raise FileNotFoundError(
                f"no model pool at {str(path)!r}: expected {str(manifest)!r} ({where}); {BUILD_HINT}"
            )
        self.manifest = PoolManifest.load(path)
        self.unfinished = unfinished_build(path, self.manifest)
        if self.unfinished is not None and not allow_partial:
            raise ValueError(unfinished_message(path, self.unfinished))
        if not self.manifest.entries and self.unfinished is None:
            raise ValueError(f"{str(manifest)!r} lists no models; {BUILD_HINT}")

    @property
    def entries(self) -> list[PoolEntry]:
        """All manifest records, in index order."""
        return list(self.manifest.entries)

    @property
    def build(self) -> dict:
        """How the pool was made (see :class:`PoolManifest`)."""
        return self.manifest.build

    def __len__(self) -> int:
        return len(self.manifest.entries)

    def __iter__(self) -> Iterator[PoolEntry]:
        return iter(self.entries)

    def __repr__(self) -> str:
        return (f"ModelPool({str(self.root)!r}, n_models={len(self)}, architectures={self.architectures()}, "
                f"datasets={self.datasets()})")

    def entry(self, i: int) -> PoolEntry:
        """The manifest record of model ``i``; out of range raises ``IndexError``."""
        if not isinstance(i, int) or not 0 <= i < len(self):
            raise IndexError(f"model index {i!r} out of range: this pool has models 0..{len(self) - 1}")
        return self.manifest.entries[i]

    def architectures(self) -> list[str]:
        """The distinct architectures in the pool, sorted."""
        return sorted({e.arch for e in self.manifest.entries})

    def datasets(self) -> list[str]:
        """The distinct datasets the pool's models were trained on, sorted."""
        return sorted({e.dataset for e in self.manifest.entries})

    def path_of(self, i: int) -> Path:
        """Absolute path of model ``i``'s weights file."""
        return self.root / self.entry(i).file

    def read_state_dict(self, i: int) -> dict[str, Tensor]:
        """Read model ``i``'s weights (CPU) after checking the file's SHA-256.

        Raises:
            FileNotFoundError: the weights file is missing.
            ValueError: the checksum mismatches (the file was modified or truncated), or the file is
                not a plain state dict of tensors (it is never unpickled beyond that: no code runs).
        """
        entry, path = self.entry(i), self.path_of(i)
        if not path.is_file():
            raise FileNotFoundError(f"model {i}: weights file {str(path)!r} listed in {MANIFEST_NAME} is missing")
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise ValueError(
                f"model {i}: checksum mismatch for {str(path)!r} (sha256 {digest[:12]}..., manifest says "
                f"{entry.sha256[:12]}...): the file was modified or truncated after the pool was built. "
                f"Rebuild or re-copy the pool."
            )
        try:
            return read_state_dict(path, fix="rebuild or re-copy the pool")
        except ValueError as err:
            raise ValueError(f"model {i}: {err}") from None

    def load(self, i: int, device: torch.device | str | None = None) -> nn.Module:
        """Build model ``i`` and load its verified weights.

        Returns:
            The model in eval mode with ``requires_grad_(False)``; BatchNorm layers keep their
            running statistics (the teacher regime). On ``device`` when given, else CPU. Loading
            does not advance the global torch RNG.

        Raises:
            FileNotFoundError, ValueError: see :meth:`read_state_dict`; ``ValueError`` also for an
            ``arch``/``arch_kwargs`` that builds no model, or a state dict whose keys or shapes do
            not match it (every message names the model).
        """
        entry = self.entry(i)
        state = self.read_state_dict(i)
        with torch.random.fork_rng(devices=[]):  # initial weights are overwritten: leave the caller's RNG alone
            try:
                model = build_model(entry.arch, **entry.arch_kwargs)
            except (KeyError, TypeError, ValueError) as err:  # the manifest's arch/arch_kwargs do not build
                reason = err.args[0] if isinstance(err, KeyError) and err.args else err
                raise ValueError(f"model {i} ({entry.file}): {reason}") from None
        check_state_dict(model, state, f"model {i} ({entry.file})")
        model.load_state_dict(state)
        model.eval().requires_grad_(False)
        if device is not None:
            model.to(device)
        return model

    def verify(self) -> None:
        """Check every model's checksum, file format, architecture and shapes.

        Raises:
            ValueError: one line listing every model that failed, with the reason (the first
                ``VERIFY_SHOWN``, then how many more); or, for a stopped build (see ``allow_partial``),
                how many models are built and how to finish it.
        """
        problems = []
        for i in range(len(self)):
            try:
                self.load(i)
            except (ValueError, FileNotFoundError) as err:
                problems.append(str(err))
        if problems:
            shown = "; ".join(problems[:VERIFY_SHOWN])
            more = f"; and {len(problems) - VERIFY_SHOWN} more" if len(problems) > VERIFY_SHOWN else ""
            stopped = f"; {unfinished_message(self.root, self.unfinished)}" if self.unfinished else ""
            raise ValueError(f"{len(problems)} of {len(self)} models in {str(self.root)!r} failed: {shown}{more}"
                             f"{stopped}")
        if self.unfinished is not None:
            raise ValueError(f"{unfinished_message(self.root, self.unfinished)} (the {len(self)} built so far are "
                             "intact)")
        logger.info("verified %d models in %s", len(self), self.root)
