"""Output like the OpenStack CLI (issue 15 items 1 and 2), run through the real CLI against a
real local repository: every format parses and says what the table says; -c picks columns,
--sort-column orders, an unknown column is one line naming the columns that exist (exit 2);
tables fit 80 and 100 columns without cutting IDs or status (in a pipe with --fit-width,
and on a pseudo-terminal); documents are complete unless --limit; backup list's filters;
local time with the zone in tables, --utc, schedules in their own zone.
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import pytest
from ruamel.yaml import YAML

from backupctl.errors import ExitCode

BERLIN = {"TZ": "Europe/Berlin"}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


POLICY = ("policy", "create", "nightly", "--daily-at", "03:30", "--timezone", "Europe/Berlin",
          "--keep-daily", "7", "--deployment", "app")  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One repository for the read-only tests of this module: 25 backups of `app` (5 full, then
    20 incremental; one with a comment that needs CSV quoting) and the policy `nightly`
    (03:30 Europe/Berlin) on `app`. Its own XDG world, as conftest.isolated_env gives a test."""
    from conftest import Deployment

    class World(Deployment):
        ids: list[str]  # the backups' IDs, oldest first

    root = tmp_path_factory.mktemp("output-format")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
            (root / var).mkdir()
            mp.setenv(var, str(root / var))
        mp.delenv("BACKUPCTL_CONFIG", raising=False)
        tree = helpers.make_sample_tree(root / "src")
        (root / "deploy").mkdir()
        dep = World(root / "deploy", [{"type": "files", "paths": [str(tree)]}])
        svc = helpers.service(dep.config)
        dep.ids = []
        for i in range(25):
            kind = "full" if i < 5 else "incremental"
            comment = 'say "hi", then go' if i == 7 else ""
            dep.ids.append(svc.create_backup("app", type=kind, comment=comment)["id"])
        svc.close()
        dep.ok(*POLICY)
        yield dep


def _json(dep: Any, *args: str, env: dict[str, str] | None = None) -> Any:
    return dep.ok(*args, "-f", "json", env=env or {}).json()


def test_documents_are_complete_and_every_format_says_what_the_table_says(world: Any) -> None:
    dep = world
    listed = _json(dep, "backup", "list")
    assert [r["id"] for r in listed] == dep.ids[::-1], "all 25, newest first (no silent limit)"
    assert len(_json(dep, "backup", "list", "--limit", "3")) == 3

    # The table (in a pipe) keeps its default of 20 rows and says how many more exist.
    table = dep.ok("backup", "list")
    header, *rows = table.stdout.splitlines()
    assert header.split()[:5] == ["ID", "DEPLOYMENT", "METHOD", "TYPE", "STATUS"], str(table)
    assert [r.split()[0] for r in rows] == dep.ids[::-1][:20], str(table)
    assert "5 more" in table.stderr, str(table)
    table_status = {r.split()[0]: r.split()[4] for r in rows}

    # value: values only, one record per line, the table's columns in order.
    value = dep.ok("backup", "list", "-f", "value").stdout.splitlines()
    assert [ln.split(" ")[0] for ln in value] == dep.ids[::-1]
    assert [ln.split(" ")[1:6] for ln in value] == [
        [r["deployment"], r["method"], r["type"], r["status"], r["started"]] for r in listed
    ]
    picked = dep.ok("backup", "list", "-f", "value", "-c", "id", "-c", "status").stdout
    assert picked == "".join(f"{r['id']} {r['status']}\n" for r in listed)
    for backup_id, status in table_status.items():
        assert f"{backup_id} {status}\n" in picked

    # csv: RFC 4180 (CRLF, quotes doubled), a header of keys, the same values as JSON.
    raw = subprocess.run(  # bytes: text mode would turn CRLF into LF
        helpers.cli_command("backup", "list", "-f", "csv"), env=helpers.cli_env(dep.env), capture_output=True
    ).stdout.decode()
    assert raw.startswith("id,deployment,method,type,status,started,")
    assert raw.count("\r\n") == 26 and "\n" not in raw.replace("\r\n", "")
    assert '"say ""hi"", then go"' in raw
    parsed = list(csv.DictReader(io.StringIO(raw, newline="")))
    assert [r["id"] for r in parsed] == [r["id"] for r in listed]
    assert [(r["status"], r["type"], r["started"], r["comment"]) for r in parsed] == [
        (r["status"], r["type"], r["started"], r["comment"]) for r in listed
    ]
    assert int(parsed[0]["size_bytes"]) == listed[0]["size_bytes"]

    # yaml: the same document as JSON.
    as_yaml = YAML(typ="safe", pure=True).load(dep.ok("backup", "list", "-f", "yaml").stdout)
    assert as_yaml == listed

    # -o stays an alias of -f, before or after the command.
    assert dep.ok("-o", "json", "backup", "list").json() == listed
    assert dep.ok("backup", "list", "--output=json").json() == listed

    # A single record: -c keeps those keys, in every format.
    one = dep.ok("backup", "show", dep.ids[0], "-f", "json", "-c", "id", "-c", "Status").json()
    assert one == {"id": dep.ids[0], "status": "Completed"}
    assert dep.ok("backup", "show", dep.ids[0], "-f", "value", "-c", "status").stdout == "Completed\n"
    shown = dep.ok("backup", "show", dep.ids[0], "-c", "Status", "-c", "Deployment").stdout
    assert shown.split() == ["Status", "Completed", "Deployment", "app"]


