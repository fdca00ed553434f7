"""Per-second billing of connected legs (SAUTIKIT.md §6).

A leg bills from answer to hang-up; a started second counts as a whole one (`billed_seconds` =
ceil of the connected time). Cost = billed_seconds × rate_per_minute_minor / 60, rounded half up to
a whole minor unit, per leg; a call's cost is the sum of its legs (the lead, then any rep or phone
supervisor). At the default KES 3.00/min (300 minor) a second is exactly 5 minor units.
"""

from __future__ import annotations

import math

DEFAULT_RATE_PER_MINUTE_MINOR = 300
CURRENCY = "KES"


def billed_seconds(connected_s: float) -> int:
    # Float noise (e.g. 3.0000000001 from a clock) must not bill an extra second.
    return max(0, math.ceil(round(connected_s, 3)))


def leg_cost_minor(seconds: int, rate_per_minute_minor: int = DEFAULT_RATE_PER_MINUTE_MINOR) -> int:
    """seconds × rate / 60, rounded half up, in integer arithmetic."""
    return (seconds * rate_per_minute_minor * 2 + 60) // 120
