"""`backupctl policy ...` through the real CLI, on a hand-written config file with comments."""

from __future__ import annotations

import datetime as dt
import os
import select
import subprocess
import sys
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import helpers
import pytest
from ruamel.yaml import YAML

from backupctl.repo.crypto import generate_key_file

CONFIG = """\
# My backups. Hand-written; comments must survive `backupctl policy ...`.

destinations:
  local:   # the only one
    type: local
    path: {repo}

deployments:
  # The app's uploads.
  app:
    sources:
      - type: files
        paths: [{src}]
    destinations: [local]
    policy: nightly   # see below

  other:
    sources:
      - {{type: files, paths: [{src}]}}
    destinations: [local]
    policy: none


policies:
  # Nightly full backups, Berlin time.
  nightly:
    schedules:
      - type: full
        daily: {{at: "21:00"}}
        timezone: Europe/Berlin
    retention:
      keep_daily: 14   # two weeks

  # Weekly, unused; keep this comment.
  weekly:
    schedules:
      - cron: "0 3 * * sun"
    status: active

encryption:
  key_file: {key}     # keep a copy elsewhere
"""


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.src = root / "src"
        self.src.mkdir()
        (self.src / "a.txt").write_text("hello\n")
        key = root / "repo.key"
        generate_key_file(key)
        self.config = root / "config.yaml"
        self.config.write_text(CONFIG.format(repo=root / "repo", src=self.src, key=key))
        self.env = {"BACKUPCTL_CONFIG": str(self.config)}

    def run(self, *args: Any, **kwargs: Any) -> helpers.CliResult:
        return helpers.run_cli(*args, env={**self.env, **kwargs.pop("env", {})}, **kwargs)

    def ok(self, *args: Any, **kwargs: Any) -> helpers.CliResult:
        return helpers.run_ok(*args, env={**self.env, **kwargs.pop("env", {})}, **kwargs)

    def rows(self) -> dict[str, dict[str, Any]]:
        return {r["name"]: r for r in self.ok("policy", "list", "-o", "json").json()}

    def policies(self) -> dict[str, Any]:
        return helpers.load_yaml(self.config)["policies"]


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def _time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_list_shows_file_policies_with_recurrence_and_next_run(world: World) -> None:
    rows = world.rows()
    assert set(rows) == {"nightly", "weekly"}  # built-in default unused: every deployment names a policy
    nightly = rows["nightly"]
    assert nightly["recurrence"] == ["TZ=Europe/Berlin 0 21 * * *"]
    assert nightly["deployments"] == ["app"]
    assert nightly["types"] == ["full"]
    assert nightly["status"] == "Active"
    assert nightly["last_full"] is None and nightly["last_incremental"] is None
    nxt = _time(nightly["next_run"]).astimezone(ZoneInfo("Europe/Berlin"))
    assert (nxt.hour, nxt.minute) == (21, 0)
    assert _time(nightly["next_run"]) > dt.datetime.now(dt.UTC)
    assert set(nightly) >= {
        "name", "deployments", "types", "status", "created", "recurrence",
        "next_run", "last_full", "last_incremental",
    }  # fmt: skip
    assert rows["weekly"]["recurrence"] == ["TZ=UTC 0 3 * * sun"]

    table = world.ok("policy", "list").stdout
    assert "TZ=Europe/Berlin 0 21 * * *" in table and "NEXT_RUN" in table and "LAST_INCREMENTAL" in table
    as_yaml = YAML(typ="safe", pure=True).load(world.ok("policy", "list", "-o", "yaml").stdout)
    assert [r["name"] for r in as_yaml] == ["nightly", "weekly"]


def test_default_policy_listed_when_a_deployment_uses_it(world: World) -> None:
    text = world.config.read_text().replace("    policy: none\n", "")
    world.config.write_text(text)
    rows = world.rows()
    assert rows["default"]["deployments"] == ["other"]
    assert rows["default"]["recurrence"] == ["TZ=UTC 0 */2 * * *"]


