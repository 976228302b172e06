"""Probe: can the kernel tell which arrays were written since a checkpoint, cheaper than
hashing them? (Linux >= 6.7: userfaultfd asynchronous write-protect + ``PAGEMAP_SCAN``.)

    .venv/bin/python benchmarks/write_tracking_probe.py

Not used by the library. Exactness (the default ``detect_in_place_changes=True``) makes
every checkpoint read every byte of every writeable array of the context (one XXH3 pass),
because only the bytes can tell whether a step changed an array in place without
returning it. On W1 that pass is most of what a small checkpoint costs
(``w1_checkpoints.py``). This probe measures the alternative a future change could build
on: the arrays' pages are registered with a userfaultfd in asynchronous write-protect mode
(``UFFD_FEATURE_WP_ASYNC``: the kernel resolves the write fault itself and marks the page
written, no handler thread); ``PAGEMAP_SCAN`` with ``PM_SCAN_WP_MATCHING`` then returns
the pages written since they were last protected and protects them again, atomically, so
a write racing the scan is never lost.

It checks, on W1-sized arrays (24 frames of 360x640x3, 1,500 crops of 96x48x3), that a
one-byte write through numpy and a write by the kernel (``readv`` into the buffer) are
both seen, that a clean array is reported clean, and times one scan of all the arrays'
pages against one XXH3 pass over their bytes. Exits 0 with "not available" where the
kernel or a seccomp filter refuses (Docker's default profile blocks userfaultfd;
``CONFIG_USERFAULTFD``/``PAGEMAP_SCAN`` may be missing).

What it does not cover, and a design would have to: writes the CPU does not make (a
device's DMA into pinned memory, io_uring fixed buffers), memory shared with another
process (shmem cannot be registered without ``UFFD_FEATURE_WP_HUGETLBFS_SHMEM``; then hash),
``fork`` (a child does not inherit the registration), several caches consuming one page's
written flag (one process-wide record of written pages per scan), and the registrations
splitting memory areas (``vm.max_map_count``).
"""

from __future__ import annotations

import ctypes
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import xxhash

PAGE = os.sysconf("SC_PAGE_SIZE")
SYS_USERFAULTFD = {"x86_64": 323, "aarch64": 282}.get(platform.machine())
UFFD_USER_MODE_ONLY = 1
UFFD_API = 0xAA
UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
UFFD_FEATURE_WP_ASYNC = 1 << 15
UFFDIO_REGISTER_MODE_WP = 1 << 1
PM_SCAN_WP_MATCHING = 1 << 0
PAGE_IS_WPALLOWED = 1 << 0
PAGE_IS_WRITTEN = 1 << 1


def _iowr(kind: int, number: int, size: int) -> int:
    return (3 << 30) | (size << 16) | (kind << 8) | number


class UffdioApi(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("api", "features", "ioctls")]


class UffdioRegister(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("start", "len", "mode", "ioctls")]


class PageRegion(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("start", "end", "categories")]


class PmScanArg(ctypes.Structure):
    _fields_ = [
        (n, ctypes.c_uint64)
        for n in (
            "size",
            "flags",
            "start",
            "end",
            "walk_end",
            "vec",
            "vec_len",
            "max_pages",
            "category_inverted",
            "category_mask",
            "category_anyof_mask",
            "return_mask",
        )
    ]


UFFDIO_API = _iowr(0xAA, 0x3F, ctypes.sizeof(UffdioApi))
UFFDIO_REGISTER = _iowr(0xAA, 0x00, ctypes.sizeof(UffdioRegister))
PAGEMAP_SCAN = _iowr(ord("f"), 16, ctypes.sizeof(PmScanArg))


class Unavailable(Exception):
    pass


