"""URL and host checks that keep secrets and the live endpoint where they belong.

Plain string arithmetic (standard library only), shared by the configuration (validating
endpoints, redacting what a problem line shows), the gateway (refusing a live host it was not
given) and ``main.py`` (a loopback simulator). Moved here from ``config.py``; ``config``
still re-exports them.
"""

from __future__ import annotations

import ipaddress


def normalise_host(host: str | None) -> str:
    """``host`` as DNS resolves it: lower case, without IPv6 brackets or the root's trailing
    dot (``API.Alpaca.Markets.`` is ``api.alpaca.markets``). Every host check compares
    normalised names, so spelling cannot slip the live endpoint past a guard."""
    return (host or "").strip().strip("[]").rstrip(".").lower()


def _split_secrets(text: str) -> tuple[str, str, str, bool, bool]:
    """(scheme, where, query+fragment, had user info, had query) of a URL, by hand: a key
    pasted as user info may hold '/' or '#', which fools urlsplit into showing part of it."""
    scheme, sep, rest = text.strip().partition("://")
    if not sep:
        scheme, rest = "", text.strip()
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    where, tail = rest[:cut], rest[cut:]
    userinfo = "@" in where
    if userinfo:
        where = where.rsplit("@", 1)[1]
    return scheme, where, tail, userinfo, bool(tail)


def has_url_credentials(text: str) -> bool:
    """Whether a URL carries user info (``user:pass@``), even one holding '/' or '#'."""
    return _split_secrets(text)[3]


def redact_url(text: str) -> str:
    """``text`` safe to show in a message: user info and query string replaced by ``***``
    (keys are sometimes pasted there), scheme, host, port and path kept."""
    scheme, where, _tail, userinfo, query = _split_secrets(text)
    shown = ("***@" if userinfo else "") + where
    if scheme:
        shown = f"{scheme}://{shown}"
    return shown + ("?***" if query else "")


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1``: addresses that never leave the machine."""
    if not host:
        return False
    host = normalise_host(host)
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
