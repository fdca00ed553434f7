"""Per-second billing (SAUTIKIT.md §6): a started second counts, cost rounds half up per leg."""

from __future__ import annotations

import pytest

from local.sautikit.billing import billed_seconds, leg_cost_minor


@pytest.mark.parametrize(
    ("connected", "seconds"), [(0.0, 0), (0.2, 1), (1.0, 1), (1.0000001, 1), (59.01, 60), (61.5, 62)]
)
def test_a_started_second_bills_as_a_whole_second(connected, seconds):
    assert billed_seconds(connected) == seconds


@pytest.mark.parametrize(
    ("seconds", "rate", "cost"),
    [
        (0, 300, 0),
        (1, 300, 5),  # KES 3.00/min = 5 minor units a second, exactly
        (60, 300, 300),
        (37, 300, 185),
        (1, 250, 4),  # 4.1666… rounds down
        (3, 250, 13),  # 12.5 rounds half up
        (7, 130, 15),  # 15.1666…
    ],
)
def test_cost_is_seconds_times_rate_over_sixty_rounded_half_up(seconds, rate, cost):
    assert leg_cost_minor(seconds, rate) == cost
