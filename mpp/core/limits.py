"""Size caps checked before any decoding (CORE-40).

Clients MUST handle challenges of at least 4 KB and servers MUST accept credentials of at least
4 KB; anything above MAX_HEADER_LENGTH is refused without being decoded (a credential -> 431).
"""

from __future__ import annotations

from typing import Final

from mpp.core.errors import ChallengeParseError, HeaderTooLarge

#: The floor the spec guarantees (CORE-40); our caps are far above it.
MIN_SUPPORTED_LENGTH: Final = 4096
#: Servers SHOULD keep one challenge under this size.
RECOMMENDED_CHALLENGE_LENGTH: Final = 8192
#: Hard cap for one header value (credential, receipt, challenge field value).
MAX_HEADER_LENGTH: Final = 64 * 1024
#: Cap for one RFC 3339 timestamp (longer ones are refused before matching).
MAX_TIMESTAMP_LENGTH: Final = 64
#: Cap for an Accept-Payment header value.
MAX_ACCEPT_PAYMENT_LENGTH: Final = 8192


def check_credential_size(value: str) -> None:
    """Refuse an Authorization / Payment-Receipt value above the cap, before decoding."""
    if len(value) > MAX_HEADER_LENGTH:
        raise HeaderTooLarge(f"header value longer than {MAX_HEADER_LENGTH} characters")


def check_challenge_size(value: str) -> None:
    """Refuse a WWW-Authenticate value above the cap, before scanning."""
    if len(value) > MAX_HEADER_LENGTH:
        raise ChallengeParseError(
            f"WWW-Authenticate value longer than {MAX_HEADER_LENGTH} characters"
        )
