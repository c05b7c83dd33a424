"""The scheduler engine end to end: the real Scheduler and Service on real repositories.

Time is a FakeClock shared by the Scheduler and the Service (which stamps backups'
`started`), so a year of `run_due()` calls runs in seconds. Nothing in the engine is
mocked: backups are real backups of a small files tree into a local repository, and
retention really deletes them. The pure schedule/retention logic is covered by
tests/policy/test_policy_*.py; this file checks the wiring (state, leases, clock, retention
after each run, CLI processes).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import helpers
import pytest
from ruamel.yaml import YAML

from backupctl.backups.service import Service
from backupctl.config.loader import load_config
from backupctl.policy.schedule import FakeClock
from backupctl.schedule.scheduler import Scheduler

BERLIN = ZoneInfo("Europe/Berlin")

MENDIX = {
    "created": "2025-12-31T12:00:00Z",
    "schedules": [{"type": "full", "daily": {"at": "01:00"}, "timezone": "Europe/Berlin"}],
    "retention": {
        "keep_daily": 14,
        "keep_weekly": 13,
        "keep_monthly": 12,
        "weekly_day": "sunday",
        "monthly_rule": "first_weekday",
    },
}


# ---- set-up helpers ---------------------------------------------------------------------


def make_tree(root: Path) -> Path:
    """A tiny tree: three small files and a subdirectory; `bump` changes it a little."""
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n" * 50)
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 8)
    (root / "counter.txt").write_text("0\n")
    return root


def bump(root: Path, n: int) -> None:
    (root / "counter.txt").write_text(f"{n}\n")
    with (root / "sub" / "log.txt").open("a") as fh:
        fh.write(f"run {n}\n")


def write_config(
    tmp_path: Path,
    tree: Path,
    policies: dict[str, Any],
    policy: str | None,
    *,
    settings: dict[str, Any] | None = None,
    destinations: dict[str, Any] | None = None,
) -> Path:
    path = tmp_path / "config.yaml"
    helpers.write_config(
        path,
        sources=[{"type": "files", "paths": [str(tree)]}],
        repository=tmp_path / "repo",
        settings=settings,
    )
    doc = helpers.load_yaml(path)
    doc["destinations"]["local"]["fsync"] = False
    if destinations is not None:
        doc["destinations"] = destinations
        doc["deployments"]["app"]["destinations"] = list(destinations)
    doc["policies"] = policies
    if policy is not None:
        doc["deployments"]["app"]["policy"] = policy
    helpers.dump_yaml(doc, path)
    return path


def engine(config: Path, clock: FakeClock) -> tuple[Service, Scheduler]:
    service = Service(load_config(config), clock=clock)
    return service, Scheduler(service, clock)


def completed(service: Service) -> dict[str, Any]:
    rows = service.list_backups("app")
    assert all(r["status"] == "Completed" for r in rows), [(r["id"][:8], r["status"]) for r in rows]
    return {r["id"]: r for r in rows}


def started_of(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["started"].replace("Z", "+00:00"))


def started_ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["backup_id"] for r in rows if r["backup_id"]]


# ---- 1. a simulated year ------------------------------------------------------------------


def first_sunday(year: int, month: int) -> date:
    d = date(year, month, 1)
    return d + timedelta(days=(6 - d.weekday()) % 7)


def gfs_expected(scheduled: dict[str, datetime], manual: set[str]) -> set[str]:
    """Mendix GFS keepers by plain calendar reasoning (independent of policy/retention.py).

    Every day for 14 days with backups, every Sunday-started week for 13 weeks, every
    month that starts on its first Sunday for 12 months; of each period the earliest
    backup; the manual backup always; the newest backup always.
    """

    def local_day(t: datetime) -> date:
        return t.astimezone(BERLIN).date()

    def week(d: date) -> date:  # Sunday..Saturday
        return d - timedelta(days=(d.weekday() + 1) % 7)

    def month(d: date) -> date:  # first Sunday .. day before the next month's first Sunday
        f = first_sunday(d.year, d.month)
        if d >= f:
            return f
        return first_sunday(d.year - 1, 12) if d.month == 1 else first_sunday(d.year, d.month - 1)

    oldest_first = sorted(scheduled, key=lambda i: scheduled[i])

    def keepers(period: Any, count: int) -> set[str]:
        first: dict[date, str] = {}
        for bid in oldest_first:
            first.setdefault(period(local_day(scheduled[bid])), bid)
        return {first[p] for p in sorted(first, reverse=True)[:count]}

    kept = keepers(lambda d: d, 14) | keepers(week, 13) | keepers(month, 12)
    kept.add(oldest_first[-1])
    return kept | manual


def test_a_year_of_run_due_keeps_exactly_the_gfs_set(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    config = write_config(tmp_path, tree, {"nightly": MENDIX}, "nightly")
    start = datetime(2025, 12, 31, 18, 0, tzinfo=UTC)  # after `created`, before the 1 Jan slot
    end = start + timedelta(days=365)
    manual_at = datetime(2026, 6, 17, 10, 0, tzinfo=UTC)
    clock = FakeClock(start)
    service, scheduler = engine(config, clock)

    scheduled: dict[str, datetime] = {}  # id -> started (as the clock said)
    slots: list[datetime] = []
    contents: dict[str, dict[str, Any]] = {}  # id -> tree snapshot when it was taken
    manual: set[str] = set()
    n = 0
    t0 = time.monotonic()
    # run_due every 6 simulated hours (00, 06, 12, 18 UTC), 1460 calls, for 1 Jan .. 31 Dec.
    while clock.now() < end:
        now = clock.now()
        if now == manual_at - timedelta(hours=4):
            clock.set(manual_at)
            n += 1
            bump(tree, n)
            record = service.create_backup("app", type="full")
            assert record["created_by"] == "manual"
            manual.add(record["id"])
            contents[record["id"]] = helpers.snapshot_tree(tree)
            clock.set(now)
        n += 1
        bump(tree, n)
        snapshot = helpers.snapshot_tree(tree)
        rows = scheduler.run_due()
        for row in rows:
            assert row["status"] == "Completed", row
            assert row["policy"] == "nightly" and row["type"] == "full"
            assert not row.get("retention_error"), row
            slot = datetime.fromisoformat(row["slot"].replace("Z", "+00:00"))
            assert slot.astimezone(BERLIN).strftime("%H:%M") == "01:00", row
            assert slot <= now < slot + timedelta(hours=6), row
            slots.append(slot)
            scheduled[row["backup_id"]] = now
            contents[row["backup_id"]] = snapshot
        assert len(rows) <= 1, rows
        clock.advance(timedelta(hours=6))
    elapsed = time.monotonic() - t0

    # One run per day, never a slot twice, every day of the year.
    assert len(slots) == len(set(slots)) == 365, (len(slots), len(set(slots)))
    assert {s.astimezone(BERLIN).date() for s in slots} == {
        date(2026, 1, 1) + timedelta(days=i) for i in range(365)
    }

    expected = gfs_expected(scheduled, manual)
    kept = completed(service)
    all_started = {**scheduled, **dict.fromkeys(manual, manual_at)}
    assert {i: started_of(r) for i, r in kept.items()} == {i: all_started[i] for i in expected}
    for bid, row in kept.items():
        assert row["created_by"] == ("manual" if bid in manual else "nightly"), row
    # Sanity of the expectation itself: 14 daily + Sundays + first Sundays, about 36 + manual.
    assert 30 <= len(expected) <= 40, len(expected)
    assert all(b in kept for b in manual)

    # Every kept backup verifies; a few restore byte for byte (oldest, manual, a Sunday, newest).
    for bid in kept:
        result = service.verify_backup(bid)
        assert result.get("ok", True) and not result.get("errors"), result
    by_age = sorted(kept, key=lambda i: kept[i]["started"])
    sunday = next(
        i for i in by_age if started_of(kept[i]).astimezone(BERLIN).weekday() == 6 and i not in manual
    )
    for i, bid in enumerate(dict.fromkeys([by_age[0], next(iter(manual)), sunday, by_age[-1]])):
        target = tmp_path / f"restore-{i}"
        service.restore_backup(bid, target_dir=target)
        helpers.assert_same_tree(contents[bid], helpers.snapshot_tree(helpers.restored(target, tree)))
    assert elapsed < 120, f"the simulated year took {elapsed:.0f}s"
    # Each slot took one lease object in the (local) primary destination; leases older than
    # a week are dropped, so only the last week's remain, one per daily slot.
    leases = sorted(p.name for p in (tmp_path / "repo" / "leases" / "app").iterdir())
    assert 7 <= len(leases) <= 8 and all(name.startswith("nightly.full.") for name in leases), leases


# ---- 2. made up once, idempotency, interval reset, pause, DST ----------------------------

DAILY_BERLIN = {
    "created": "2026-01-01T00:00:00Z",
    "schedules": [{"daily": {"at": "01:00"}, "timezone": "Europe/Berlin"}],
}


def test_machine_off_for_five_days_runs_once_and_run_due_is_idempotent(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    config = write_config(tmp_path, tree, {"nightly": DAILY_BERLIN}, "nightly")
    clock = FakeClock(datetime(2026, 1, 10, 6, 0, tzinfo=UTC))
    service, scheduler = engine(config, clock)
    first = scheduler.run_due()
    assert [r["slot"] for r in first] == ["2026-01-10T00:00:00.000Z"] and first[0]["status"] == "Completed"
    assert scheduler.run_due() == []  # same instant: nothing starts twice
    # A second scheduler on the same state (another `run-due` process) agrees.
    assert engine(config, clock)[1].run_due() == []

    clock.advance(timedelta(days=5, hours=3))  # off from the 10th to the 15th 09:00 UTC
    rows = scheduler.run_due()
    assert [(r["slot"], r["status"]) for r in rows] == [("2026-01-15T00:00:00.000Z", "Completed")], rows
    assert scheduler.run_due() == []
    assert engine(config, clock)[1].run_due() == []
    backups = completed(service)
    assert sorted(started_of(r) for r in backups.values()) == [
        datetime(2026, 1, 10, 6, tzinfo=UTC),
        datetime(2026, 1, 15, 9, tzinfo=UTC),
    ]
    assert {r["created_by"] for r in backups.values()} == {"nightly"}
    # The next slot runs normally.
    clock.set(datetime(2026, 1, 16, 0, 1, tzinfo=UTC))
    assert [r["slot"] for r in scheduler.run_due()] == ["2026-01-16T00:00:00.000Z"]
    assert scheduler.next_run() == datetime(2026, 1, 17, 0, 0, tzinfo=UTC)


def test_interval_is_reset_by_a_manual_backup(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    t0 = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
    policy = {"created": "2026-04-01T08:00:00Z", "schedules": [{"interval": "24h"}]}
    config = write_config(tmp_path, tree, {"csc": policy}, "csc")
    clock = FakeClock(t0 + timedelta(hours=23, minutes=59))
    service, scheduler = engine(config, clock)
    assert scheduler.run_due() == []  # 24h after `created` is not yet
    clock.set(t0 + timedelta(hours=24))
    rows = scheduler.run_due()
    assert [r["status"] for r in rows] == ["Completed"] and rows[0]["slot"] == "2026-04-02T08:00:00.000Z"

    clock.set(t0 + timedelta(hours=30))
    manual = service.create_backup("app", type="full", created_by="manual")
    assert manual["started"] == "2026-04-02T14:00:00.000Z"
    assert scheduler.next_run() == t0 + timedelta(hours=54)
    for hours in (47, 48, 49, 53.99):
        clock.set(t0 + timedelta(hours=hours))
        assert scheduler.run_due() == [], f"ran {hours}h after created, before 24h after the manual backup"
    clock.set(t0 + timedelta(hours=54))
    rows = scheduler.run_due()
    assert [(r["slot"], r["status"]) for r in rows] == [("2026-04-03T14:00:00.000Z", "Completed")], rows
    assert scheduler.run_due() == []
    assert len(completed(service)) == 3


def test_paused_policy_runs_nothing_until_resumed(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    config = write_config(tmp_path, tree, {"nightly": {**DAILY_BERLIN, "status": "paused"}}, "nightly")
    clock = FakeClock(datetime(2026, 2, 1, 0, 0, tzinfo=UTC))
    service, scheduler = engine(config, clock)
    for _ in range(12):  # three days, every 6 hours
        assert scheduler.run_due() == []
        clock.advance(timedelta(hours=6))
    assert scheduler.next_run() is None
    assert service.list_backups("app") == []

    doc = helpers.load_yaml(config)
    doc["policies"]["nightly"]["status"] = "active"
    helpers.dump_yaml(doc, config)
    service, scheduler = engine(config, clock)  # what the next run-due process sees
    rows = scheduler.run_due()
    assert [(r["slot"], r["status"]) for r in rows] == [("2026-02-04T00:00:00.000Z", "Completed")], rows
    assert scheduler.run_due() == []
    assert len(completed(service)) == 1


@pytest.mark.parametrize(
    ("days", "expected_slot_on_change_day"),
    [
        # Spring forward, 29 March 2026: 02:30 does not exist; it runs at 03:30 CEST = 01:30 UTC.
        ((date(2026, 3, 27), 5), datetime(2026, 3, 29, 1, 30, tzinfo=UTC)),
        # Fall back, 25 October 2026: 02:30 happens twice; it runs once, at the first (CEST).
        ((date(2026, 10, 23), 5), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
    ],
    ids=["spring-forward", "fall-back"],
)
def test_berlin_0230_across_dst_runs_once_a_day(
    tmp_path: Path, days: tuple[date, int], expected_slot_on_change_day: datetime
) -> None:
    tree = make_tree(tmp_path / "tree")
    first_day, n_days = days
    policy = {
        "created": "2026-01-01T00:00:00Z",
        "schedules": [{"daily": {"at": "02:30"}, "timezone": "Europe/Berlin"}],
    }
    config = write_config(tmp_path, tree, {"p": policy}, "p")
    start = datetime.combine(first_day, datetime.min.time(), BERLIN).astimezone(UTC) + timedelta(hours=3)
    clock = FakeClock(start)  # after the first day's slot has passed: nothing made up (created before)
    service, scheduler = engine(config, clock)
    scheduler.run_due()  # the first day's slot (made up once)
    ran: list[tuple[datetime, datetime]] = []
    end = datetime.combine(first_day + timedelta(days=n_days), datetime.min.time(), BERLIN) + timedelta(
        hours=12
    )
    while clock.now() < end:
        clock.advance(timedelta(minutes=5))
        ran += [
            (datetime.fromisoformat(r["slot"].replace("Z", "+00:00")), clock.now())
            for r in scheduler.run_due()
        ]
    local_days = [slot.astimezone(BERLIN).date() for slot, _ in ran]
    assert local_days == [first_day + timedelta(days=i) for i in range(1, n_days + 1)], ran
    change_day = expected_slot_on_change_day.astimezone(BERLIN).date()
    slot, at = ran[local_days.index(change_day)]
    assert slot == expected_slot_on_change_day
    assert timedelta(0) <= at - slot < timedelta(minutes=5)  # run at its slot, not an hour late
    for slot, _ in ran:
        if slot != expected_slot_on_change_day:
            assert slot.astimezone(BERLIN).strftime("%H:%M") == "02:30"
    backups = completed(service)
    assert len(backups) == n_days + 1
    assert {started_of(r) for r in backups.values()} >= {at for _, at in ran}


# ---- 3. the CLI: run-due from cron, export, daemon, prune -----------------------------------


CRON_LINE = shlex.split("schedule run-due --quiet")  # README: * * * * * backupctl schedule run-due --quiet


def cli_list(env: dict[str, str]) -> list[dict[str, Any]]:
    return helpers.run_ok("backup", "list", "--all", "-o", "json", env=env).json()


def test_crontab_line_twice_in_a_row_makes_one_backup(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    # No `created`: a deployment that never ran gets its newest slot at once.
    policy = {"schedules": [{"cron": "0 0 * * *", "timezone": "UTC"}]}
    env = {"BACKUPCTL_CONFIG": str(write_config(tmp_path, tree, {"nightly": policy}, "nightly"))}
    # Exactly the README's crontab line.
    first = helpers.run_ok(*CRON_LINE, env=env)
    second = helpers.run_ok(*CRON_LINE, env=env)
    assert second.stdout == "" and second.stderr == "", second  # cron mails nothing when nothing ran
    rows = cli_list(env)
    assert [(r["status"], r["created_by"]) for r in rows] == [("Completed", "nightly")], (first, rows)
    assert first.stdout == "", first  # --quiet: cron mails only failures
    assert helpers.run_ok("schedule", "run-due", "-o", "json", env=env).json() == []


def test_export_formats_parse(tmp_path: Path) -> None:
    import configparser

    from croniter import croniter

    tree = make_tree(tmp_path / "tree")
    policies = {
        "nightly": DAILY_BERLIN,
        "ny": {"schedules": [{"cron": "30 2 * * *", "timezone": "America/New_York", "type": "incremental"}]},
    }
    config = write_config(tmp_path, tree, policies, "nightly")
    doc = helpers.load_yaml(config)
    doc["deployments"]["other"] = {**doc["deployments"]["app"], "policy": "ny"}
    helpers.dump_yaml(doc, config)
    env = {"BACKUPCTL_CONFIG": str(config)}

    crontab = helpers.run_ok("schedule", "export", "--format", "crontab", env=env).stdout
    entries = [ln for ln in crontab.splitlines() if ln.strip() and not ln.startswith("#")]
    jobs = [ln for ln in entries if "=" not in ln.split()[0]]
    assert jobs, crontab
    for line in jobs:
        fields = line.split(None, 5)
        assert croniter.is_valid(" ".join(fields[:5])), line
        assert "backupctl schedule run-due" in fields[5]
    per = helpers.run_ok("schedule", "export", "--format", "crontab", "--per-schedule", env=env).stdout
    assert any("TZ=" in ln or "CRON_TZ=" in ln for ln in per.splitlines()), per

    systemd = helpers.run_ok("schedule", "export", "--format", "systemd", env=env).stdout
    units = [u for u in re.split(r"^# /etc/systemd/system/\S+\n", systemd, flags=re.M) if u.strip()]
    assert len(units) >= 2, systemd
    kinds = set()
    for unit in units:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(unit)
        kinds |= set(parser.sections())
        if parser.has_section("Service"):
            assert "backupctl schedule run-due" in parser["Service"]["ExecStart"]
        if parser.has_section("Timer"):
            assert "Europe/Berlin" in systemd and parser["Timer"]["OnCalendar"]
    assert {"Unit", "Service", "Timer", "Install"} <= kinds, systemd

    k8s = helpers.run_ok("schedule", "export", "--format", "kubernetes", env=env).stdout
    docs = [d for d in YAML(typ="safe", pure=True).load_all(k8s) if d]
    # Per deployment a ConfigMap, a state claim and a CronJob (tests/policy/test_policy_export.py).
    assert {d["kind"] for d in docs} == {"CronJob", "ConfigMap", "PersistentVolumeClaim"}, k8s
    docs = [d for d in docs if d["kind"] == "CronJob"]
    assert len(docs) == 2, k8s
    for d in docs:
        spec = d["spec"]
        assert spec["concurrencyPolicy"] == "Forbid"
        assert spec["timeZone"] in ("Europe/Berlin", "America/New_York")
        assert croniter.is_valid(spec["schedule"])
        container = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][:2] == ["schedule", "run-due"]
    assert {d["spec"]["timeZone"] for d in docs} == {"Europe/Berlin", "America/New_York"}


def start_daemon(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen(
        helpers.cli_command("schedule", "daemon"),
        env=helpers.cli_env(env),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def jobs_of(env: dict[str, str]) -> list[dict[str, Any]]:
    """The state DB as another process sees it (cheaper than `backup list`)."""
    from backupctl.backups.state import StateDB

    return StateDB(Path(env["XDG_STATE_HOME"]) / "backupctl").jobs()


def daemon_env(tmp_path: Path, tree: Path) -> dict[str, str]:
    # Intervals have a one-minute minimum (models.Schedule); with no backup yet it runs at once.
    policy = {"schedules": [{"interval": "1m"}]}
    config = write_config(tmp_path, tree, {"often": policy}, "often")
    return {"BACKUPCTL_CONFIG": str(config), "XDG_STATE_HOME": os.environ["XDG_STATE_HOME"]}


def test_daemon_runs_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    env = daemon_env(tmp_path, make_tree(tmp_path / "tree"))
    proc = start_daemon(env, tmp_path / "daemon.log")
    try:
        wait_for(lambda: any(j["status"] == "Completed" for j in jobs_of(env)), 60, "a completed backup")
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, (tmp_path / "daemon.log").read_text()
        assert time.monotonic() - t < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in log and "scheduler stopped" in log, log
    rows = cli_list(env)
    assert len(rows) == 1 and rows[0]["status"] == "Completed" and rows[0]["created_by"] == "often", rows


def big_tree(root: Path) -> Path:
    """Enough incompressible data that a backup takes a few seconds."""
    root.mkdir()
    for i in range(12):
        (root / f"blob{i}.bin").write_bytes(os.urandom(32 << 20))
    return root


@pytest.mark.parametrize(
    "signals",
    [
        1,
        2,
    ],
    ids=["finish-running", "second-signal-stops-now"],
)
def test_daemon_sigterm_during_a_backup_is_never_half_visible(tmp_path: Path, signals: int) -> None:
    env = daemon_env(tmp_path, big_tree(tmp_path / "tree"))
    proc = start_daemon(env, tmp_path / "daemon.log")
    try:
        wait_for(lambda: any(j["status"] == "Running" for j in jobs_of(env)), 60, "a running backup")
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        if signals == 2:
            # Signals that arrive before Python ran the handler of the first are coalesced into
            # one: send the second only once the daemon has acknowledged the first.
            log_file = tmp_path / "daemon.log"
            deadline = time.monotonic() + 60
            while "signal again" not in log_file.read_text() and time.monotonic() < deadline:
                time.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in log, log
    rows = cli_list(env)
    assert len(rows) == 1, rows
    if signals == 1:
        assert code == 0, log
        assert rows[0]["status"] == "Completed", rows
    else:
        assert code != 0, log
        assert rows[0]["status"] == "Failed", rows
    # What is in the repository matches: a manifest only for a Completed backup.
    snapshots = tmp_path / "repo" / "snapshots"
    manifests = [m for m in snapshots.rglob("*") if m.is_file()] if snapshots.exists() else []
    assert (len(manifests) == 1) == (rows[0]["status"] == "Completed"), manifests


def test_backup_prune_dry_run_then_yes(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    policy = {"created": "2026-01-01T00:00:00Z", "schedules": [{"daily": {"at": "03:00"}}]}
    config = write_config(tmp_path, tree, {"p": policy}, "p")
    clock = FakeClock(datetime(2026, 3, 1, 4, 0, tzinfo=UTC))
    service, scheduler = engine(config, clock)
    for day in range(6):  # no retention yet: all kept
        bump(tree, day)
        assert [r["status"] for r in scheduler.run_due()] == ["Completed"]
        if day == 2:
            service.create_backup("app", type="full")  # manual: exempt
        clock.advance(timedelta(days=1))
    before = completed(service)
    assert len(before) == 7

    doc = helpers.load_yaml(config)
    doc["policies"]["p"]["retention"] = {"keep_last": 2}
    helpers.dump_yaml(doc, config)
    env = {"BACKUPCTL_CONFIG": str(config)}
    plan = helpers.run_ok("backup", "prune", "--dry-run", "-o", "json", env=env).json()
    assert plan["dry_run"] is True
    decisions = {d["id"]: d for d in plan["decisions"]}
    assert set(decisions) == set(before)
    for d in decisions.values():
        assert d["action"] in ("keep", "delete") and d["reasons"], d
    keep = {i for i, d in decisions.items() if d["action"] == "keep"}
    newest_two = sorted(
        (i for i in before if before[i]["created_by"] == "p"), key=lambda i: before[i]["started"]
    )[-2:]
    manual = {i for i in before if before[i]["created_by"] == "manual"}
    assert keep == set(newest_two) | manual, decisions
    assert any("keep_last" in r for i in newest_two for r in decisions[i]["reasons"])
    assert any("manual" in r for i in manual for r in decisions[i]["reasons"])
    assert {i for i, d in decisions.items() if d["action"] == "delete"} == set(before) - keep
    assert {r["id"] for r in cli_list(env)} == set(before)  # the dry run deleted nothing

    result = helpers.run_ok("backup", "prune", "--yes", "-o", "json", env=env).json()
    assert result["dry_run"] is False
    after = cli_list(env)
    assert {r["id"] for r in after} == keep
    assert all(r["status"] == "Completed" for r in after)
    assert helpers.run_ok("backup", "prune", "--dry-run", "-o", "json", env=env).json()["decisions"] and all(
        d["action"] == "keep"
        for d in helpers.run_ok("backup", "prune", "--dry-run", "-o", "json", env=env).json()["decisions"]
    )
