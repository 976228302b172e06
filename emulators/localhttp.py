"""Plain HTTP to the emulators on localhost, never through a proxy.

HTTP_PROXY/HTTPS_PROXY in a developer's shell would otherwise route 127.0.0.1 through the
proxy, which cannot reach it.
"""

from __future__ import annotations

import urllib.error
import urllib.request

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_status(url: str, *, method: str = "GET", timeout: float = 2.0) -> int | None:
    """The HTTP status `url` answers with, or None if nothing answers."""
    request = urllib.request.Request(url, method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):
        return None