def test_columns_sorting_and_unknown_column(world: Any) -> None:
    dep = world
    table = dep.ok("backup", "list", "-c", "ID", "-c", "status", "-c", "comment", "--all")
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "COMMENT"], str(table)
    assert len(rows) == 25 and rows[17].split()[:2] == [dep.ids[7], "Completed"], str(table)
    assert rows[17].split(None, 2)[2] == 'say "hi", then go'

    asc = _json(dep, "backup", "list", "--sort-column", "started", "--sort-ascending")
    assert [r["id"] for r in asc] == dep.ids
    by_type = _json(
        dep, "backup", "list", "--sort-column", "type", "--sort-descending", "-c", "id", "-c", "type"
    )
    assert [r["type"] for r in by_type] == ["incremental"] * 20 + ["full"] * 5
    assert set(by_type[0]) == {"id", "type"}
    value = dep.ok("backup", "list", "--sort-column", "Started", "-f", "value", "-c", "id").stdout
    assert value.split() == dep.ids
    table = dep.ok("backup", "list", "--sort-column", "started", "--all").stdout.splitlines()
    assert [r.split()[0] for r in table[1:]] == dep.ids
    # Sorted before --limit: the two oldest, not the oldest two of the newest 20.
    oldest = dep.ok("backup", "list", "--sort-column", "started", "--limit", "2", "-f", "value", "-c", "id")
    assert oldest.stdout.split() == dep.ids[:2]
    assert "more; use --all" not in oldest.stderr  # --limit asked for the cut
    # Keys that `backup list` adds (drills, the PITR window) sort like the others.
    for key in ("verified_at", "drill_passed", "recoverable_until", "Verified"):
        by_key = dep.ok("backup", "list", "--sort-column", key, "-f", "value", "-c", "id", "--all")
        assert sorted(by_key.stdout.split()) == sorted(dep.ids), key
    # Details (`show`) take a label or any key of the record.
    shown = dep.ok("backup", "show", dep.ids[7], "-c", "Comment", "-c", "repository_id").stdout
    assert shown.split(None, 1)[1].splitlines()[0].strip() == 'say "hi", then go', shown
    assert shown.splitlines()[1].split()[0] == "repository_id", shown
    assert re.fullmatch(r"[0-9a-f]{32}", shown.splitlines()[1].split()[1]), shown

    for args in (["-c", "nosuch"], ["--sort-column", "nosuch"], ["-f", "csv", "-c", "id", "-c", "nosuch"]):
        bad = dep.run("backup", "list", *args)
        helpers.assert_one_line_error(bad, ExitCode.USAGE, "nosuch", "id, short_id, deployment", "started")
        assert bad.stdout == ""
    # Click's own usage errors too (a bad option value, an unknown option, a missing argument).
    for args in (["backup", "list", "--type", "bogus"], ["backup", "list", "--nosuch"], ["backup", "show"]):
        bad = dep.run("-f", "json", *args)
        assert bad.returncode == ExitCode.USAGE and bad.stdout == "", str(bad)
        error = json.loads(bad.stderr)["error"]
        assert error["kind"] == "usage" and error["exit_code"] == 2 and error["message"], error
        assert error["hint"] == f"see `backupctl {args[0]} {args[1]} --help`", error
    bad = dep.run("nosuchcmd", "-f", "json")  # before the root's callback ran
    assert bad.returncode == ExitCode.USAGE and json.loads(bad.stderr)["error"]["kind"] == "usage", str(bad)
    bad = dep.run("backup", "list", "-f", "json", "-c", "nosuch")  # JSON mode: the error as JSON
    assert bad.returncode == ExitCode.USAGE and bad.stdout == "" and len(bad.stderr.splitlines()) == 1
    error = json.loads(bad.stderr)["error"]
    assert error["exit_code"] == ExitCode.USAGE and "the columns are: id, short_id" in error["message"]
    bad_format = dep.run("backup", "list", "-f", "xml")
    assert bad_format.returncode == ExitCode.USAGE and "Traceback" not in bad_format.stderr
    assert "table, json, yaml, value, csv" in bad_format.stderr