class WrittenPages:
    """Registers page spans for asynchronous write-protection and reports writes."""

    def __init__(self) -> None:
        if SYS_USERFAULTFD is None:
            raise Unavailable(f"no userfaultfd syscall number for {platform.machine()}")
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long
        self.libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
        flags = os.O_CLOEXEC | os.O_NONBLOCK | UFFD_USER_MODE_ONLY
        self.uffd = self._check(self.libc.syscall(SYS_USERFAULTFD, flags), "userfaultfd")
        api = UffdioApi(UFFD_API, UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED, 0)
        self._check(self.libc.ioctl(self.uffd, UFFDIO_API, ctypes.byref(api)), "UFFDIO_API")
        self.pagemap = os.open("/proc/self/pagemap", os.O_RDONLY)
        self.regions = (PageRegion * 256)()

    @staticmethod
    def _check(result: int, what: str) -> int:
        if result < 0:
            errno = ctypes.get_errno()
            raise Unavailable(f"{what}: {os.strerror(errno)}")
        return result

    def register(self, start: int, end: int) -> None:
        span = UffdioRegister(start, end - start, UFFDIO_REGISTER_MODE_WP, 0)
        self._check(self.libc.ioctl(self.uffd, UFFDIO_REGISTER, ctypes.byref(span)), "register")

    def scan(self, start: int, end: int) -> list[tuple[int, int]]:
        """Spans of registered pages written since their last scan, protected again."""
        arg = PmScanArg(
            size=ctypes.sizeof(PmScanArg),
            flags=PM_SCAN_WP_MATCHING,
            start=start,
            end=end,
            vec=ctypes.addressof(self.regions),
            vec_len=len(self.regions),
            category_mask=PAGE_IS_WRITTEN | PAGE_IS_WPALLOWED,
            return_mask=PAGE_IS_WRITTEN,
        )
        found = self._check(self.libc.ioctl(self.pagemap, PAGEMAP_SCAN, ctypes.byref(arg)), "scan")
        return [(self.regions[i].start, self.regions[i].end) for i in range(found)]


def pages_of(array: np.ndarray) -> tuple[int, int]:
    address = array.ctypes.data
    return address // PAGE * PAGE, -(-(address + array.nbytes) // PAGE) * PAGE


def merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted spans, neighbours closer than 64 pages joined: one scan each."""
    out: list[list[int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1] + 64 * PAGE:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]


def median_ms(function: Callable[[], Any], reps: int = 30) -> float:
    times = []
    for _ in range(reps):
        began = time.perf_counter()
        function()
        times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def main() -> None:
    try:
        pages = WrittenPages()
    except Unavailable as exc:
        print(f"not available: {exc}")
        return
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(24)]
    crops = [rng.integers(0, 256, (96, 48, 3), dtype=np.uint8) for _ in range(1500)]
    arrays = frames + crops
    megabytes = sum(a.nbytes for a in arrays) / 1e6
    began = time.perf_counter()
    for array in arrays:
        pages.register(*pages_of(array))
    register_ms = 1000 * (time.perf_counter() - began)
    spans = merged([pages_of(a) for a in arrays])
    for span in spans:
        pages.scan(*span)  # protect every page

    def written(array: np.ndarray) -> int:
        return len(pages.scan(*pages_of(array)))

    checks = {
        "a clean frame is reported clean": written(frames[0]) == 0,
    }
    frames[0][100, 100, 0] ^= 1
    checks["a one-byte numpy write is seen"] = written(frames[0]) == 1
    checks["and the page is protected again by the scan"] = written(frames[0]) == 0
    crops[7][0, 0, 0] ^= 1
    checks["a crop written, its neighbour clean"] = (written(crops[7]), written(crops[8])) == (1, 0)
    read_end, write_end = os.pipe()
    os.write(write_end, b"x" * 100)
    os.readv(read_end, [memoryview(crops[9]).cast("B")[:100]])
    checks["a write by the kernel (readv into the buffer) is seen"] = written(crops[9]) == 1

    def hash_all() -> None:
        for array in arrays:
            xxhash.xxh3_128(array).digest()

    def scan_all() -> None:
        for span in spans:
            pages.scan(*span)

    print(f"{len(arrays)} arrays, {megabytes:.1f} MB; registered in {register_ms:.1f} ms")
    for what, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")
    print(f"  XXH3 over every array:              {median_ms(hash_all):.3f} ms (median of 30)")
    print(f"  one scan of their pages ({len(spans)} spans): {median_ms(scan_all):.3f} ms")
    if not all(checks.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
