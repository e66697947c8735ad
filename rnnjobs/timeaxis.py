"""Time coordinates: decoding CF "<unit> since <date>" values to dates."""

import re

import numpy as np

_TIME_UNITS = re.compile(r"^\s*(\w+)\s+since\s+(.+?)\s*$")
_TIME_STEPS = {
    "days": "D", "day": "D", "d": "D",
    "hours": "h", "hour": "h", "hr": "h", "h": "h",
    "minutes": "m", "minute": "m", "min": "m",
    "seconds": "s", "second": "s", "sec": "s", "s": "s",
}
# CF reference times: "1970-01-01", "1970-1-1 0:00:00", "2000-01-01T00:00:00Z", "... UTC".
_REFERENCE_TIME = re.compile(r"^(\d{1,4}-\d{1,2}-\d{1,2})(?:[T ](\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?))?\s*(?:Z|UTC|GMT|[+-]00:?00)?$")
_GREGORIAN = ("standard", "gregorian", "proleptic_gregorian")


def decode_times(values, units, calendar=None):
    """Convert CF time values such as "hours since 1970-01-01 00:00:00" to ``datetime64[s]``.

    Returns
    -------
    ndarray of datetime64[s], or None
        None when the units are not "<unit> since <date>", the calendar is not
        Gregorian, or the reference date cannot be parsed or is not in UTC.
    """
    if not units or (calendar and calendar.lower() not in _GREGORIAN):
        return None
    match = _TIME_UNITS.match(units)
    if match is None or match.group(1).lower() not in _TIME_STEPS:
        return None
    reference = _REFERENCE_TIME.match(match.group(2))
    if reference is None:
        # NOTE: NumPy has no time zones, so a reference time with a UTC offset other than zero is not decoded.
        return None
    year, month, day = (int(part) for part in reference.group(1).split("-"))
    hour, _, minutes_seconds = (reference.group(2) or "0:00").partition(":")
    try:
        origin = np.datetime64(f"{year:04d}-{month:02d}-{day:02d}T{int(hour):02d}:{minutes_seconds}", "s")
    except ValueError:
        return None
    step = np.timedelta64(1, _TIME_STEPS[match.group(1).lower()]).astype("timedelta64[s]").astype(np.int64)
    seconds = np.rint(np.asarray(values, dtype=np.float64) * step).astype(np.int64)
    return origin + seconds.astype("timedelta64[s]")


def format_time(values, index, units, calendar=None):
    """Return time step ``index`` as "YYYY-MM-DD HH:MM" if its units decode, else as the raw value."""
    decoded = decode_times(values[index:index + 1], units, calendar)
    if decoded is None:
        return f"{values[index]}"
    return str(decoded[0].astype("datetime64[m]")).replace("T", " ")