def test_backup_list_filters(world: Any) -> None:
    dep = world
    listed = _json(dep, "backup", "list")
    started = {r["id"]: r["started"] for r in listed}
    ids = dep.ids

    assert [r["id"] for r in _json(dep, "backup", "list", "--type", "full")] == ids[:5][::-1]
    assert len(_json(dep, "backup", "list", "--type", "incremental")) == 20
    assert len(_json(dep, "backup", "list", "--status", "completed")) == 25
    assert _json(dep, "backup", "list", "--status", "Failed") == []
    assert len(_json(dep, "backup", "list", "--created-by", "manual")) == 25
    assert _json(dep, "backup", "list", "--created-by", "nightly") == []

    since = [r["id"] for r in _json(dep, "backup", "list", "--since", started[ids[10]])]
    assert since == ids[10:][::-1]
    until = [r["id"] for r in _json(dep, "backup", "list", "--until", started[ids[10]])]
    assert until == ids[:10][::-1]
    window = _json(
        dep, "backup", "list", "--since", started[ids[3]], "--until", started[ids[6]], "--type", "full"
    )
    assert [r["id"] for r in window] == [ids[4], ids[3]]
    assert len(_json(dep, "backup", "list", "--since", "1h")) == 25
    assert _json(dep, "backup", "list", "--until", "1h") == []
    tomorrow = (dt.date.today() + dt.timedelta(days=2)).isoformat()
    assert _json(dep, "backup", "list", "--since", tomorrow) == []
    assert len(_json(dep, "backup", "list", "--until", tomorrow, "--limit", "4")) == 4

    bad = dep.run("backup", "list", "--since", "last tuesday")
    assert bad.returncode == ExitCode.USAGE and "7d" in bad.stderr and "Traceback" not in bad.stderr
    bad = dep.run("backup", "list", "--type", "differential")
    assert bad.returncode == ExitCode.USAGE and "full or incremental" in bad.stderr
    # A typo in a status is a usage error, not an empty list; so is an age beyond the calendar
    # (was "internal error: OverflowError") and a limit below one.
    bad = dep.run("backup", "list", "--status", "Complete")
    assert bad.returncode == ExitCode.USAGE and "Queued, Running, Completed or Failed" in bad.stderr
    bad = dep.run("backup", "list", "--since", "99999999d")
    assert (
        bad.returncode == ExitCode.USAGE
        and "before the year 1" in bad.stderr
        and "internal" not in bad.stderr
    )
    assert dep.run("backup", "list", "-n", "-1").returncode == ExitCode.USAGE
    assert len(_json(dep, "backup", "list", "--status", "completed", "-n", "2")) == 2


