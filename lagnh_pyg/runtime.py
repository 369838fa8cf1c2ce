"""The process's resources: the cores it may use, torch and FAISS thread counts (set, or set
for a block and restored), and the resident pages of a memory map dropped after a pass over it.
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator


def set_threads(n: int | None) -> None:
    """Set torch's intra-op threads (small graph ops suffer badly from oversubscription)."""
    if n is None or n <= 0:
        return
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:  # pragma: no cover
        pass


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_BUDGET: int | None = None


def set_thread_budget(n: int | None) -> None:
    """The process's CPU budget as the user gave it (``lagnh --threads N``): :func:`set_threads`,
    and remembered, so that work split over processes (the demo's side-by-side runs) shares N
    threads instead of every core."""
    global _BUDGET
    _BUDGET = n if n is not None and n > 0 else None
    set_threads(n)


def thread_budget() -> int | None:
    """The budget of :func:`set_thread_budget`, or None where none was given."""
    return _BUDGET


@contextlib.contextmanager
def threads_set(n: int | None) -> Iterator[None]:
    """:func:`set_threads` for the duration of a block; torch's and FAISS's thread counts are
    restored afterwards (a library call must not leave them changed)."""
    if n is None or n <= 0:
        yield
        return
    import torch

    old_torch = torch.get_num_threads()
    try:
        import faiss

        old_faiss = faiss.omp_get_max_threads()
    except ImportError:  # pragma: no cover - faiss is a dependency
        old_faiss = None
    set_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old_torch)
        if old_faiss is not None:
            faiss.omp_set_num_threads(old_faiss)


def drop_mapped_pages(arr) -> None:
    """Take the resident pages of a memory-mapped array (``np.memmap``, e.g. a dataset's
    features) out of this process's memory after a pass over it: ``madvise(MADV_DONTNEED)``.
    They stay in the page cache, so a later read costs no disk I/O; but mapped pages count in
    the process's RSS, and a pass over a million 512-d rows would otherwise leave 2 GiB there.
    Anything that is not a memory map (or a platform without madvise) is left as it is."""
    import mmap

    while arr is not None and not isinstance(getattr(arr, "_mmap", None), mmap.mmap):
        arr = getattr(arr, "base", None)
    if arr is None or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        arr._mmap.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):  # a closed map
        pass
