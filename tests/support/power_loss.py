"""What a folder holds after a power loss: a model of POSIX durability over a real folder.

While installed, every call of ``os.open``, ``os.write``, ``os.fsync``, ``os.link``,
``os.replace``, ``os.rename``, ``os.unlink``, ``os.mkdir`` and ``os.rmdir`` on a path under
``root`` (or a descriptor opened there) goes through :class:`PowerLossDisk`, which:

- remembers, at each ``fsync`` of a file, the file's bytes (what survives of that inode),
  and at each ``fsync`` of a folder, its entries (which names survive, pointing at which
  inodes) — nothing else is durable: an entry created, renamed or removed since the
  folder's last sync is lost, or comes back, and the bytes written to a file since its
  last sync are lost (a file never synced survives empty, if its entry does);
- can cut the power at its ``crash_at``-th mutating call: that call and every later one
  raises :class:`PowerCut` (a ``BaseException``: nothing in the library catches it), as a
  dead machine does nothing more;
- rebuilds what survived into another folder (:meth:`survivor`), for a new process.

This is the weakest durability POSIX promises for these calls (ext4 and xfs journal more
than this in practice, so a hole it finds may never show on them, and still shows on a
file system that journals less). Reads are not intercepted: until the power cut the live
folder is what the running code sees.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class PowerCut(BaseException):
    """The power went off here."""


_MUTATING = ("write", "fsync", "link", "replace", "rename", "unlink", "mkdir", "rmdir")


class PowerLossDisk:
    def __init__(self, root: Path, crash_at: int = 0) -> None:
        self.root = str(root.resolve())
        self.crash_at = crash_at  # 0: never
        self.calls = 0  # mutating calls under root so far
        self.dead = False
        self._paths: dict[int, str] = {}  # descriptor -> path opened under root
        self._bytes: dict[int, bytes] = {}  # inode -> bytes at its last fsync
        # folder inode -> its entries at its last fsync: name -> (is a folder, inode)
        self._entries: dict[int, dict[str, tuple[bool, int]]] = {}
        self._root_inode = os.stat(self.root).st_ino
        self._real: dict[str, Any] = {}

    # -- interception ---------------------------------------------------------------------

    @contextlib.contextmanager
    def installed(self) -> Iterator[PowerLossDisk]:
        names = ("open", "close", *_MUTATING)
        self._real = {name: getattr(os, name) for name in names}
        for name in names:
            setattr(os, name, getattr(self, f"_{name}"))
        try:
            yield self
        finally:
            for name, function in self._real.items():
                setattr(os, name, function)

    def _under(self, path: Any) -> bool:
        try:
            text = os.fspath(path)
        except TypeError:
            return False
        if isinstance(text, bytes):
            text = text.decode()
        full = os.path.abspath(text)
        return full == self.root or full.startswith(self.root + os.sep)

    def _step(self) -> None:
        """One mutating call under root: the power may go off before it happens."""
        if self.dead:
            raise PowerCut
        self.calls += 1
        if self.calls == self.crash_at:
            self.dead = True
            raise PowerCut

    def _open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: Any = None) -> int:
        under = dir_fd is None and self._under(path)
        if under and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            self._step()
        fd: int = self._real["open"](path, flags, mode, dir_fd=dir_fd)
        if under:
            self._paths[fd] = os.path.abspath(os.fspath(path))
        return fd

    def _close(self, fd: int) -> None:
        self._paths.pop(fd, None)
        self._real["close"](fd)

    def _write(self, fd: int, data: Any) -> int:
        if fd in self._paths:
            self._step()
        written: int = self._real["write"](fd, data)
        return written

    def _fsync(self, fd: Any) -> None:
        number = fd if isinstance(fd, int) else fd.fileno()
        path = self._paths.get(number)
        if path is not None:
            self._step()
        self._real["fsync"](fd)
        if path is None:
            return
        status = os.fstat(number)
        if stat.S_ISDIR(status.st_mode):
            self._entries[status.st_ino] = self._listing(path)
        else:
            with open(path, "rb") as f:  # the same inode: fsync comes before any rename
                if os.fstat(f.fileno()).st_ino == status.st_ino:
                    self._bytes[status.st_ino] = f.read()

    def _listing(self, folder: str) -> dict[str, tuple[bool, int]]:
        found = {}
        for name in os.listdir(folder):
            status = os.stat(os.path.join(folder, name), follow_symlinks=False)
            found[name] = (stat.S_ISDIR(status.st_mode), status.st_ino)
        return found

    def _two_paths(self, name: str, src: Any, dst: Any, **kwargs: Any) -> None:
        if self._under(src) or self._under(dst):
            self._step()
        self._real[name](src, dst, **kwargs)

    def _link(self, src: Any, dst: Any, **kwargs: Any) -> None:
        self._two_paths("link", src, dst, **kwargs)

    def _replace(self, src: Any, dst: Any, **kwargs: Any) -> None:
        self._two_paths("replace", src, dst, **kwargs)

    def _rename(self, src: Any, dst: Any, **kwargs: Any) -> None:
        self._two_paths("rename", src, dst, **kwargs)

    def _one_path(self, name: str, path: Any, *args: Any, **kwargs: Any) -> None:
        if self._under(path):
            self._step()
        self._real[name](path, *args, **kwargs)

    def _unlink(self, path: Any, **kwargs: Any) -> None:
        self._one_path("unlink", path, **kwargs)

    def _mkdir(self, path: Any, mode: int = 0o777, **kwargs: Any) -> None:
        self._one_path("mkdir", path, mode, **kwargs)

    def _rmdir(self, path: Any, **kwargs: Any) -> None:
        self._one_path("rmdir", path, **kwargs)

    # -- what survives --------------------------------------------------------------------

    def survivor(self, destination: Path) -> Path:
        """Rebuild in ``destination`` what ``root`` holds after the power came back."""
        destination.mkdir(parents=True, exist_ok=True)
        self._rebuild(self._root_inode, destination)
        return destination

    def _rebuild(self, folder_inode: int, into: Path) -> None:
        for name, (is_folder, inode) in self._entries.get(folder_inode, {}).items():
            target = into / name
            if is_folder:
                target.mkdir()
                self._rebuild(inode, target)
            else:
                target.write_bytes(self._bytes.get(inode, b""))
