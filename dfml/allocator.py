"""The C allocator under large CPU tensors: keep freed memory for the next batch.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves a request above its mmap
threshold with a fresh ``mmap`` and gives it back with ``munmap`` on ``free``; the threshold adapts
to the sizes freed but never rises above 32 MiB. Every page of a fresh mapping costs a page fault
and the kernel zero-fills it. At 84x84 the activations of a Conv4 (``[B, 32, 84, 84]`` float32 is
58 MiB for a batch of 64, 231 MiB for the evaluation batch of 256) are above that ceiling, so every
forward and backward maps, faults in, zero-fills and unmaps each of them again: a pool build on
miniImageNet spent about a third of its CPU time in the kernel (about 1,400 minor faults per image
trained). At 32x32 the same tensors are 16x smaller and stay below the threshold.

:func:`keep_freed_memory` raises the mmap threshold and turns trimming off (``mallopt``), so such
blocks come from the heap and go back to it when freed, and the next batch reuses them. It changes
where memory comes from, never what is computed (a test builds a pool both ways and compares the
files' SHA-256). The price is memory: the process keeps its heap instead of returning it between
batches, and a freed block cannot always serve a larger request, so the heap grows past the most
that is live at once. ``benchmarks/loading.py`` measured a peak resident size 36% higher for a
pool build at 84x84 and 3% for a meta-test; ``docs/performance.md`` has the figures. The CLI calls
it at start; ``DFML_MALLOC=system`` leaves the C library's settings alone (less memory, more
system time), and a ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` in the environment
(glibc's own tunables) is respected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
DEFAULT_THRESHOLD = 2**31 - 1
"""2 GiB - 1 byte, the most ``mallopt`` takes: blocks below it are served from (and returned to) the heap;
larger ones are still mapped. The black-box inverter's teacher queries at 84x84 (20 directions x 80
images) make 1.4 GiB activations, so 1 GiB was not enough."""
NO_TRIM = -1
"""``M_TRIM_THRESHOLD`` of -1 turns trimming off (glibc's documented value). A finite threshold is at
most 2 GiB through ``mallopt``, and the free space at the top of the heap after a black-box query
batch at 84x84 is larger: it was given back and faulted in again on every query."""

_ENV_OPT_OUT = "DFML_MALLOC"
_GLIBC_ENV = {M_MMAP_THRESHOLD: "MALLOC_MMAP_THRESHOLD_", M_TRIM_THRESHOLD: "MALLOC_TRIM_THRESHOLD_"}


def keep_freed_memory(threshold: int = DEFAULT_THRESHOLD) -> dict[str, int]:
    """Serve blocks below ``threshold`` bytes from the heap and never trim it (glibc only; elsewhere a no-op).

    Args:
        threshold: the mmap threshold in bytes, between 128 KiB and 2 GiB - 1 (a C ``int``).

    Returns:
        The settings applied, ``{"MALLOC_MMAP_THRESHOLD_": threshold, "MALLOC_TRIM_THRESHOLD_": -1}``
        (-1: trimming off), less those set in the environment; empty when nothing was changed (not
        glibc, ``DFML_MALLOC=system``, or both set in the environment).

    Raises:
        ValueError: ``threshold`` out of range, or ``DFML_MALLOC`` neither ``system`` nor ``keep``.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 128 * 1024 <= threshold < 2**31:
        raise ValueError(f"threshold must be an integer number of bytes in [131072, 2**31), got {threshold!r}")
    choice = os.environ.get(_ENV_OPT_OUT, "keep")
    if choice not in ("keep", "system"):
        raise ValueError(f"{_ENV_OPT_OUT}={choice!r}; use 'keep' (the default) or 'system' (leave malloc alone)")
    if choice == "system" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return {}
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    applied = {}
    for option, env in _GLIBC_ENV.items():
        if env in os.environ:  # the user's own glibc tunable wins
            continue
        value = threshold if option == M_MMAP_THRESHOLD else NO_TRIM
        if libc.mallopt(ctypes.c_int(option), ctypes.c_int(value)) != 1:
            logger.warning("mallopt(%s, %d) was refused; large tensors keep being mapped per batch", env, value)
            continue
        applied[env] = value
    logger.debug("allocator: %s", applied)
    return applied