def test_create_then_list(world: World) -> None:
    before = world.config.read_text()
    result = world.ok(
        "policy", "create", "hourly", "--hourly", "2", "--minute", "15", "--type", "incremental",
        "--timezone", "America/New_York", "--keep-last", "5", "--keep-within", "90d", "-d", "other",
    )  # fmt: skip
    assert "Traceback" not in result.stderr
    rows = world.rows()
    row = rows["hourly"]
    assert row["recurrence"] == ["TZ=America/New_York 15 */2 * * *"]
    assert row["types"] == ["incremental"] and row["deployments"] == ["other"]
    assert row["status"] == "Active"
    created = _time(row["created"])
    assert abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 120
    nxt = _time(row["next_run"])
    assert nxt > dt.datetime.now(dt.UTC) and nxt.minute == 15
    policy = world.policies()["hourly"]
    assert policy["retention"] == {"keep_last": 5, "keep_within": "90d"}
    assert helpers.load_yaml(world.config)["deployments"]["other"]["policy"] == "hourly"
    # the previous file is kept next to it; the comments are still there
    assert (world.root / "config.yaml.bak").read_text() == before
    after = world.config.read_text()
    for comment in ("# the only one", "# Weekly, unused; keep this comment.", "# two weeks", "# see below"):
        assert comment in after
    # creating it again is refused; unknown deployment is exit 5; a bad value exit 4, file untouched
    helpers.assert_one_line_error(
        world.run("policy", "create", "hourly", "--hourly", "1"), 4, "already exists"
    )
    helpers.assert_one_line_error(
        world.run("policy", "create", "x", "--hourly", "1", "-d", "nope"), 5, "nope"
    )
    helpers.assert_one_line_error(world.run("policy", "create", "x", "--hourly", "5"), 4, "divide")
    helpers.assert_one_line_error(world.run("policy", "create", "x", "--cron", "61 * * * *"), 4, "cron")
    helpers.assert_one_line_error(
        world.run("policy", "create", "x", "--daily-at", "5:00", "--timezone", "Mars/Base"), 4, "time zone"
    )
    helpers.assert_one_line_error(world.run("policy", "create", "x", "--keep-daily", "3"), 4, "schedule")
    assert world.config.read_text() == after


def _outside(text: str, start_marker: str, end_marker: str) -> tuple[str, str]:
    start = text.index(start_marker)
    end = text.index(end_marker)
    return text[:start], text[end:]


def test_edit_daily_at_keeps_the_rest_of_the_file_byte_identical(world: World) -> None:
    before = world.config.read_text()
    head, tail = _outside(before, "  nightly:\n", "  # Weekly, unused")
    world.ok("policy", "edit", "nightly", "--daily-at", "05:30", "--days", "mon,fri")
    after = world.config.read_text()
    assert after != before
    assert after.startswith(head), "lines before the policy changed"
    assert after.endswith(tail), "lines after the policy changed"
    # within the node, untouched keys keep their lines (and comments)
    assert "      keep_daily: 14   # two weeks\n" in after
    assert "        timezone: Europe/Berlin\n" in after
    row = world.rows()["nightly"]
    assert row["recurrence"] == ["TZ=Europe/Berlin 30 5 * * mon,fri"]
    nxt = _time(row["next_run"]).astimezone(ZoneInfo("Europe/Berlin"))
    assert (nxt.hour, nxt.minute) == (5, 30) and nxt.strftime("%a") in ("Mon", "Fri")
    assert (world.root / "config.yaml.bak").read_text() == before

    # add an incremental schedule next to the full one; then a bare --timezone is ambiguous
    world.ok("policy", "edit", "nightly", "--type", "incremental", "--hourly", "4")
    assert world.rows()["nightly"]["recurrence"] == [
        "TZ=Europe/Berlin 30 5 * * mon,fri",
        "TZ=UTC 0 */4 * * *",
    ]
    helpers.assert_one_line_error(world.run("policy", "edit", "nightly", "--timezone", "UTC"), 4, "--type")
    world.ok(
        "policy", "edit", "nightly", "--type", "incremental", "--timezone", "Asia/Tokyo", "--keep-weekly", "8"
    )
    policy = world.policies()["nightly"]
    assert policy["schedules"][1]["timezone"] == "Asia/Tokyo"
    assert policy["retention"] == {"keep_daily": 14, "keep_weekly": 8}
    assert world.config.read_text().endswith(tail)
    helpers.assert_one_line_error(world.run("policy", "edit", "nope", "--hourly", "1"), 5, "nope")


