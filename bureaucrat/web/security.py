"""Who may operate: the operator token, the signed session cookie, CSRF and Origin checks.

Reading needs nothing: bind the console to a trusted address (``[web] host``, 127.0.0.1 by
default) or put it behind a proxy that authenticates. Operations need ``[web] token``; without
one the console is read-only and refuses every operation (403).

- The JSON API takes the token as ``Authorization: Bearer <token>``.
- In a browser the operator signs in once with the token (``/login``). The console then sets
  the cookie ``bureaucrat_session``: a random session id and an expiry, signed with HMAC-SHA256
  under a key derived from the token (so changing the token signs everyone out), ``HttpOnly``,
  ``SameSite=Strict``, ``Path=/`` (and ``Secure`` over HTTPS).
- Each form of the pages carries a CSRF token: the HMAC of the session id under the same key.
  A form POST is accepted only with a valid session cookie, the matching CSRF token, and an
  ``Origin`` (or, lacking one, ``Referer``) naming this very host.

Every comparison of a secret is made in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

COOKIE = "bureaucrat_session"
CSRF_FIELD = "csrf"
SESSION_SECONDS = 12 * 3600


@dataclass(frozen=True)
class Guard:
    """The checks for one console, given its operator token (None: read-only)."""

    token: str | None

    @property
    def read_only(self) -> bool:
        return not self.token

    @property
    def _key(self) -> bytes:
        assert self.token
        return hmac.new(self.token.encode(), b"bureaucrat-web session", hashlib.sha256).digest()

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    # the token --------------------------------------------------------------------------------

    def token_matches(self, given: str | None) -> bool:
        """Whether ``given`` is the operator token (always False when read-only)."""
        if not self.token or given is None:
            return False
        return hmac.compare_digest(given.encode(), self.token.encode())

    def bearer_ok(self, request: Request) -> bool:
        """Whether the request carries ``Authorization: Bearer <the token>``."""
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(given.strip())

    # sessions ---------------------------------------------------------------------------------

    def new_session(self, now: float | None = None) -> str:
        """A signed session cookie value for an operator who gave the token."""
        expires = int((now or time.time()) + SESSION_SECONDS)
        session = f"{secrets.token_urlsafe(18)}.{expires}"
        return f"{session}.{self._mac(session)}"

    def session(self, request: Request, now: float | None = None) -> str | None:
        """The session id of a signed-in operator, or None."""
        if self.read_only:
            return None
        value = request.cookies.get(COOKIE, "")
        session, _, mac = value.rpartition(".")
        if not session or not hmac.compare_digest(mac.encode(), self._mac(session).encode()):
            return None
        session_id, _, expires = session.partition(".")
        if not expires.isdigit() or int(expires) < (now or time.time()):
            return None
        return session_id

    def csrf_token(self, session_id: str) -> str:
        return self._mac(f"csrf:{session_id}")

    def form_ok(self, request: Request, form_csrf: str | None) -> str | None:
        """None if a form POST may operate, else why not."""
        if self.read_only:
            return "this console is read-only: no [web] token is configured"
        if not same_origin(request):
            return "the request does not come from this console's own pages"
        session_id = self.session(request)
        if session_id is None:
            return "sign in with the operator token first"
        expected = self.csrf_token(session_id)
        if not form_csrf or not hmac.compare_digest(form_csrf.encode(), expected.encode()):
            return "the form is out of date or forged (CSRF token mismatch): reload the page"
        return None


def same_origin(request: Request) -> bool:
    """Whether the browser says the request comes from a page of this host: its ``Origin``, or
    lacking one its ``Referer``, names the host the request was sent to (``Host``, or the
    ``X-Forwarded-Host`` a reverse proxy sets; a page of another site cannot set either)."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source or source == "null":
        return False
    origin = urlsplit(source).netloc.lower()
    hosts = (request.headers.get("host", ""), request.headers.get("x-forwarded-host", ""))
    return any(origin == host.strip().lower() for host in hosts if host.strip())
