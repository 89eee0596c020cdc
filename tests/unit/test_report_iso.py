"""Event times: the once-a-second formatting gives exactly what datetime gives."""
from __future__ import annotations

import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.detector.report import iso
from tests.conftest import examples


def reference(now_ns: int) -> str:
    return datetime.datetime.fromtimestamp(now_ns / 1e9, datetime.UTC).isoformat(
        timespec="microseconds").replace("+00:00", "Z")


@settings(max_examples=examples(3000), deadline=None)
@given(now_ns=st.integers(1_500_000_000_000_000_000, 2_000_000_000_000_000_000))
def test_any_time_is_formatted_as_datetime_formats_it(now_ns):
    assert iso(now_ns) == reference(now_ns)


def test_rounding_at_the_edges_of_a_second_and_of_a_microsecond():
    second = 1_764_403_200_000_000_000
    for now_ns in [second - 1000, second - 500, second - 499, second - 1, second, second + 499, second + 500,
                   second + 1500, second + 2500] + [second + k * 997 for k in range(2000)]:
        assert iso(now_ns) == reference(now_ns), now_ns
    assert iso(second - 1) == "2025-11-29T08:00:00.000000Z"
