"""The one reader of amounts on the wire: a decimal string of base units, ASCII digits only.

Amounts travel as decimal strings (no floats, no signs, no leading zeros) and fit a uint128
(SES-05, SES-24). `str.isdigit` is not a check for that: it accepts "²", "٣" and fullwidth
digits, and `int()` then either raises a bare ValueError or silently reads a non-ASCII number.
Everything that reads an amount (challenges, payloads, problems, receipts, need-voucher events,
response headers) goes through `decimal_amount`.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_AMOUNT", "decimal_amount", "decimal_seconds", "format_decimals"]

MAX_AMOUNT: Final = 2**128 - 1  # uint128

# re.ASCII: `[0-9]` is ASCII anyway, but say it; fullmatch: no trailing newline accepted.
_DECIMAL = re.compile(r"(?:0|[1-9][0-9]{0,38})", re.ASCII)


def decimal_amount(value: object) -> int | None:
    """The integer of a canonical decimal string in 0..2^128-1, else None."""
    if not isinstance(value, str) or _DECIMAL.fullmatch(value) is None:
        return None
    amount = int(value)
    return amount if amount <= MAX_AMOUNT else None


def decimal_seconds(value: object) -> int | None:
    """A delay in whole seconds (Retry-After's delta-seconds form), ASCII digits only."""
    if not isinstance(value, str) or not (value.isascii() and value.isdigit()) or len(value) > 9:
        return None
    return int(value)


def format_decimals(base: int, decimals: int) -> str:
    """Base units as a decimal amount of the token (`1234567, 6` → "1.234567"), for people:
    integer arithmetic only. The wire keeps base-unit integers (`decimal_amount`)."""
    sign = "-" if base < 0 else ""
    whole, frac = divmod(abs(base), 10**decimals)
    return f"{sign}{whole}.{frac:0{decimals}d}" if decimals else f"{sign}{whole}"
