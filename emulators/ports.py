"""Choosing ports and checking whether anything listens on one."""

from __future__ import annotations

import socket
import threading

from emulators.defaults import LOCALHOST

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port() -> int:
    """A port nothing listens on now, never the same twice in this process.

    The kernel may hand the same ephemeral port to two quick successive callers once the
    first probe socket is closed; remembering what was handed out prevents one run from
    giving two servers the same port.
    """
    with _lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOCALHOST, 0))
                port: int = sock.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def can_bind(port: int) -> bool:
    """Whether a server could bind 127.0.0.1:`port` now (as the emulators do, SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
    return True


def is_listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((LOCALHOST, port)) == 0