def test_pause_resume_flip_status(world: World) -> None:
    world.ok("policy", "pause", "nightly")
    row = world.rows()["nightly"]
    assert row["status"] == "Paused" and row["next_run"] is None
    assert world.policies()["nightly"]["status"] == "paused"
    show = world.ok("policy", "show", "nightly", "-o", "json").json()
    assert show["next_runs"] == []
    world.ok("policy", "resume", "nightly")
    row = world.rows()["nightly"]
    assert row["status"] == "Active" and row["next_run"] is not None
    helpers.assert_one_line_error(world.run("policy", "pause", "nope"), 5, "nope")


def test_pause_builtin_default_writes_it_out(world: World) -> None:
    world.ok("policy", "pause", "default")
    policy = world.policies()["default"]
    assert policy["status"] == "paused"
    assert policy["schedules"][0]["hourly"]["every"] == 2


def test_delete(world: World) -> None:
    helpers.assert_one_line_error(world.run("policy", "delete", "weekly"), 14, "--yes")  # no terminal
    world.ok("policy", "delete", "weekly", "--yes")
    assert "weekly" not in world.policies()
    assert "weekly" not in world.rows()
    text = world.config.read_text()
    assert "# Weekly, unused" not in text and "# Nightly full backups, Berlin time." in text
    # still used by `app`: refused, unless --force, which sets `policy: none` on it
    helpers.assert_one_line_error(world.run("policy", "delete", "nightly", "--yes"), 4, "used by app")
    assert "nightly" in world.policies()
    world.ok("policy", "delete", "nightly", "--yes", "--force")
    doc = helpers.load_yaml(world.config)
    assert "nightly" not in (doc.get("policies") or {})
    assert doc["deployments"]["app"]["policy"] == "none"
    helpers.assert_one_line_error(world.run("policy", "delete", "nightly", "--yes"), 5, "nightly")
    helpers.assert_one_line_error(world.run("policy", "delete", "default", "--yes"), 4, "built-in")


def test_show_next_runs_and_expiries_of_real_backups(world: World) -> None:
    world.ok(
        "policy", "create", "often", "--hourly", "1", "--keep-last", "1", "--include-manual", "-d", "app",
    )  # fmt: skip
    first = world.ok("backup", "create", "app", "--type", "full").stdout.strip().splitlines()[-1]
    (world.src / "b.txt").write_text("more\n")
    second = world.ok("backup", "create", "app").stdout.strip().splitlines()[-1]

    doc = world.ok("policy", "show", "often", "-o", "json").json()
    runs = [_time(r["time"]) for r in doc["next_runs"]]
    assert len(runs) == 5
    assert runs == sorted(runs) and all(
        b - a == dt.timedelta(hours=1) for a, b in zip(runs, runs[1:], strict=False)
    )
    assert all(t.minute == 0 for t in runs)
    assert doc["retention_rules"][0] == "Keep the 1 newest backups."
    assert "Manual backups are subject to these rules." in doc["retention_rules"]
    by_id = {b["id"]: b for b in doc["backups"]}
    assert set(by_id) == {first, second}
    # the newest is kept by keep_last until the next run replaces it; the older one is due now
    assert by_id[second]["keep"] is True
    assert any(r.startswith("keep_last 1/1") for r in by_id[second]["kept_by"])
    assert _time(by_id[second]["expires"]) == runs[0]
    assert by_id[first]["keep"] is False and by_id[first]["kept_by"] == []
    assert _time(by_id[first]["expires"]) <= runs[0]
    assert doc["last_full"] is not None and doc["last_incremental"] is not None
    row = world.rows()["often"]
    assert row["last_incremental"] == doc["last_incremental"]
    assert _time(row["last_full"]) <= _time(row["last_incremental"])  # second precision; may tie

    text = world.ok("policy", "show", "often").stdout
    assert "Next runs" in text and "keep_last 1/1" in text and "Keep the 1 newest backups." in text
    assert first in text and second in text  # IDs are never cut
    helpers.assert_one_line_error(world.run("policy", "show", "nope"), 5, "nope")

    # editing or pausing never touches existing backups
    world.ok("policy", "pause", "often")
    world.ok("policy", "edit", "often", "--keep-last", "0")
    ids = {b["id"] for b in world.ok("backup", "list", "--all", "-o", "json").json()}
    assert ids == {first, second}


EDITOR = """\
import pathlib, sys
path = pathlib.Path(sys.argv[1])
log = pathlib.Path({log!r})
calls = len(log.read_text().split("\\x00")) - 1 if log.exists() else 0
text = path.read_text()
log.write_text((log.read_text() if log.exists() else "") + text + "\\x00")
if calls == 0:
    path.write_text(text.replace("21:00", "06:15").replace("keep_daily: 14", "keep_daily: many"))
else:
    path.write_text(text.replace("keep_daily: many", "keep_daily: 30"))
"""


