"""RFC 3339 timestamps for `expires` (CORE-14) and receipt `timestamp` (CORE-32).

Accepts `Z`/`z`, numeric offsets and fractional seconds; emits UTC with milliseconds and `Z`
(the form JavaScript's `toISOString` and the peer SDKs produce).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from mpp.core.limits import MAX_TIMESTAMP_LENGTH

# Fixed-width fields; the only repetition is the digit run of the fraction, followed by a
# character outside its class, so matching is linear.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d++))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time into an aware datetime; ValueError when it is not one."""
    if len(text) > MAX_TIMESTAMP_LENGTH:
        raise ValueError("timestamp too long")
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError("not an RFC 3339 date-time")
    g = m.groups()
    year, month, day, hour, minute, second = (
        int(g[0]),
        int(g[1]),
        int(g[2]),
        int(g[3]),
        int(g[4]),
        int(g[5]),
    )
    frac = g[6]
    micro = int((frac + "000000")[:6]) if frac else 0
    if g[7]:
        tz: timezone = UTC
    else:
        off_h, off_m = int(g[9]), int(g[10])
        if off_h > 23 or off_m > 59:
            raise ValueError("bad UTC offset")
        delta = timedelta(hours=off_h, minutes=off_m)
        tz = timezone(-delta if g[8] == "-" else delta)
    leap = second == 60  # RFC 3339 allows a leap second; datetime cannot hold it
    dt = datetime(year, month, day, hour, minute, 59 if leap else second, micro, tzinfo=tz)
    return dt + timedelta(seconds=1) if leap else dt


def is_rfc3339(text: str) -> bool:
    try:
        parse_rfc3339(text)
    except ValueError:
        return False
    return True


def format_rfc3339(moment: datetime) -> str:
    """UTC, millisecond precision, `Z` suffix. A naive datetime is refused (no implicit clock)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    utc = moment.astimezone(UTC)
    return (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
        f"{utc.second:02d}.{utc.microsecond // 1000:03d}Z"
    )


def require_aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("`now` must be a timezone-aware datetime")
    return moment