def test_a_failed_backup_is_found_by_status(files_deployment: Any, sample_tree: Path) -> None:
    dep = files_deployment
    good = dep.create()
    os.rename(sample_tree, sample_tree.with_name("gone"))
    dep.run("backup", "create", "app")
    failed = _json(dep, "backup", "list", "--status", "Failed")
    assert len(failed) == 1 and failed[0]["id"] != good and failed[0]["status"] == "Failed"
    assert [r["id"] for r in _json(dep, "backup", "list", "--status", "Completed")] == [good]


def _check_fits(stdout: str, width: int, ids: list[str]) -> list[str]:
    lines = [ANSI.sub("", ln).rstrip() for ln in stdout.replace("\r\n", "\n").splitlines() if ln.strip()]
    assert lines, stdout
    assert all(len(ln) <= width for ln in lines), "\n".join(lines)
    for backup_id in ids:
        assert any(ln.split()[0] == backup_id for ln in lines[1:]), (backup_id, lines)
    assert all("Completed" in ln.split() for ln in lines[1:]), lines
    assert "…" not in stdout and "Complet " not in stdout
    return lines


@pytest.mark.parametrize("width", [80, 100])
def test_tables_fit_without_cutting_ids_or_status_in_a_pipe(world: Any, width: int) -> None:
    dep = world
    env = {"COLUMNS": str(width), **BERLIN}
    fitted = dep.ok("backup", "list", "--fit-width", env=env)
    lines = _check_fits(fitted.stdout, width, dep.ids[::-1][:20])
    header = lines[0].split()
    assert header[:2] == ["ID", "DEPLOYMENT"] and "STATUS" in header and "STARTED" in header
    assert "not shown for the width" in fitted.stderr, str(fitted)  # it names what it dropped
    # The started time is whole: date, time and the zone.
    assert re.search(r"Completed +\d{4}-\d\d-\d\d \d\d:\d\d CET", lines[1]), lines[1]
    # --max-width does the same without --fit-width; --wide shows every column.
    assert dep.ok("backup", "list", "--max-width", str(width), env=env).stdout == fitted.stdout
    wide = dep.ok("backup", "list", "--fit-width", "--wide", env=env).stdout.splitlines()
    assert {"EXPIRES", "CREATED_BY", "COMMENT"} <= set(wide[0].split())
    # Without fitting (a pipe), every default column.
    plain = dep.ok("backup", "list", env=env).stdout.splitlines()
    assert plain[0].split()[:9] == [
        "ID",
        "DEPLOYMENT",
        "METHOD",
        "TYPE",
        "STATUS",
        "STARTED",
        "DURATION",
        "SIZE",
        "EXPIRES",
    ]