def _editor(world: World) -> tuple[str, Path]:
    log = world.root / "editor.log"
    script = world.root / "editor.py"
    script.write_text(EDITOR.format(log=str(log)))
    return f"{sys.executable} {script}", log


def test_editor_flow_reopens_on_error_and_writes(world: World) -> None:
    editor, log = _editor(world)
    before = world.config.read_text()
    head, tail = _outside(before, "  nightly:\n", "  # Weekly, unused")
    result = world.ok("policy", "edit", "nightly", "--yes", env={"EDITOR": editor})
    seen = log.read_text().split("\x00")[:-1]
    assert len(seen) == 2, "the editor should have been opened twice"
    assert seen[0].startswith("# Policy 'nightly'") and "keep_daily: 14" in seen[0]
    assert "schedules:" in seen[0] and "interval: 24h" in seen[0]  # help comments
    assert seen[1].startswith("# ERROR: ") and "keep_daily" in seen[1].splitlines()[0]
    assert "keep_daily: many" in seen[1]  # the user's text is kept, not reset
    assert "06:15" in result.stderr and "+" in result.stderr  # the diff was shown
    policy = world.policies()["nightly"]
    assert policy["schedules"][0]["daily"]["at"] == "06:15"
    assert policy["retention"]["keep_daily"] == 30
    after = world.config.read_text()
    assert after.startswith(head) and after.endswith(tail)
    assert world.rows()["nightly"]["recurrence"] == ["TZ=Europe/Berlin 15 6 * * *"]


def test_editor_without_terminal_or_yes_is_refused(world: World) -> None:
    editor, log = _editor(world)
    before = world.config.read_text()
    result = world.run("policy", "edit", "nightly", env={"EDITOR": editor})
    helpers.assert_one_line_error(result, 14, "no terminal")
    assert not log.exists() and world.config.read_text() == before


def test_editor_unchanged_writes_nothing(world: World) -> None:
    before = world.config.read_text()
    world.ok("policy", "edit", "nightly", "--yes", env={"EDITOR": "true"})
    assert world.config.read_text() == before
    assert not (world.root / "config.yaml.bak").exists()


def _pty_run(world: World, args: list[str], answer: bytes, editor: str) -> tuple[int, str]:
    import pty

    master, slave = pty.openpty()
    env = helpers.cli_env({**world.env, "EDITOR": editor})
    proc = subprocess.Popen(helpers.cli_command(*args), stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    answered = False
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
        if not answered and b"[y/N]" in out:
            os.write(master, answer)
            answered = True
    proc.wait(timeout=60)
    os.close(master)
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.skipif(sys.platform != "linux", reason="pty")
def test_editor_flow_asks_on_a_terminal(world: World) -> None:
    editor, _ = _editor(world)
    before = world.config.read_text()
    code, out = _pty_run(world, ["policy", "edit", "nightly"], b"n\n", editor)
    assert code == 14, out
    assert "Write this change" in out and "06:15" in out
    assert world.config.read_text() == before
    (world.root / "editor.log").unlink()
    code, out = _pty_run(world, ["policy", "edit", "nightly"], b"y\n", editor)
    assert code == 0, out
    assert world.policies()["nightly"]["retention"]["keep_daily"] == 30


def test_invalid_result_restores_the_previous_file(world: World) -> None:
    """A write that leaves an unloadable config is undone from the .bak (exit 4)."""
    from backupctl.errors import ConfigError
    from backupctl.policy import yaml_edit
    from backupctl.policy.config_file import write_checked

    before = world.config.read_text()
    with pytest.raises(ConfigError, match="restored"):
        write_checked(world.config, [lambda p: yaml_edit.set_deployment_key(p, "app", "policy", "missing")])
    assert world.config.read_text() == before
    with pytest.raises(ConfigError, match="restored"):
        write_checked(
            world.config, [lambda p: yaml_edit.update_policy_fields(p, "weekly", {"status": "sleepy"})]
        )
    assert world.config.read_text() == before


def test_help_has_examples() -> None:
    for cmd in ("list", "show", "create", "edit", "pause", "resume", "delete"):
        out = helpers.run_ok("policy", cmd, "--help").stdout
        assert "Example:" in out, cmd
