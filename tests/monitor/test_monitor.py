"""`backupctl metrics` and `backupctl status` (issue 16 items 3 and 4) against real repositories.

The metrics are parsed with prometheus_client's own parser and compared with what the test set
up (a backup's size, duration and end from `backup show -o json`, the repository's files on
disk, the failed runs); `metrics serve` answers a real HTTP GET; `status` exits 0 for a freshly
backed-up deployment and 9 naming the problem for an overdue one, one whose last run failed,
one never backed up and one whose upload failed.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import helpers
from prometheus_client.parser import text_string_to_metric_families

from backupctl.monitor.metrics import CATALOG, PROBLEM_KINDS

PROBLEMS = 9  # ExitCode.PROBLEMS, as documented in docs/cli.md

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[Samples, dict[str, tuple[str, str]]]:
    """(samples by (name, labels), family name -> (type, help)) through prometheus_client."""
    samples: Samples = {}
    families: dict[str, tuple[str, str]] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = (family.type, family.documentation)
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
    return samples, families


def family_name(metric: Any) -> str:
    """prometheus_client names a counter family without its `_total` suffix."""
    return metric.name.removesuffix("_total") if metric.type == "counter" else metric.name


def label_sets(samples: Samples, name: str) -> set[frozenset[tuple[str, str]]]:
    return {labels for n, labels in samples if n == name}


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def repo_bytes(root: Path) -> int:
    return sum(
        p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.name.endswith(".tmp-backupctl")
    )


def two_deployments(make_deployment: Any, sample_tree: Path) -> Any:
    """Deployment `app` (files) and `other` (the same tree), both in one local repository."""
    dep = make_deployment([{"type": "files", "paths": [str(sample_tree)]}])
    doc = helpers.load_yaml(dep.config)
    doc["deployments"]["other"] = {
        "sources": [{"type": "files", "paths": [str(sample_tree)]}],
        "destinations": ["local"],
    }
    helpers.dump_yaml(doc, dep.config)
    return dep


def test_textfile_metrics_match_the_backups_and_the_repository(
    make_deployment: Any, sample_tree: Path, tmp_path: Path
) -> None:
    dep = two_deployments(make_deployment, sample_tree)
    dep.create()
    failed = dep.run("backup", "create", "app", env={"BACKUPCTL_FAULTS": "fail=1,ops=put"})
    assert failed.returncode != 0, str(failed)
    (sample_tree / "new-file").write_text("more\n")
    newest = dep.show(dep.create())
    dep.ok("backup", "create", "other")
    assert sum(1 for r in dep.list() if r["status"] == "Failed") == 1

    out_dir = tmp_path / "textfile"
    out_dir.mkdir()
    target = out_dir / "backupctl.prom"
    before = time.time()
    dep.ok("metrics", "--textfile", target)
    after = time.time()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in out_dir.iterdir()) == ["backupctl.prom"]  # no temporary left
    samples, families = parse(target.read_text())

    # Every catalog metric is there with its HELP and TYPE.
    for metric in CATALOG:
        assert families.get(family_name(metric)) == (metric.type, metric.help), metric.name

    app = frozenset({("deployment", "app")})
    other = frozenset({("deployment", "other")})
    finished = ts(newest["finished"])
    assert samples[("backupctl_last_success_timestamp_seconds", app)] == finished
    assert samples[("backupctl_last_backup_duration_seconds", app)] == newest["duration_s"]
    assert samples[("backupctl_last_backup_size_bytes", app)] == newest["size_bytes"]
    assert samples[("backupctl_backup_failures_total", app)] == 1
    assert samples[("backupctl_backup_failures_total", other)] == 0
    rpo = samples[("backupctl_rpo_seconds", app)]
    assert before - finished - 0.01 <= rpo <= after - finished + 0.01, (rpo, before - finished)
    assert samples[("backupctl_repository_size_bytes", frozenset({("destination", "local")}))] == repo_bytes(
        dep.repository
    )
    assert samples[("backupctl_destination_up", frozenset({("destination", "local")}))] == 1
    copy = frozenset({("deployment", "app"), ("destination", "local")})
    assert samples[("backupctl_destination_last_backup_timestamp_seconds", copy)] == finished
    # The default policy runs every two hours at :00: the next run is the next even hour.
    nxt = samples[("backupctl_next_run_timestamp_seconds", app)]
    assert nxt > before and nxt % 7200 == 0 and nxt - before <= 7200
    for kind in PROBLEM_KINDS:
        assert samples[("backupctl_problems", app | {("kind", kind)})] == 0, kind
    # Labelled by deployment (and destination where it applies), nothing else.
    assert label_sets(samples, "backupctl_last_backup_size_bytes") == {app, other}
    assert label_sets(samples, "backupctl_backup_failures_total") == {app, other}
    assert label_sets(samples, "backupctl_repository_size_bytes") == {frozenset({("destination", "local")})}
    # No drill and no PITR archive: those metrics have no sample (never a made-up 0).
    for name in (
        "backupctl_last_drill_success_timestamp_seconds",
        "backupctl_last_drill_restore_seconds",
        "backupctl_pitr_archive_lag_seconds",
        "backupctl_pitr_window_end_timestamp_seconds",
    ):
        assert not label_sets(samples, name), name

    # Without --textfile: the same text on stdout; -o json: the same samples.
    shown, _ = parse(dep.ok("metrics").stdout)
    assert shown[("backupctl_last_backup_size_bytes", app)] == newest["size_bytes"]
    doc = {m["name"]: m for m in dep.ok("metrics", "-o", "json").json()}
    assert [m.name for m in CATALOG] == list(doc)
    size = doc["backupctl_last_backup_size_bytes"]["samples"]
    assert {"labels": {"deployment": "app"}, "value": newest["size_bytes"]} in size


def test_metrics_serve_answers_a_real_http_get(files_deployment: Any) -> None:
    dep = files_deployment
    backup = dep.show(dep.create())
    port = helpers_free_port()
    proc = subprocess.Popen(
        helpers.cli_command("metrics", "serve", "--listen", f"127.0.0.1:{port}", "--cache", "0s"),
        env=helpers.cli_env(dep.env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                    assert resp.status == 200
                    assert resp.headers["Content-Type"].startswith("text/plain")
                    body = resp.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert body, "metrics serve never answered"
        samples, families = parse(body)
        for metric in CATALOG:
            assert families.get(family_name(metric)) == (metric.type, metric.help), metric.name
        app = frozenset({("deployment", "app")})
        assert samples[("backupctl_last_backup_size_bytes", app)] == backup["size_bytes"]
        assert samples[("backupctl_last_success_timestamp_seconds", app)] == ts(backup["finished"])
        # Recomputed on scrape (--cache 0s): a new backup shows on the next GET.
        second = dep.show(dep.create())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            again, _ = parse(resp.read().decode())
        assert again[("backupctl_last_success_timestamp_seconds", app)] == ts(second["finished"])
        # A config broken while serving: that scrape fails with one line, the server stays up.
        good = dep.config.read_text()
        dep.config.write_text("deployments: [\n")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30)
            raise AssertionError("a scrape with a broken config succeeded")
        except urllib.error.HTTPError as exc:
            assert exc.code == 500
            body = exc.read().decode()
            assert body.startswith("error: ") and body.count("\n") == 1, body
        dep.config.write_text(good)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            assert resp.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"serving metrics on http://127.0.0.1:{port}/metrics" in err
    assert "Traceback" not in err


def helpers_free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_status_is_ok_for_a_fresh_backup_and_names_each_problem(
    make_deployment: Any, sample_tree: Path
) -> None:
    dep = make_deployment([{"type": "files", "paths": [str(sample_tree)]}])
    backup = dep.show(dep.create())
    result = dep.ok("status")
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "DEPLOYMENT", "LAST_BACKUP", "AGE", "NEXT_RUN", "LAST_DRILL", "RESTORE", "RPO", "PITR_UNTIL", "PROBLEMS"
    ]  # fmt: skip
    assert lines[1].startswith("app ") and lines[1].endswith(" OK"), result.stdout
    doc = dep.ok("status", "-o", "json").json()
    assert doc["ok"] is True
    assert list(doc) == ["generated", "ok", "deployments", "destinations"]
    (row,) = doc["deployments"]
    assert list(row) == [
        "deployment", "policy", "last_backup", "last_run", "failures", "failures_since_success", "next_run",
        "last_drill", "pitr", "newest_restorable", "rpo_s", "destinations", "problems",
    ]  # fmt: skip
    assert (
        row["last_backup"]["id"] == backup["id"] and row["last_backup"]["size_bytes"] == backup["size_bytes"]
    )
    assert row["newest_restorable"] == backup["finished"] and row["problems"] == []
    assert row["policy"] == "default" and row["next_run"] is not None

    # Never backed up: a second deployment in the same config.
    doc = helpers.load_yaml(dep.config)
    doc["deployments"]["fresh"] = {
        "sources": [{"type": "files", "paths": [str(sample_tree)]}],
        "destinations": ["local"],
    }
    helpers.dump_yaml(doc, dep.config)
    result = dep.run("status")
    assert result.returncode == PROBLEMS, str(result)
    assert "fresh: never_backed_up: no completed backup" in result.stdout
    assert [ln.split()[0] for ln in result.stdout.splitlines()[1:3]] == ["app", "fresh"]
    assert result.stdout.splitlines()[2].endswith(" never_backed_up")
    csv_lines = dep.run("status", "-f", "csv").stdout.splitlines()
    assert (
        csv_lines[0] == "deployment,last_backup,age_s,next_run,last_drill,restore_s,rpo_s,pitr_until,problems"
    )
    assert csv_lines[1].startswith(f"app,{backup['finished']},") and csv_lines[1].endswith(",OK")
    assert csv_lines[2].startswith("fresh,,,") and csv_lines[2].endswith(",never_backed_up")
    kinds = {
        d["deployment"]: [p["kind"] for p in d["problems"]]
        for d in dep.run("status", "-o", "json").json()["deployments"]
    }
    assert kinds == {"app": [], "fresh": ["never_backed_up"]}

    # The last run failed (a destination refusing every write).
    failed = dep.run("backup", "create", "app", env={"BACKUPCTL_FAULTS": "fail=1,ops=put"})
    assert failed.returncode != 0
    result = dep.run("status", "-o", "json")
    assert result.returncode == PROBLEMS, str(result)
    app = next(d for d in result.json()["deployments"] if d["deployment"] == "app")
    assert [p["kind"] for p in app["problems"]] == ["last_run_failed"], app
    assert app["failures"] == 1 and app["failures_since_success"] == 1
    assert app["last_run"]["status"] == "Failed" and app["last_backup"]["id"] == backup["id"]
    # A later success clears it (the failure stays counted).
    dep.create()
    app = next(d for d in dep.run("status", "-o", "json").json()["deployments"] if d["deployment"] == "app")
    assert app["problems"] == [] and app["failures"] == 1 and app["failures_since_success"] == 0


def test_status_overdue_when_the_policy_slot_passed_without_a_backup(
    make_deployment: Any, sample_tree: Path
) -> None:
    """A backup taken (by the engine's injectable clock) five hours ago under the default policy
    (every two hours at :00): at least one slot older than the one-hour grace has no backup."""
    from backupctl.policy.schedule import FakeClock

    dep = make_deployment([{"type": "files", "paths": [str(sample_tree)]}])
    five_hours_ago = datetime.now(UTC) - timedelta(hours=5)
    from backupctl.backups.service import Service
    from backupctl.config.loader import load_config

    service = Service(load_config(dep.config), clock=FakeClock(five_hours_ago))
    try:
        record = service.create_backup("app")
    finally:
        service.close()
    result = dep.run("status")
    assert result.returncode == PROBLEMS, str(result)
    assert result.stdout.splitlines()[1].endswith(" overdue"), result.stdout
    assert "app: overdue: no backup since the slot of" in result.stdout
    before = time.time()
    doc = dep.run("status", "-o", "json").json()
    after = time.time()
    (row,) = doc["deployments"]
    assert [p["kind"] for p in row["problems"]] == ["overdue"]
    assert row["last_backup"]["id"] == record["id"]
    end = ts(str(record["finished"]))  # the fake clock's time: five hours before the test started
    assert before - end - 0.01 <= row["rpo_s"] <= after - end + 0.01, (row["rpo_s"], before - end)
    # A generous grace: not overdue. The metrics say the same.
    assert dep.run("status", "--grace", "6h").returncode == 0
    samples, _ = parse(dep.ok("metrics").stdout)
    assert samples[("backupctl_problems", frozenset({("deployment", "app"), ("kind", "overdue")}))] == 1
    assert dep.ok("metrics", "--grace", "6h").stdout.count('kind="overdue"} 0') == 1
    # The grace of the overdue notification is the default.
    doc = helpers.load_yaml(dep.config)
    doc["notifications"] = {"overdue_grace": "6h"}
    helpers.dump_yaml(doc, dep.config)
    assert dep.run("status").returncode == 0
    assert dep.run("status", "--grace", "30m").returncode == PROBLEMS
    # A fresh backup clears it.
    doc["notifications"] = {"overdue_grace": "30m"}
    helpers.dump_yaml(doc, dep.config)
    dep.create()
    assert dep.run("status").returncode == 0


def test_status_names_a_failed_upload(make_deployment: Any, sample_tree: Path, tmp_path: Path) -> None:
    dep = make_deployment([{"type": "files", "paths": [str(sample_tree)]}])
    doc = helpers.load_yaml(dep.config)
    doc["destinations"]["offsite"] = {"type": "local", "path": str(tmp_path / "offsite")}
    doc["deployments"]["app"]["destinations"] = ["local", "offsite"]
    helpers.dump_yaml(doc, dep.config)
    created = dep.run("backup", "create", "app", env={"BACKUPCTL_FAULTS": "fail=1,dests=offsite"})
    assert created.returncode != 0, str(created)
    result = dep.run("status", "-o", "json")
    assert result.returncode == PROBLEMS, str(result)
    (row,) = result.json()["deployments"]
    assert [p["kind"] for p in row["problems"]] == ["upload_failed"], row
    assert "offsite" in row["problems"][0]["message"]
    copies = {c["destination"]: c for c in row["destinations"]}
    assert copies["local"]["last_backup_id"] == row["last_backup"]["id"]
    assert copies["offsite"]["last_backup_id"] is None and copies["offsite"]["upload_state"] == "failed"
    # Uploaded later: fixed, and the copy is seen in the offsite listing.
    dep.ok("backup", "upload", row["last_backup"]["id"])
    result = dep.ok("status", "-o", "json")
    (row,) = result.json()["deployments"]
    assert row["problems"] == []
    copies = {c["destination"]: c for c in row["destinations"]}
    assert copies["offsite"]["last_backup_id"] == row["last_backup"]["id"]
    samples, _ = parse(dep.ok("metrics").stdout)
    off = frozenset({("destination", "offsite")})
    assert samples[("backupctl_repository_size_bytes", off)] == repo_bytes(tmp_path / "offsite")
    assert samples[("backupctl_destination_up", off)] == 1

    # The offsite destination stops answering (every listing fails): named, and down in the metrics.
    down = {"BACKUPCTL_FAULTS": "fail=1,ops=list,dests=offsite"}
    result = dep.run("status", "-o", "json", env=down)
    assert result.returncode == PROBLEMS, str(result)
    (row,) = result.json()["deployments"]
    assert [p["kind"] for p in row["problems"]] == ["destination_unreachable"], row
    assert "offsite" in row["problems"][0]["message"]
    samples, _ = parse(dep.ok("metrics", env=down).stdout)
    assert samples[("backupctl_destination_up", off)] == 0
    assert ("backupctl_repository_size_bytes", off) not in samples
    assert samples[("backupctl_destination_up", frozenset({("destination", "local")}))] == 1


def test_bad_input_is_one_line_with_the_usage_exit_code(files_deployment: Any) -> None:
    dep = files_deployment
    helpers.assert_one_line_error(dep.run("status", "--grace", "soon"), 2, "--grace")
    helpers.assert_one_line_error(dep.run("metrics", "serve", "--listen", "nowhere"), 2, "--listen")
    result = dep.run("metrics", "--textfile", "/nonexistent-dir/x.prom")
    helpers.assert_one_line_error(result, 1, "/nonexistent-dir/x.prom")
    assert not os.path.exists("/nonexistent-dir")


def test_drills_show_in_metrics_and_a_failed_drill_is_a_problem(files_deployment: Any) -> None:
    dep = files_deployment
    dep.create()
    drill = dep.ok("backup", "drill", "app", "-o", "json").json()
    assert drill["passed"] is True
    app = frozenset({("deployment", "app")})
    samples, _ = parse(dep.ok("metrics").stdout)
    assert samples[("backupctl_last_drill_success_timestamp_seconds", app)] == ts(drill["started"])
    assert samples[("backupctl_last_drill_restore_seconds", app)] == drill["restore_seconds"]
    (row,) = dep.ok("status", "-o", "json").json()["deployments"]
    assert row["last_drill"] == {
        "id": drill["id"],
        "backup_id": drill["backup_id"],
        "started": drill["started"],
        "seconds": drill["seconds"],
        "restore_seconds": drill["restore_seconds"],
    }

    # A flipped byte in the stored data: the next drill fails; the last good drill stays.
    pack = max(
        (p for p in (dep.repository / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size
    )
    data = bytearray(pack.read_bytes())
    data[len(data) // 3] ^= 0x40
    pack.write_bytes(bytes(data))
    assert dep.run("backup", "drill", "app").returncode == 8
    result = dep.run("status")
    assert result.returncode == PROBLEMS, str(result)
    assert result.stdout.splitlines()[1].endswith(" drill_failed"), result.stdout
    assert "app: drill_failed: the last drill" in result.stdout
    samples, _ = parse(dep.ok("metrics").stdout)
    assert samples[("backupctl_problems", app | {("kind", "drill_failed")})] == 1
    assert samples[("backupctl_last_drill_success_timestamp_seconds", app)] == ts(drill["started"])


def test_pitr_window_end_archive_lag_and_rpo(pitr_pg: Any, tmp_path: Path) -> None:
    """PostgreSQL with WAL archived by backupctl: the window end is `pitr show`'s latest, the
    archive lag counts from the newest archived segment, RPO from the window end."""
    server, dep = pitr_pg
    server.psql("CREATE DATABASE mon")
    server.psql("CREATE TABLE t (id serial PRIMARY KEY)", "mon")
    dep.ok("pitr", "check", "app")
    backup = dep.ok("backup", "create", "app", "--type", "full", "-o", "json").json()
    server.psql("INSERT INTO t SELECT FROM generate_series(1, 10)", "mon")
    time.sleep(1.1)
    dep.ok("pitr", "check", "app")  # archives the segment holding the inserts
    window = dep.ok("pitr", "show", "app", "-o", "json").json()
    assert window["latest"] and window["latest"] > backup["finished"], window

    target = tmp_path / "pitr.prom"
    before = time.time()
    dep.ok("metrics", "--textfile", target)
    after = time.time()
    samples, _ = parse(target.read_text())
    app = frozenset({("deployment", "app")})
    end = ts(window["latest"])
    # `pitr show -o json` gives milliseconds; the metric keeps the window's microseconds.
    assert abs(samples[("backupctl_pitr_window_end_timestamp_seconds", app)] - end) < 0.001
    newest = max(p.stat().st_mtime for p in (dep.repository / "wal" / "app").rglob("*") if p.is_file())
    lag = samples[("backupctl_pitr_archive_lag_seconds", app)]
    assert before - newest - 0.01 <= lag <= after - newest + 0.01, (lag, before - newest)
    rpo = samples[("backupctl_rpo_seconds", app)]
    assert before - end - 0.01 <= rpo <= after - end + 0.01, (rpo, before - end)
    assert samples[("backupctl_last_success_timestamp_seconds", app)] == ts(backup["finished"])

    result = dep.ok("status", "-o", "json")
    (row,) = result.json()["deployments"]
    assert row["pitr"]["family"] == "postgres" and row["pitr"]["gaps"] == 0
    assert abs(ts(row["pitr"]["window_end"]) - end) < 0.001
    assert row["newest_restorable"] == row["pitr"]["window_end"]
    assert row["problems"] == []


def test_missed_slot_for_cron_interval_paused_and_new_policies() -> None:
    """The overdue rule itself (pure logic, an explicit `now`)."""
    from backupctl.policy.models import Policy
    from backupctl.policy.overdue import missed_slot

    now = datetime(2026, 12, 3, 21, 30, tzinfo=UTC)
    grace = timedelta(hours=1)
    daily = Policy.model_validate({"schedules": [{"daily": {"at": "05:00"}}]})
    slot = datetime(2026, 12, 3, 5, 0, tzinfo=UTC)
    assert missed_slot(daily, slot - timedelta(minutes=1), now, grace) == slot
    assert missed_slot(daily, slot + timedelta(seconds=3), now, grace) is None
    # Within the grace after the slot: not yet overdue.
    assert missed_slot(daily, slot - timedelta(days=1), slot + timedelta(minutes=59), grace) is None
    assert missed_slot(daily, slot - timedelta(days=1), slot + timedelta(minutes=61), grace) == slot
    # A policy created after the last slot owes nothing yet.
    created = Policy.model_validate(
        {"schedules": [{"daily": {"at": "05:00"}}], "created": "2026-12-03T06:00:00Z"}
    )
    assert missed_slot(created, None, now, grace) is None
    paused = Policy.model_validate({"schedules": [{"daily": {"at": "05:00"}}], "status": "paused"})
    assert missed_slot(paused, slot - timedelta(days=3), now, grace) is None
    # interval: the last success plus the interval plus the grace.
    every6h = Policy.model_validate({"schedules": [{"interval": "6h"}]})
    last = now - timedelta(hours=7, minutes=1)
    assert missed_slot(every6h, last, now, grace) == last + timedelta(hours=6)
    assert missed_slot(every6h, now - timedelta(hours=6, minutes=59), now, grace) is None
    # One rule for status and the notification (policy/overdue.py): a policy created after the
    # slot does not owe it, even with an older backup on record; `first_seen` (when this host
    # first looked) excuses only a deployment that never completed a backup.
    assert missed_slot(created, slot - timedelta(days=2), now, grace) is None
    assert missed_slot(daily, slot - timedelta(days=2), now, grace, first_seen=now) == slot
    assert missed_slot(daily, None, now, grace, first_seen=now - timedelta(minutes=5)) is None
    assert missed_slot(daily, None, now, grace, first_seen=slot - timedelta(days=1)) == slot


def test_status_upload_pending_after_the_grace(
    make_deployment: Any, sample_tree: Path, tmp_path: Path
) -> None:
    """`upload: false`: the backup waits for `backup upload`; once it is older than the grace
    and still not on the other destination, that is a problem (`policy: none`: never overdue)."""
    dep = make_deployment([{"type": "files", "paths": [str(sample_tree)]}])
    doc = helpers.load_yaml(dep.config)
    doc["destinations"]["offsite"] = {"type": "local", "path": str(tmp_path / "offsite")}
    doc["deployments"]["app"].update(destinations=["local", "offsite"], upload=False, policy="none")
    helpers.dump_yaml(doc, dep.config)
    fresh = dep.create()
    (row,) = dep.ok("status", "-o", "json").json()["deployments"]
    assert row["problems"] == [] and row["next_run"] is None and row["policy"] is None
    assert {c["destination"]: c["upload_state"] for c in row["destinations"]} == {
        "local": "stored",
        "offsite": "not uploaded",
    }

    time.sleep(1.1)  # older than a one-second grace
    result = dep.run("status", "--grace", "1s", "-o", "json")
    assert result.returncode == PROBLEMS, str(result)
    (row,) = result.json()["deployments"]
    assert [p["kind"] for p in row["problems"]] == ["upload_pending"]
    assert f"backupctl backup upload {fresh[:8]}" in row["problems"][0]["message"]
    dep.ok("backup", "upload", fresh)
    assert dep.run("status", "--grace", "1s").returncode == 0

    # The offsite disk unmounted (its directory gone, as under an empty mount point): the copy
    # recorded as uploaded is not there, which status says instead of "reachable, fine".
    (tmp_path / "offsite").rename(tmp_path / "unmounted")
    result = dep.run("status", "--grace", "1s", "-o", "json")
    assert result.returncode == PROBLEMS, str(result)
    (row,) = result.json()["deployments"]
    assert [p["kind"] for p in row["problems"]] == ["copy_missing"], row["problems"]
    assert {c["destination"]: c["upload_state"] for c in row["destinations"]}["offsite"] == "missing"
    metrics = dep.ok("metrics").stdout
    assert 'backupctl_problems{deployment="app",kind="copy_missing"} 1' in metrics, metrics
    dep.ok("backup", "upload", fresh, "--destination", "offsite")
    assert dep.run("status", "--grace", "1s").returncode == 0


def test_metrics_serve_stops_on_sigterm_during_scrapes(files_deployment: Any) -> None:
    """SIGTERM while a scrape is being answered: wsgiref swallowed the KeyboardInterrupt the
    signal used to raise (a traceback, then serving on: 8 of 10 runs hung). It must exit 0."""
    import threading

    dep = files_deployment
    dep.create()
    for attempt in range(4):
        port = helpers_free_port()
        proc = subprocess.Popen(
            helpers.cli_command("metrics", "serve", "--listen", f"127.0.0.1:{port}", "--cache", "0s"),
            env=helpers.cli_env(dep.env), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url, timeout=10).read()
                break
            except OSError:
                time.sleep(0.1)

        def scrape(url: str = url) -> None:
            for _ in range(100):
                try:
                    urllib.request.urlopen(url, timeout=10).read()
                except Exception:
                    return

        threading.Thread(target=scrape, daemon=True).start()
        time.sleep(0.05 + attempt * 0.04)
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(
                f"metrics serve kept running after SIGTERM: {proc.communicate()[1]}"
            ) from None
        assert proc.returncode == 0 and "Traceback" not in err, err


def test_mariadb_archive_lag_window_end_and_rpo(fresh_mariadb_server: Any, make_deployment: Any) -> None:
    """MariaDB with binary logs archived by `binlog sync`: the lag counts from the newest
    archived binary log object, the window end is `pitr show`'s latest, RPO from it."""
    import uuid

    server = fresh_mariadb_server
    dep = make_deployment([server.options(method="mariabackup")])
    db = f"lag_{uuid.uuid4().hex[:8]}"
    server.root_sql(
        f"CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT AUTO_INCREMENT PRIMARY KEY) ENGINE=InnoDB"
    )
    backup = dep.ok("backup", "create", "app", "--type", "full", "-o", "json").json()
    server.root_sql(f"INSERT INTO {db}.t VALUES (), (), ()")
    time.sleep(1.1)
    dep.ok("binlog", "sync", "app", "--flush")  # closes and archives the log holding the inserts
    window = dep.ok("pitr", "show", "app", "-o", "json").json()
    assert window["latest"] and window["latest"] > backup["finished"], window

    before = time.time()
    samples, _ = parse(dep.ok("metrics").stdout)
    after = time.time()
    app = frozenset({("deployment", "app")})
    archived = [p for p in (dep.repository / "binlog" / "app").rglob("*") if p.is_file()]
    newest = max(p.stat().st_mtime for p in archived)
    lag = samples[("backupctl_pitr_archive_lag_seconds", app)]
    assert before - newest - 0.01 <= lag <= after - newest + 0.01, (lag, before - newest)
    end = ts(window["latest"])
    assert abs(samples[("backupctl_pitr_window_end_timestamp_seconds", app)] - end) < 0.001
    rpo = samples[("backupctl_rpo_seconds", app)]
    assert before - end - 0.01 <= rpo <= after - end + 0.01, (rpo, before - end)

    (row,) = dep.ok("status", "-o", "json").json()["deployments"]
    assert row["pitr"]["family"] == "mariadb" and row["pitr"]["gaps"] == 0, row["pitr"]
    assert abs(ts(row["pitr"]["window_end"]) - end) < 0.001
    assert row["newest_restorable"] == row["pitr"]["window_end"] and row["problems"] == []
