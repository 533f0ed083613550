"""dfml.allocator: glibc keeps freed blocks below the threshold; the user's own settings win."""

from __future__ import annotations

import platform

import pytest

from dfml.allocator import DEFAULT_THRESHOLD, keep_freed_memory

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_the_mmap_threshold_is_raised_and_trimming_turned_off_unless_the_environment_sets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DFML_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    assert keep_freed_memory() == {"MALLOC_MMAP_THRESHOLD_": DEFAULT_THRESHOLD, "MALLOC_TRIM_THRESHOLD_": -1}
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() == {"MALLOC_MMAP_THRESHOLD_": DEFAULT_THRESHOLD}


def test_dfml_malloc_system_leaves_the_allocator_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DFML_MALLOC", "system")
    assert keep_freed_memory() == {}


def test_bad_settings_name_the_value_and_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DFML_MALLOC", "jemalloc")
    with pytest.raises(ValueError, match=r"DFML_MALLOC='jemalloc'; use 'keep' \(the default\) or 'system'"):
        keep_freed_memory()
    monkeypatch.delenv("DFML_MALLOC")
    with pytest.raises(ValueError, match=r"threshold must be an integer number of bytes in \[131072, 2\*\*31\), got 4096"):
        keep_freed_memory(4096)
