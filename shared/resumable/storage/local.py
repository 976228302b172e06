"""A folder on the local disk as an object store."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from resumable.errors import ObjectNotFoundError, PreconditionFailedError, StorageError
from resumable.storage.base import Buffer, WriteStats, join_buffers, total_size

# Objects up to this size, written from one ``bytes``, are remembered after a create-only
# write, so that a replacing write of the same bytes can link them (manifests).
_LINKABLE = 4 << 20


class LocalStore:
    """Objects are files under ``root``; names map to relative paths.

    Every write goes to a temporary file in the same folder, is fsynced (``durable=True``),
    then renamed over the target, and the folder is fsynced: a crash, even a power loss,
    leaves the old object or the new one. Folders of create-only objects, and the parents
    of folders a write created, are synced in one batch, at the latest before the next
    replacing write or :meth:`flush`, so an object that refers to them is never durable
    before they are (``tests/storage/test_power_loss.py`` cuts the power at every call).
    A generation is the file's modification time in nanoseconds, stamped under an advisory
    lock to be later than the generation it replaces (two replaces within one tick of the
    clock still get two generations), so that two processes on one machine cannot both win a
    conditional write. Temporary files a killed writer left behind go with
    :meth:`delete_prefix`.

    A replacing write of the exact bytes of a small object just created (a checkpoint's
    latest manifest, a copy of its history manifest) links that durable file instead of
    writing and fsyncing the bytes again: one data fsync per manifest, not two.
    """

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = self.root.as_uri()
        self.durable = durable
        self.stats = WriteStats()
        self._stats_lock = threading.Lock()
        self._unsynced_dirs: set[Path] = set()
        self._recent: list[tuple[bytes, Path]] = []  # created from one bytes, newest last

    def _path(self, name: str) -> Path:
        if not name or name.startswith("/") or any(p in ("", ".", "..") for p in name.split("/")):
            raise StorageError(f"unsafe object name {name!r}")
        return self.root / name

    def read(self, name: str) -> bytes:
        return bytes(self.read_buffer(name))

    def read_buffer(self, name: str) -> bytearray:
        return self._read(name)[0]

    def read_with_generation(self, name: str) -> tuple[bytes, int]:
        data, generation = self._read(name)
        return bytes(data), generation

    def _read(self, name: str) -> tuple[bytearray, int]:
        """The object's bytes (into one buffer, without a copy) and its generation."""
        path = self._path(name)
        try:
            with open(path, "rb", buffering=0) as f:
                status = os.fstat(f.fileno())
                size = status.st_size
                buffer = bytearray(size)
                view = memoryview(buffer)
                got = 0
                while got < size:
                    n = f.readinto(view[got:])
                    if not n:
                        raise StorageError(f"{path}: file shrank while reading")
                    got += n
        except (FileNotFoundError, NotADirectoryError):
            raise ObjectNotFoundError(f"{self.url}/{name}") from None
        except IsADirectoryError:
            raise self._folder_in_the_way(name) from None
        with self._stats_lock:
            self.stats.objects_read += 1
            self.stats.bytes_read += size
        return buffer, status.st_mtime_ns

    def _folder_in_the_way(self, name: str) -> StorageError:
        return StorageError(f"{self.root / name} is a folder where object {name!r} belongs")

    def _generation(self, path: Path) -> int:
        try:
            return path.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def write(
        self, name: str, data: Buffer | Sequence[Buffer], *, if_generation_match: int | None = None
    ) -> int:
        path = self._path(name)
        parts = join_buffers(data)
        try:
            self._make_folder(path.parent)
        except (FileExistsError, NotADirectoryError):
            raise StorageError(
                f"cannot write {name!r}: a file of {self.root} is in its path"
            ) from None
        tmp = path.parent / f".tmp-{path.name}-{uuid.uuid4().hex[:12]}"
        size = total_size(parts)
        if if_generation_match != 0 and self._link_recent(tmp, parts):
            size = 0  # no byte written: the stats count what reaches the disk
        else:
            self._write_file(tmp, parts)
        try:
            if if_generation_match == 0:
                generation = self._create_only(tmp, path, name)
            else:
                # What this object may refer to (created before it) must be durable first.
                self.flush()
                generation = self._replace(tmp, path, name, if_generation_match)
        except PreconditionFailedError:
            held = self._holding(path, parts)
            if held is None:
                raise
            return held  # our own bytes: a retried write, not a lost race
        except IsADirectoryError:
            raise self._folder_in_the_way(name) from None
        finally:
            tmp.unlink(missing_ok=True)
        created = _immutable_bytes(parts) if if_generation_match == 0 else None
        if created is not None:
            with self._stats_lock:
                self._recent = [*self._recent[-3:], (created, path)]
        if self.durable:
            if if_generation_match == 0:
                # New immutable objects (blobs, history): their folder entries are synced
                # together, before the next replacing write makes them reachable.
                with self._stats_lock:
                    self._unsynced_dirs.add(path.parent)
            else:
                self._fsync_dir(path.parent)
        with self._stats_lock:
            self.stats.objects_written += 1
            self.stats.bytes_written += size
        return generation

    def _link_recent(self, tmp: Path, parts: list[memoryview]) -> bool:
        """Make ``tmp`` a link to a recently created object holding exactly ``parts``."""
        data = _immutable_bytes(parts)
        if data is None:
            return False
        with self._stats_lock:
            recent = list(self._recent)
        for content, source in reversed(recent):
            if content is data or content == data:
                try:
                    os.link(source, tmp)
                except OSError:  # deleted since, or a file system without hard links
                    return False
                return True
        return False

    def _holding(self, path: Path, parts: list[memoryview]) -> int | None:
        """The object's generation if it already holds exactly ``parts``, else ``None``."""
        try:
            with open(path, "rb") as f:
                stat = os.fstat(f.fileno())
                if stat.st_size != total_size(parts) or f.read() != b"".join(parts):
                    return None
                return stat.st_mtime_ns
        except OSError:
            return None

    def _replace(self, tmp: Path, path: Path, name: str, if_generation_match: int | None) -> int:
        if if_generation_match is None:
            generation = _stamp_later_than(tmp, self._generation(path))
            os.replace(tmp, path)
            return generation
        with self._locked(path):
            current = self._generation(path)
            if current != if_generation_match:
                raise PreconditionFailedError(
                    f"{self.url}/{name}: generation is {current}, expected {if_generation_match}"
                )
            generation = _stamp_later_than(tmp, current)
            os.replace(tmp, path)
        return generation

    def flush(self) -> None:
        """Make every object written so far durable (their folder entries included)."""
        with self._stats_lock:
            folders, self._unsynced_dirs = self._unsynced_dirs, set()
        for folder in folders:
            with contextlib.suppress(FileNotFoundError):  # removed since: nothing to keep
                self._fsync_dir(folder)

    def _make_folder(self, folder: Path) -> None:
        """Create ``folder`` and its missing parents; each new folder's entry in its parent
        becomes durable with the next :meth:`flush` (which every replacing write begins
        with), or a power loss could take a run's whole folder with it."""
        missing = []
        while not folder.is_dir() and folder != folder.parent:
            missing.append(folder)
            folder = folder.parent
        for created in reversed(missing):
            if self.durable:
                with self._stats_lock:  # before it exists: no flush after it can miss it
                    self._unsynced_dirs.add(created.parent)
            try:
                os.mkdir(created)
            except FileExistsError:
                if not created.is_dir():
                    raise

    def _write_file(self, tmp: Path, parts: list[memoryview]) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for part in parts:
                view = part
                while view.nbytes:
                    view = view[os.write(fd, view) :]
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _create_only(self, tmp: Path, path: Path, name: str) -> int:
        generation = os.stat(tmp).st_mtime_ns
        try:
            os.link(tmp, path)  # atomic: fails if the target exists
        except FileExistsError:
            raise PreconditionFailedError(f"{self.url}/{name} already exists") from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV):
                raise
            # File systems without hard links: an exclusive lock plus a check.
            with self._locked(path):
                if path.exists():
                    raise PreconditionFailedError(f"{self.url}/{name} already exists") from None
                os.replace(tmp, path)
        return generation

    class _Lock:
        def __init__(self, path: Path) -> None:
            self._path = path.parent / f".lock-{path.name}"
            self._fd = -1

        def __enter__(self) -> None:
            self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)

        def __exit__(self, *exc: object) -> None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)

    def _locked(self, path: Path) -> LocalStore._Lock:
        return LocalStore._Lock(path)

    @staticmethod
    def _fsync_dir(folder: Path) -> None:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        base = self.root
        names: list[str] = []
        start = base / prefix.rsplit("/", 1)[0] if "/" in prefix else base
        if not start.is_dir():
            return iter(())
        for dirpath, _dirs, files in os.walk(start):
            for file in files:
                if file.startswith((".tmp-", ".lock-")):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, file), base).replace(os.sep, "/")
                if rel.startswith(prefix):
                    names.append(rel)
        return iter(sorted(names))

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        names = list(self.list(prefix))
        for name in names:
            self.delete(name)
        for leftover in self._leftovers(prefix):
            leftover.unlink(missing_ok=True)
        # Remove folders left empty, deepest first.
        if prefix.endswith("/"):
            folder = self._path(prefix.rstrip("/"))
            if folder.is_dir():
                for dirpath, _dirs, _files in sorted(os.walk(folder), key=lambda w: -len(w[0])):
                    with contextlib.suppress(OSError):
                        os.rmdir(dirpath)
        return len(names)

    def _leftovers(self, prefix: str) -> Iterator[Path]:
        """Lock files, and temporary files of writers killed mid-write, of objects under
        ``prefix``: not objects, so never listed, but theirs to delete."""
        start = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not start.is_dir():
            return
        for dirpath, _dirs, files in os.walk(start):
            folder = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            for file in files:
                target = _leftover_target(file)
                if target is None:
                    continue
                name = target if folder == "." else f"{folder}/{target}"
                if name.startswith(prefix):
                    yield Path(dirpath, file)


def _leftover_target(file: str) -> str | None:
    """The object a ``.lock-{name}`` or ``.tmp-{name}-{12 hex}`` file belongs to."""
    if file.startswith(".lock-"):
        return file[len(".lock-") :]
    if file.startswith(".tmp-") and len(file) > len(".tmp--") + 12:
        return file[len(".tmp-") : -13]
    return None


def _immutable_bytes(parts: list[memoryview]) -> bytes | None:
    """The one ``bytes`` object ``parts`` views whole, if it is small enough to remember."""
    if len(parts) != 1:
        return None
    data = parts[0].obj
    if type(data) is not bytes or len(data) != parts[0].nbytes or len(data) > _LINKABLE:
        return None
    return data


def _stamp_later_than(tmp: Path, generation: int) -> int:
    """Set ``tmp``'s modification time after ``generation`` and return it as stored, which
    file systems round to their resolution (nanoseconds to seconds): step until it is."""
    step = 1
    stamp = time.time_ns()
    while True:
        stamp = max(stamp, generation + step)
        os.utime(tmp, ns=(stamp, stamp))
        stored = os.stat(tmp).st_mtime_ns
        if stored > generation:
            return stored
        step *= 2
