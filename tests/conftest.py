"""Generic fixtures shared by every test directory: a fixed clock and the shipped example campaign."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from leadqual.campaign import Campaign, builtin_campaign_path, load_campaign

NAIROBI = ZoneInfo("Africa/Nairobi")


@pytest.fixture
def fixed_now() -> datetime:
    """Wednesday 2025-06-04 10:00 in Nairobi (07:00 UTC): inside the example campaign's KE window."""
    return datetime(2025, 6, 4, 10, 0, tzinfo=NAIROBI)


@pytest.fixture
def example_campaign() -> Campaign:
    return load_campaign(builtin_campaign_path("example"))
