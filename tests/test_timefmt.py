"""Fixed vectors for backupctl/timefmt.py: each precision is on disk or in JSON, so each
stays exactly as it was when the copies were merged into one module."""

from __future__ import annotations

import datetime as dt

from backupctl import timefmt

T = dt.datetime(2026, 11, 22, 3, 39, 20, 300456, tzinfo=dt.UTC)
PLUS2 = dt.timezone(dt.timedelta(hours=2))


def test_milliseconds_truncated_and_not_converted() -> None:
    assert timefmt.iso_ms(T) == "2026-11-22T03:39:20.300Z"
    assert timefmt.iso_ms(T.replace(microsecond=999)) == "2026-11-22T03:39:20.000Z"


def test_seconds_converted_to_utc_and_none_passes() -> None:
    assert timefmt.iso_s(T) == "2026-11-22T03:39:20Z"
    assert timefmt.iso_s(T.astimezone(PLUS2)) == "2026-11-22T03:39:20Z"
    assert timefmt.iso_s(None) is None


def test_microseconds_converted_to_utc_and_none_passes() -> None:
    assert timefmt.iso_us(T) == "2026-11-22T03:39:20.300456Z"
    assert timefmt.iso_us(T.astimezone(PLUS2)) == "2026-11-22T03:39:20.300456Z"
    assert timefmt.iso_us(None) is None


def test_parse_keeps_or_converts_the_offset() -> None:
    for text in ("2026-11-22T03:39:20.300456Z", "2026-11-22T05:39:20.300456+02:00"):
        assert timefmt.parse_iso(text) == T
        assert timefmt.parse_iso_utc(text).tzinfo == dt.UTC
    assert timefmt.parse_iso("2026-11-22T05:39:20+02:00").utcoffset() == dt.timedelta(hours=2)
    assert timefmt.parse_iso(timefmt.iso_ms(T)) == T.replace(microsecond=300000)


def test_now_is_utc() -> None:
    assert timefmt.utcnow().tzinfo == dt.UTC
    assert timefmt.parse_iso(timefmt.now_iso_ms()).tzinfo == dt.UTC
