"""Times for people and scripts (issue 15 item 2), in-process: the command-line moments of
`--since/--until` (timefmt.parse_time_arg), the table forms with a zone label
(output.human_time, human_time_in, --utc) and the one precision of documents
(output.normalize_times: UTC, milliseconds, `Z`)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest

from backupctl.cli import output
from backupctl.timefmt import parse_time_arg

NOW = dt.datetime(2026, 12, 3, 15, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local zone is Europe/Berlin (CET in December), and back afterwards."""
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    monkeypatch.setattr(output, "OPTS", output.Options())
    yield
    monkeypatch.undo()
    time.tzset()


def test_relative_and_iso_moments(berlin: None) -> None:
    assert parse_time_arg("7d", NOW) == NOW - dt.timedelta(days=7)
    assert parse_time_arg("12h", NOW) == NOW - dt.timedelta(hours=12)
    assert parse_time_arg("30m", NOW) == parse_time_arg("30min", NOW) == NOW - dt.timedelta(minutes=30)
    assert parse_time_arg("2w", NOW) == NOW - dt.timedelta(weeks=2)
    assert parse_time_arg("45s", NOW) == NOW - dt.timedelta(seconds=45)
    # A date is local midnight; a time without an offset is local; Z and offsets are kept.
    assert parse_time_arg("2026-12-01") == dt.datetime(2026, 11, 30, 23, 0, tzinfo=dt.UTC)
    assert parse_time_arg("2026-12-01T10:00") == dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    assert parse_time_arg("2026-12-01 10:00") == dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
    assert parse_time_arg("2026-12-01T10:00Z") == dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
    assert parse_time_arg("2026-12-01T10:00:00.250+02:00") == dt.datetime(
        2026, 12, 1, 8, 0, 0, 250000, tzinfo=dt.UTC
    )
    for bad in ("yesterday", "7 days", "-3d", "2026-13-01", ""):
        with pytest.raises(ValueError, match="30m, 12h, 7d, 2w"):
            parse_time_arg(bad, NOW)


def test_tables_show_local_time_with_the_zone_or_utc(berlin: None) -> None:
    assert output.human_time("2026-12-03T15:00:00.123Z") == "2026-12-03 16:00 CET"
    assert output.human_time("2026-07-03T15:00:00Z") == "2026-07-03 17:00 CEST"
    assert output.human_time("2026-12-03T15:00:00.123456+00:00") == "2026-12-03 16:00 CET"
    assert output.human_time(None) == "" and output.human_time("") == ""
    assert output.human_time("not a time") == "not a time"
    output.OPTS.utc = True
    assert output.human_time("2026-12-03T15:00:00.123Z") == "2026-12-03 15:00 UTC"


def test_a_zone_without_an_abbreviation_shows_its_offset() -> None:
    """tzdata names some zones only by offset (+04, +0430): shown as UTC+04, UTC+04:30."""
    import zoneinfo

    dubai = dt.datetime(2026, 12, 3, 15, 0, tzinfo=zoneinfo.ZoneInfo("Asia/Dubai"))
    kabul = dt.datetime(2026, 12, 3, 15, 0, tzinfo=zoneinfo.ZoneInfo("Asia/Kabul"))
    assert output._zone_label(dubai) == "UTC+04"
    assert output._zone_label(kabul) == "UTC+04:30"
    assert output._zone_label(dt.datetime(2026, 12, 3, tzinfo=dt.UTC)) == "UTC"


def test_a_schedule_time_in_its_own_zone_and_local(berlin: None) -> None:
    # 03:30 in New York is 09:30 in Berlin (local here): both, with the date once per day.
    assert (
        output.human_time_in("2026-12-04T08:30:00Z", "America/New_York")
        == "2026-12-04 03:30 EST (America/New_York), 09:30 CET"
    )
    assert (
        output.human_time_in("2026-12-04T02:00:00Z", "America/New_York")
        == "2026-12-03 21:00 EST (America/New_York), 2026-12-04 03:00 CET"
    )
    # The same zone as local: said once.
    assert (
        output.human_time_in("2026-12-04T02:30:00Z", "Europe/Berlin")
        == "2026-12-04 03:30 CET (Europe/Berlin)"
    )
    output.OPTS.utc = True
    assert (
        output.human_time_in("2026-12-04T02:30:00Z", "Europe/Berlin")
        == "2026-12-04 03:30 CET (Europe/Berlin), 02:30 UTC"
    )
    assert output.human_time_in("2026-12-04T02:30:00Z", None) == "2026-12-04 02:30 UTC"
    assert output.human_time_in("2026-12-04T02:30:00Z", "UTC") == "2026-12-04 02:30 UTC"


def test_documents_have_one_precision() -> None:
    doc = {
        "started": "2026-12-03T15:00:00.123Z",  # already the one precision
        "expires": "2026-12-10T15:00:00Z",  # seconds: gains .000
        "latest": "2026-12-03T15:00:00.123999Z",  # microseconds: the window's end rounds down
        "earliest": "2026-12-03T14:00:00.000001Z",  # and its start rounds up (stays inside)
        "from": "2026-12-03T14:00:00.999500+00:00",
        "local": "2026-12-03T16:00:00+01:00",  # an offset: converted to UTC
        "nested": [{"time": "2026-12-03T15:00:00Z", "name": "2026-12-03T15:00:00Z is not a time"}],
        "count": 3,
        "when": None,
    }
    assert output.normalize_times(doc) == {
        "started": "2026-12-03T15:00:00.123Z",
        "expires": "2026-12-10T15:00:00.000Z",
        "latest": "2026-12-03T15:00:00.123Z",
        "earliest": "2026-12-03T14:00:00.001Z",
        "from": "2026-12-03T14:00:01.000Z",
        "local": "2026-12-03T15:00:00.000Z",
        "nested": [{"time": "2026-12-03T15:00:00.000Z", "name": "2026-12-03T15:00:00Z is not a time"}],
        "count": 3,
        "when": None,
    }