def _run_in_pty(dep: Any, width: int, *args: str, env: dict[str, str] | None = None) -> str:
    """`backupctl ARGS` with stdout on a pseudo-terminal `width` columns wide."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, width, 0, 0))
    full_env = helpers.cli_env({**dep.env, "COLUMNS": str(width), "TERM": "xterm", **(env or {})})
    proc = subprocess.Popen(
        helpers.cli_command(*args),
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=full_env,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return b"".join(chunks).decode()


@pytest.mark.parametrize("width", [80, 100])
def test_tables_fit_on_a_terminal(world: Any, width: int) -> None:
    dep = world
    out = _run_in_pty(dep, width, "backup", "list", env=BERLIN)
    lines = _check_fits(out, width, dep.ids[::-1][:20])
    assert lines[0].split()[:2] == ["ID", "Deployment"], lines[0]
    if width == 100:
        assert "Type" in lines[0].split(), lines[0]

    for command in (["policy", "list"], ["schedule", "list"], ["destination", "list"]):
        text = ANSI.sub("", _run_in_pty(dep, width, *command, env=BERLIN))
        rows = [ln.rstrip() for ln in text.replace("\r\n", "\n").splitlines() if ln.strip()]
        assert all(len(ln) <= width for ln in rows), (command, text)
        first = {ln.split()[0] for ln in rows[1:]}
        assert {"policy": {"nightly"}, "schedule": {"app"}, "destination": {"local"}}[command[0]] <= first, (
            text
        )
        if command[0] == "policy":
            assert any("nightly" in ln and "Active" in ln.split() for ln in rows), text


def test_times_in_tables_are_local_with_the_zone_or_utc(world: Any) -> None:
    dep = world
    newest = _json(dep, "backup", "list", "--limit", "1")[0]
    t = dt.datetime.fromisoformat(newest["started"].replace("Z", "+00:00"))
    from zoneinfo import ZoneInfo

    local = t.astimezone(ZoneInfo("Europe/Berlin"))
    berlin = dep.ok("backup", "list", "--limit", "1", env=BERLIN).stdout
    assert f"{local:%Y-%m-%d %H:%M} CET" in berlin, berlin
    utc = dep.ok("backup", "list", "--limit", "1", "--utc", env=BERLIN).stdout
    assert f"{t:%Y-%m-%d %H:%M} UTC" in utc and "CET" not in utc, utc
    shown = dep.ok("backup", "show", newest["id"], env={"TZ": "America/New_York"}).stdout
    assert f"{t.astimezone(ZoneInfo('America/New_York')):%Y-%m-%d %H:%M} EST" in shown, shown


def test_schedules_show_their_next_run_in_their_zone_and_local_time(files_deployment: Any) -> None:
    dep = files_deployment
    dep.ok(*POLICY)
    ny = {"TZ": "America/New_York"}
    shown = dep.ok("policy", "show", "nightly", env=ny).stdout
    runs = [ln for ln in shown.splitlines() if "(Europe/Berlin)" in ln]
    assert len(runs) == 5, shown
    for line in runs:  # 03:30 in Berlin is 21:30 the evening before in New York (winter)
        assert re.search(r"\d{4}-\d\d-\d\d 03:30 CET \(Europe/Berlin\), \d{4}-\d\d-\d\d 21:30 EST", line), (
            line
        )
    listed = dep.ok("schedule", "list", env=ny)
    header, *rows = listed.stdout.splitlines()
    at = header.index("IN_ITS_ZONE")
    (row,) = [r for r in rows if r.startswith("app")]
    assert re.match(r"\d{4}-\d\d-\d\d 03:30 Europe/Berlin", row[at:]), listed.stdout
    assert re.search(r"\d{4}-\d\d-\d\d 21:30 EST", row), listed.stdout
    doc = _json(dep, "schedule", "list")
    assert doc[0]["timezone"] == "Europe/Berlin" and doc[0]["next_run"].endswith(":30:00.000Z"), doc


MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
ANY_TIME = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d")


def _times(doc: Any) -> list[str]:
    if isinstance(doc, dict):
        return [t for v in doc.values() for t in _times(v)]
    if isinstance(doc, list):
        return [t for v in doc for t in _times(v)]
    return [doc] if isinstance(doc, str) and ANY_TIME.match(doc) else []


def test_every_json_time_has_one_precision(files_deployment: Any) -> None:
    """UTC, milliseconds, `Z`: backups, policies, schedules, the repository, browsing."""
    dep = files_deployment
    dep.ids = [dep.create(), dep.create()]
    dep.ok(*POLICY)
    seen: list[str] = []
    for args in (
        ["backup", "list"],
        ["backup", "show", dep.ids[-1]],
        ["backup", "ls", dep.ids[-1]],
        ["backup", "create", "app"],
        ["policy", "list"],
        ["policy", "show", "nightly"],
        ["schedule", "list"],
        ["backup", "prune", "--dry-run"],
    ):
        found = _times(_json(dep, *args))
        assert found, args
        assert all(MS.match(t) for t in found), (args, [t for t in found if not MS.match(t)])
        seen += found
    # YAML and CSV carry the same text.
    assert all(
        MS.match(t)
        for t in _times(
            YAML(typ="safe", pure=True).load(dep.ok("policy", "show", "nightly", "-f", "yaml").stdout)
        )
    )
    assert len(seen) > 20


def test_global_options_anywhere_and_command_formats_stay(world: Any) -> None:
    from backupctl.cli.globalopts import hoist_global_options

    assert hoist_global_options(["backup", "list", "-fjson", "-cid", "--sort-column", "started", "--utc"]) == [
        "-fjson", "-cid", "--sort-column", "started", "--utc", "backup", "list",
    ]  # fmt: skip
    # `schedule export --format systemd` keeps its own option; `-f json` there is the global one.
    assert hoist_global_options(["schedule", "export", "--format", "systemd", "-f", "json"]) == [
        "-f", "json", "schedule", "export", "--format", "systemd",
    ]  # fmt: skip
    assert hoist_global_options(["schedule", "export", "-fkubernetes"]) == [
        "schedule",
        "export",
        "-fkubernetes",
    ]
    # A bundle of global flags only is split; one with a command's flag is the command's.
    assert hoist_global_options(["backup", "list", "-vq"]) == ["-v", "-q", "backup", "list"]
    assert hoist_global_options(["backup", "prune", "-yq"]) == ["backup", "prune", "-yq"]
    quiet = world.ok("backup", "list", "-qv", "-f", "value", "-c", "id", "--limit", "2")
    assert quiet.stdout.split() == world.ids[::-1][:2]
    ids = world.ok("backup", "list", "-fvalue", "-cid", "--limit", "3").stdout.split()
    assert ids == world.ids[::-1][:3]
    exported = world.ok("schedule", "export", "--format", "crontab", "-f", "json").json()
    assert exported["format"] == "crontab" and "schedule run-due" in exported["text"], exported


def test_help_lists_the_global_options_and_the_exit_codes() -> None:
    """Every command's --help names the global options; `backupctl --help` has every exit code."""
    import re

    from backupctl.errors import ExitCode

    for args in (["backup", "list"], ["backup"], ["status"], ["backup", "clone"], ["schedule", "export"]):
        shown = " ".join(helpers.run_ok(*args, "--help").stdout.split())
        assert "Global options" in shown and "--sort-column NAME" in shown and "--utc" in shown, args
    # -o is the format everywhere (as in the OpenStack CLI); a file name there points to -O.
    wrong = helpers.run_cli("backup", "download", "1a2b3c4d", "-o", "shop.tar")
    assert wrong.returncode == 2 and "-O/--out FILE" in wrong.stderr, str(wrong)
    top = helpers.run_ok("--help").stdout
    codes = {int(n) for n in re.findall(r"\b(\d+) [a-z]", top.split("Exit codes:", 1)[1])}
    expected = {v for k, v in vars(ExitCode).items() if k.isupper()}
    assert codes == expected, (codes, expected)


def test_value_output_keeps_one_record_per_line(files_deployment: Any) -> None:
    """-f value: a comment with a line break stays on its record's line (as \\n)."""
    dep = files_deployment
    backup = dep.create("--comment", "first line\nsecond line")
    out = dep.ok("backup", "list", "-f", "value", "-c", "id", "-c", "comment").stdout
    assert out == f"{backup} first line\\nsecond line\n", repr(out)
    assert dep.show(backup)["comment"] == "first line\nsecond line"  # JSON keeps the value as it is
