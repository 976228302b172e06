"""Forged blobs under an address-space limit: a claimed size is never allocated.

tracemalloc (``budget.bounded``) sees Python's allocations only; this runs the reader in
a process whose whole address space may grow by 256 MiB at most, so any allocation of a
claimed size (zstd's own included) is a MemoryError there.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

READ_FORGED_BLOBS_UNDER_A_LIMIT = textwrap.dedent(
    """
    import resource

    import zstandard

    from resumable import CorruptCheckpointError
    from resumable.checkpoint._blobs import BlobStore
    from resumable.storage import MemoryStore
    from tests.support.forge import ZSTD, blob_bytes, zstd_frame_claiming

    GiB = 1 << 30
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(512 << 20))
    claims = [(64 * GiB, zstd_frame_claiming(64 * GiB)), (2**63, zstd_frame_claiming(2**63))]
    forged = {  # blob: (stored bytes, the size its reader knows, from a manifest or a node)
        "a 16 KB bomb, header claims 1 GiB": (blob_bytes(bomb, codec=ZSTD, raw_size=GiB), 4096),
        "a 512 MiB bomb, header claims it": (blob_bytes(bomb, codec=ZSTD, raw_size=512 << 20), 10),
        **{
            f"{len(frame)} bytes claiming {claim}, read as {size}": (
                blob_bytes(frame, codec=ZSTD, raw_size=claim),
                size,
            )
            for claim, frame in claims
            for size in (None, 100)
        },
    }
    store = MemoryStore()
    for i, (data, _size) in enumerate(forged.values()):
        store.write(f"b/b3-{i:064d}", data)
    sizes = [size for _data, size in forged.values()]
    del bomb, forged
    with open("/proc/self/status") as status:
        vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), resource.RLIM_INFINITY))
    blobs = BlobStore(store, "b/")
    blobs.prefetch(f"b3-{i:064d}" for i in range(len(sizes)))  # a size-less prefetch too
    for i, size in enumerate(sizes):
        try:
            blobs.get(f"b3-{i:064d}", size)
        except CorruptCheckpointError as exc:
            print("refused:", str(exc)[:90])
    """
)


def test_forged_size_claims_stay_within_an_address_space_limit() -> None:
    done = subprocess.run(
        [sys.executable, "-c", READ_FORGED_BLOBS_UNDER_A_LIMIT],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("refused:") == 6, done.stdout
