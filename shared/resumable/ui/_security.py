"""What keeps other web pages from using the UI: Host, origin and CSRF checks.

The UI has no authentication of its own (it binds to the loopback interface unless told
otherwise; deployed, it sits behind IAM). So:

- **Host**: every request must name an expected host, so that a page on another site
  cannot reach the UI through DNS rebinding (a name of theirs resolving to 127.0.0.1).
- **Same origin**: a POST whose ``Origin`` (or, without one, ``Referer``) is another site,
  or whose ``Sec-Fetch-Site`` says cross-site, is refused.
- **CSRF token**: every form carries a token that must equal the ``resumable_csrf``
  cookie (``SameSite=Strict``, ``HttpOnly``) and be signed by this server.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from urllib.parse import urlsplit

CSRF_COOKIE = "resumable_csrf"
CSRF_FIELD = "csrf"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class RequestRefused(Exception):
    """A request the checks refuse; the message says why (shown to the user)."""


def host_name(host_header: str) -> str:
    """``"127.0.0.1:8787"`` → ``"127.0.0.1"``; ``"[::1]:80"`` → ``"[::1]"``."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """The checks, with this server's secret and the hosts it answers to
    (``None``: any host, for a server behind a proxy that checks it)."""

    def __init__(self, allowed_hosts: Iterable[str] | None, secret: bytes | None = None) -> None:
        self.allowed_hosts = (
            None if allowed_hosts is None else frozenset(h.lower() for h in allowed_hosts)
        )
        self._secret = secret or secrets.token_bytes(32)

    # -- Host ---------------------------------------------------------------------------------

    def check_host(self, host_header: str | None) -> None:
        if self.allowed_hosts is None:
            return
        if not host_header or host_name(host_header) not in self.allowed_hosts:
            raise RequestRefused(
                f"unexpected Host {host_header!r}: this server answers to "
                f"{', '.join(sorted(self.allowed_hosts))} (add a name with --allow-host)"
            )

    # -- CSRF tokens --------------------------------------------------------------------------

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._secret, nonce.encode(), hashlib.sha256).hexdigest()[:32]

    def new_token(self) -> str:
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{self._sign(nonce)}"

    def valid_token(self, token: str | None) -> bool:
        if not token or token.count(".") != 1:
            return False
        nonce, signature = token.split(".")
        return hmac.compare_digest(signature, self._sign(nonce))

    def token_for(self, cookie: str | None) -> str:
        """The token a page's forms carry: the cookie's when it is ours, else a new one
        (which the response then sets as the cookie)."""
        return cookie if cookie and self.valid_token(cookie) else self.new_token()

    # -- POST ---------------------------------------------------------------------------------

    def check_post(
        self,
        *,
        host: str | None,
        origin: str | None,
        referer: str | None,
        fetch_site: str | None,
        cookie: str | None,
        token: str | None,
    ) -> None:
        """Raise :class:`RequestRefused` unless the POST comes from one of our pages."""
        self.check_host(host)
        if fetch_site and fetch_site not in ("same-origin", "none"):
            raise RequestRefused(f"cross-site request refused (Sec-Fetch-Site: {fetch_site})")
        source = origin if origin else referer
        if source is not None:
            netloc = urlsplit(source).netloc.lower() if source != "null" else "null"
            if not host or netloc != host.strip().lower():
                raise RequestRefused(f"cross-site request refused (from {source!r})")
        if not cookie or token != cookie or not self.valid_token(token):
            raise RequestRefused(
                "missing or invalid CSRF token: reload the page and try again (a page "
                "served before the UI restarted carries an old token)"
            )
