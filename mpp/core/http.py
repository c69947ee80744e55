"""Codec-level helpers for the HTTP layer: Cache-Control, credential selection, secure URLs.

CORE-24 (one Payment credential), CORE-34/35 (Cache-Control), CORE-42 (TLS, loopback opt-in).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

from mpp.core.errors import InsecureTransport, MultipleCredentials

NO_STORE: Final = "no-store"
PRIVATE: Final = "private"
_CONFLICTS: Final = {"private": ("public",), "no-store": ("public", "max-age", "s-maxage")}


def _directive_name(directive: str) -> str:
    return directive.split("=", 1)[0].strip(" \t").lower()


def merge_cache_control(existing: str | None, *directives: str) -> str:
    """Add `directives` to an existing Cache-Control value without dropping the others.

    Duplicates are not repeated, and a directive that contradicts an added one (`public` vs
    `private`) is removed (CORE-35: merge, don't replace).
    """
    current = [d.strip(" \t") for d in (existing or "").split(",") if d.strip(" \t")]
    adding = [d.strip(" \t") for d in directives if d.strip(" \t")]
    drop = {_directive_name(d) for d in adding}
    for d in adding:
        drop.update(_CONFLICTS.get(_directive_name(d), ()))
    kept = [d for d in current if _directive_name(d) not in drop]
    return ", ".join([*kept, *adding])


def receipt_cache_control(existing: str | None) -> str:
    """Cache-Control for a response carrying Payment-Receipt (CORE-35)."""
    return merge_cache_control(existing, PRIVATE)


def payment_credentials(authorization_values: Iterable[str]) -> list[str]:
    """Every `Payment` credential among Authorization values (also comma-joined ones)."""
    found: list[str] = []
    for value in authorization_values:
        for part in value.split(","):
            p = part.strip(" \t")
            if len(p) > 7 and p[:7].lower() == "payment" and p[7] in " \t":
                found.append(p)
            elif p.lower() == "payment":
                found.append(p)
    return found


def select_payment_credential(authorization_values: Iterable[str]) -> str | None:
    """The single Payment credential, None if absent; MultipleCredentials (400) if several."""
    found = payment_credentials(authorization_values)
    if len(found) > 1:
        raise MultipleCredentials("more than one Payment credential (CORE-24)")
    return found[0] if found else None


def is_loopback_host(host: str) -> bool:
    h = host.strip("[]").lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def require_secure_url(url: str, allow_insecure: bool = False) -> None:
    """CORE-42: https only; plain http solely to a loopback host and only when opted in."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        raise InsecureTransport("unparseable URL") from None
    scheme = parts.scheme.lower()
    if scheme == "https" and host:
        return
    if scheme == "http" and host and allow_insecure and is_loopback_host(host):
        return
    raise InsecureTransport(
        "payment requires https"
        + ("" if allow_insecure else " (plain http to loopback needs allow_insecure=True)")
    )
