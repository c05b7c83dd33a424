"""Safety hygiene (issue 11, items 11, 12, 14, 15): malformed configs, secrets in URLs and in
children's environments, temporary files of killed runs, ownership of repository objects.

Every test drives the real CLI in a subprocess against a real filesystem (and, where the
item is about PostgreSQL, the throwaway server of tests/conftest_db.py).
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import helpers
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from pitr_helpers import PitrDeployment, light_command

from backupctl.config.loader import parse_config, read_yaml
from backupctl.errors import ConfigError

# ---- item 12: every malformed config is a config error (exit 4, one line naming the place) ----

_VALID: dict[str, Any] = {
    "destinations": {
        "local": {"type": "local", "path": "/tmp/repo"},
        "offsite": {"type": "s3", "bucket": "b", "endpoint": "http://127.0.0.1:9000"},
    },
    "deployments": {
        "app": {
            "sources": [
                {"type": "files", "paths": ["/srv"]},
                {"type": "sqlite", "path": "/srv/db.sqlite"},
                {"type": "postgres", "databases": ["app"], "password_env": "PGPW"},
            ],
            "destinations": ["local", "offsite"],
            "policy": "nightly",
        }
    },
    "encryption": {"key_file": "/etc/backupctl.key"},
    "policies": {"nightly": {"schedules": [{"type": "full", "every": "1d"}]}},
    "settings": {"workers": 2},
}

_MALFORMED = {
    "destinations as a list": "destinations: [a, b]\nencryption: {key_file: /k}\n",
    "destinations as a string": "destinations: foo\nencryption: {key_file: /k}\n",
    "destinations as a bool": "destinations: true\nencryption: {key_file: /k}\n",
    "deployments as a list": "deployments: [a]\nencryption: {key_file: /k}\n",
    "deployments as a string": "deployments: app\nencryption: {key_file: /k}\n",
    "deployments as a bool": "deployments: false\nencryption: {key_file: /k}\n",
    "destination type a list": "destinations: {x: {type: [local]}}\nencryption: {key_file: /k}\n",
    "destination type a map": "destinations: {x: {type: {a: 1}}}\nencryption: {key_file: /k}\n",
    "source type a map": "deployments: {d: {sources: [{type: {a: 1}}], destinations: [x]}}\n",
    "source type a list": "deployments: {d: {sources: [{type: [files]}], destinations: [x]}}\n",
    "deep flow nesting": "destinations: " + "[" * 2000 + "]" * 2000 + "\n",
    "deep block nesting": "settings:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(2000)),
}


def _config_error_or_valid(raw: Any, path: Path) -> None:
    try:
        parse_config(raw, path)
    except ConfigError as exc:
        assert "\n" not in str(exc), str(exc)
        assert str(path) in str(exc)


@pytest.mark.parametrize("name", sorted(_MALFORMED))
def test_malformed_config_is_exit_4_naming_the_place(name: str, tmp_path: Path, cli: Any) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(_MALFORMED[name])
    result = cli("config", "validate", env={"BACKUPCTL_CONFIG": str(config)}, timeout=30)
    helpers.assert_one_line_error(result, 4, str(config))
    assert "internal error" not in result.stderr, str(result)


def test_config_that_is_not_utf8_is_exit_4(tmp_path: Path, cli: Any) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(b"destinations:\n  caf\xe9: {type: local, path: /x}\n")
    result = cli("config", "validate", env={"BACKUPCTL_CONFIG": str(config)})
    helpers.assert_one_line_error(result, 4, str(config), "UTF-8")


_JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.sampled_from(["", "local", "files", "s3", "1d", "x" * 40, "/tmp", "{", "*"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["type", "a", "path"]), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, (*prefix, i))
    return out


@seed(20261203)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_configs_are_config_errors(data: st.DataObject, tmp_path: Path) -> None:
    """Replace one to three places of a valid config with junk: the loader either accepts the
    result or raises one ConfigError line naming the file; nothing else escapes."""
    doc: Any = copy.deepcopy(_VALID)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(_paths(doc)))
        junk = data.draw(_JUNK)
        if not where:
            doc = junk
            continue
        parent = doc
        for part in where[:-1]:
            parent = parent[part]
        parent[where[-1]] = junk
    _config_error_or_valid(doc, tmp_path / "fuzz.yaml")


@seed(20261203)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.sampled_from(list("[]{}:-, \n\tab1&*!|>'\"#%@`")), max_size=200))
def test_fuzzed_yaml_text_is_a_config_error(text: str, tmp_path: Path) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text("encryption: {key_file: /k}\n" + text)
    try:
        raw = read_yaml(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    _config_error_or_valid(raw, path)


# ---- item 14: a password inside an endpoint URL is never printed ----------------------------

_URL_PASSWORD = "Sup3rS3cretPw"


def test_endpoint_url_password_is_redacted(tmp_path: Path, cli: Any) -> None:
    """`config show`, `destination list` and `destination check`, in every output format and in
    their error messages, show `user:***@host`, never the password. The endpoint is a closed
    port, so the checks also fail with the endpoint in their error text."""
    key = tmp_path / "repo.key"
    helpers.write_config(
        tmp_path / "config.yaml",
        sources=[{"type": "files", "paths": [str(tmp_path)]}],
        repository=tmp_path / "repo",
        key_file=key,
    )
    doc = helpers.load_yaml(tmp_path / "config.yaml")
    doc["destinations"]["offsite"] = {
        "type": "s3",
        "bucket": "b",
        "endpoint": f"http://alice:{_URL_PASSWORD}@127.0.0.1:1",
        "force_path_style": True,
        "access_key_id_env": "HYG_AK",
        "secret_access_key_env": "HYG_SK",
        "connect_timeout": 1,
        "retries": 1,  # a closed port: one retry shows the error path without 15 s of backoff
    }
    helpers.dump_yaml(doc, tmp_path / "config.yaml")
    env = {"BACKUPCTL_CONFIG": str(tmp_path / "config.yaml"), "HYG_AK": "id", "HYG_SK": "secret"}
    shown = []
    for args in (
        ("config", "show"),
        ("config", "show", "-o", "json"),
        ("destination", "list"),
        ("destination", "list", "-o", "json"),
        ("destination", "check", "offsite"),
        ("destination", "check", "offsite", "-o", "json"),
    ):
        result = cli(*args, env=env, timeout=180)
        assert "Traceback" not in result.stderr, str(result)
        assert _URL_PASSWORD not in result.stdout + result.stderr, str(result)
        shown.append(result.stdout + result.stderr)
    assert "http://alice:***@127.0.0.1:1" in shown[0], shown[0]
    assert "http://alice:***@127.0.0.1:1" in shown[3], shown[3]
    assert "http://alice:***@127.0.0.1:1" in shown[5], shown[5]


# ---- item 14: a child process gets only the secrets it needs -------------------------------


def _recording_wrappers(bindir: Path, log: Path, tools: tuple[str, ...]) -> None:
    """`bindir/<tool>` records its environment (NUL-separated) and argv, then runs the real tool."""
    bindir.mkdir()
    log.mkdir()
    for tool in tools:
        real = shutil.which(tool)
        assert real, f"{tool} not on PATH"
        script = bindir / tool
        script.write_text(
            "#!/bin/sh\n"
            f'n="{log}/{tool}.$$"\n'
            'env -0 > "$n.env"\n'
            'printf "%s\\n" "$@" > "$n.argv"\n'
            f'exec {real} "$@"\n'
        )
        script.chmod(0o755)


_ENGINES = {
    # fixture, tools to record, how the tool gets its own password
    "postgres": ("pg_server", ("psql", "pg_dump", "pg_dumpall"), "PGPASSFILE"),
    "mariadb": ("mariadb_server", ("mariadb", "mariadb-dump"), "--defaults-extra-file="),
}


@pytest.mark.parametrize("engine", sorted(_ENGINES))
def test_dump_tools_never_see_another_deployments_password(
    engine: str, request: pytest.FixtureRequest, make_deployment: Any, tmp_path: Path
) -> None:
    """Deployment `app` dumps a real server; the config also names deployment `other`'s
    password variable, a destination's secret key, and the environment holds one variable that
    only looks like a secret. The tools get the server's password through a 0600 file only: no
    config-named secret, no *_PASSWORD-style variable, no password value in their environment
    or argv."""
    fixture, tools, own_channel = _ENGINES[engine]
    server = request.getfixturevalue(fixture)
    db = "hyg_" + uuid.uuid4().hex[:8]
    if engine == "postgres":
        server.psql(f"CREATE DATABASE {db}")
        server.psql("CREATE TABLE t (v text); INSERT INTO t VALUES ('x')", db)
    else:
        server.root_sql(
            f"CREATE DATABASE {db}; CREATE TABLE {db}.t (v text); INSERT INTO {db}.t VALUES ('x')"
        )
    deployment = make_deployment([server.options(databases=[db])])
    doc = helpers.load_yaml(deployment.config)
    doc["deployments"]["other"] = {
        "sources": [{"type": engine, "databases": ["x"], "password_env": "OTHERDB_CRED"}],
        "destinations": ["local"],
    }
    doc["destinations"]["offsite"] = {
        "type": "s3",
        "bucket": "b",
        "access_key_id_env": "OFFSITE_KEYID",
        "secret_access_key_env": "OFFSITE_SK",
    }
    helpers.dump_yaml(doc, deployment.config)
    secrets = {
        "OTHERDB_CRED": "other-deployment-pw-" + uuid.uuid4().hex,
        "OFFSITE_SK": "offsite-secret-" + uuid.uuid4().hex,
        "OFFSITE_KEYID": "offsite-keyid-" + uuid.uuid4().hex,
        "BILLING_API_PASSWORD": "unrelated-pw-" + uuid.uuid4().hex,
    }
    bindir, log = tmp_path / "bin", tmp_path / "tool-env"
    _recording_wrappers(bindir, log, tools)
    env = {**secrets, "PATH": f"{bindir}:{os.environ['PATH']}"}
    deployment.ok("backup", "create", "app", env=env)
    assert deployment.list()[0]["status"] == "Completed"
    recorded = sorted(log.glob("*.env"))
    assert {p.name.split(".")[0] for p in recorded} >= {tools[1]}, recorded
    for env_file in recorded:
        child = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
        argv = env_file.with_suffix(".argv").read_text()
        for name, value in secrets.items():
            assert name not in child, f"{env_file.name}: {name} reached the tool"
            assert value not in "".join(child.values()) + argv
        assert server.password_env not in child, env_file.name
        assert server.password not in "".join(child.values()) + argv, env_file.name
        assert own_channel in child or own_channel in argv, env_file.name


# ---- item 11: temporary files are private, and a killed run's are removed by the next run ----


def _start_create(deployment: Any, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        helpers.cli_command("backup", "create", "app"),
        env=helpers.cli_env({**deployment.env, **env}),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill_when(proc: subprocess.Popen[bytes], tmp: Path, pattern: str) -> list[Path]:
    """kill -9 `proc` as soon as a file matching `pattern` exists under `tmp`; return the matches."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        found = [p for p in tmp.rglob(pattern) if p.is_file()]
        if found:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return found
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    pytest.fail(f"no {pattern} appeared under {tmp} while the backup ran (exit {proc.returncode})")


def _assert_private(found: list[Path], tmp: Path) -> None:
    """Each file is 0600 and every directory between it and $TMPDIR is 0700 and ours."""
    for path in found:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path}: {oct(path.stat().st_mode)}"
        parent = path.parent
        while parent != tmp:
            st = parent.lstat()
            assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid(), parent
            assert stat.S_IMODE(st.st_mode) == 0o700, f"{parent}: {oct(st.st_mode)}"
            parent = parent.parent


def test_killed_sqlite_backup_leaves_a_private_copy_that_the_next_run_removes(
    make_deployment: Any, tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (v BLOB)")
    con.executemany("INSERT INTO t VALUES (?)", ((os.urandom(64 * 1024),) for _ in range(800)))
    con.commit()
    con.close()
    db.chmod(0o600)
    deployment = make_deployment([{"type": "sqlite", "path": str(db)}])
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp)}

    found = _kill_when(_start_create(deployment, env), tmp, "*.db")
    _assert_private(found, tmp)
    assert all(p.exists() for p in found), "kill -9 left nothing: the test did not hit its point"

    backup_id = deployment.ok("backup", "create", "app", env=env).stdout.strip().splitlines()[-1]
    assert not any(p.exists() for p in found), [p for p in found if p.exists()]
    assert not list(tmp.rglob("*.db")), list(tmp.rglob("*"))
    target = tmp_path / "restored"
    deployment.ok("backup", "restore", backup_id, "--target", str(target), env=env)
    # The online backup API rewrites header counters: compare the content, not the bytes.
    assert _sqlite_rows(helpers.restored(target, db)) == _sqlite_rows(db)


def _sqlite_rows(path: Path) -> list[Any]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return con.execute("SELECT rowid, v FROM t ORDER BY rowid").fetchall()
    finally:
        con.close()


def test_killed_postgres_backup_leaves_a_private_pgpass_that_the_next_run_removes(
    pg_server: Any, make_deployment: Any, tmp_path: Path
) -> None:
    db = "hyg_" + uuid.uuid4().hex[:8]
    pg_server.psql(f"CREATE DATABASE {db}")
    pg_server.psql("CREATE TABLE t AS SELECT md5(g::text) AS v FROM generate_series(1, 200000) g", db)
    deployment = make_deployment([pg_server.options(databases=[db])])
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp)}

    found = _kill_when(_start_create(deployment, env), tmp, "pgpass")
    _assert_private(found, tmp)
    assert all(p.exists() for p in found), "kill -9 left nothing: the test did not hit its point"

    deployment.ok("backup", "list", env=env)  # any command that reads the configuration
    assert not any(p.exists() for p in found), [p for p in found if p.exists()]
    pg_server.psql(f"DROP DATABASE {db} WITH (FORCE)")


# ---- item 15: objects root writes into a repository stay usable by the repository's owner ----


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as two OS users")
def test_root_backup_into_a_repository_given_to_postgres_keeps_wal_push_working(tmp_path: Path) -> None:
    """docs/pitr.md: the repository and key belong to `postgres` (who runs archive_command) and
    root runs `backup create`. Everything root writes takes the repository root's owner and
    group, so `wal push` as postgres keeps working, and both users can read everything back."""
    import pwd

    owner = pwd.getpwnam("postgres")
    dep = PitrDeployment([{"type": "postgres", "host": "127.0.0.1", "port": 1, "method": "pg_basebackup"}])
    try:
        files = helpers.make_sample_tree(dep.root / "files")
        doc = helpers.load_yaml(dep.config)
        doc["deployments"]["files"] = {
            "sources": [{"type": "files", "paths": [str(files)]}],
            "destinations": ["local"],
        }
        helpers.dump_yaml(doc, dep.config)
        dep.ok("pitr", "setup", "app")  # creates the repository (as root)
        dep.hand_over()  # chown -R postgres: repository and key, as docs/pitr.md says
        before = {p for p in dep.repository.rglob("*") if p.is_dir()}
        os.chmod(dep.repository, 0o2750)  # group-readable, set-group-ID

        backup_id = dep.ok("backup", "create", "files").stdout.strip().splitlines()[-1]
        wrong = [
            f"{p.relative_to(dep.repository)} {p.stat().st_uid}:{p.stat().st_gid} {oct(p.stat().st_mode)}"
            for p in dep.repository.rglob("*")
            if (p.stat().st_uid, p.stat().st_gid) != (owner.pw_uid, owner.pw_gid)
        ]
        assert not wrong, wrong
        made = [p for p in dep.repository.rglob("*") if p.is_dir() and p not in before]
        assert made, "the backup made no directory: nothing checked"
        for path in dep.repository.rglob("*"):
            mode = stat.S_IMODE(path.stat().st_mode)
            expected = 0o640 if not path.is_dir() else 0o2750 if path in made else 0o750
            assert mode == expected, f"{path}: {oct(mode)}"

        # postgres (archive_command's user) pushes a WAL segment into the same repository.
        seg = dep.root / "000000010000000000000042"
        payload = os.urandom(1 << 20) + bytes(15 << 20)
        seg.write_bytes(payload)
        os.chmod(seg, 0o644)
        prefix = light_command(user="postgres")
        env = {**os.environ, "BACKUPCTL_CONFIG": str(dep.config)}
        pushed = subprocess.run(
            ["runuser", "-u", "postgres", "--", "sh", "-c", f'{prefix} push "$1"', "push", str(seg)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert pushed.returncode == 0, pushed.stderr

        # A second root backup after postgres wrote; then both read everything back.
        helpers.make_sample_tree(files / "more", seed=2)
        second = dep.ok("backup", "create", "files").stdout.strip().splitlines()[-1]
        for bid in (backup_id, second):
            target = dep.root / f"restored-{bid[:8]}"
            dep.ok("backup", "restore", bid, "--target", str(target))
        assert_tree = helpers.snapshot_tree(files)
        helpers.assert_same_tree(
            assert_tree, helpers.snapshot_tree(helpers.restored(dep.root / f"restored-{second[:8]}", files))
        )
        pgout = dep.root / "pgout"
        pgout.mkdir()
        os.chown(pgout, owner.pw_uid, owner.pw_gid)
        fetch = subprocess.run(
            ["runuser", "-u", "postgres", "--", "sh", "-c", f'{prefix} fetch "$1" "$2"', "fetch"]
            + [seg.name, str(pgout / seg.name)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert fetch.returncode == 0, fetch.stderr
        assert (pgout / seg.name).read_bytes() == payload
        fetched = dep.root / "fetched"
        dep.ok("wal", "fetch", seg.name, str(fetched))
        assert fetched.read_bytes() == payload
        assert dep.ok("backup", "verify", second, "-o", "json").json()
    finally:
        dep.cleanup()


def test_a_planted_temporary_directory_is_refused(make_deployment: Any, tmp_path: Path) -> None:
    """$TMPDIR/backupctl-<uid> that is a symlink (someone else's planted path) is never used:
    the backup fails with one line naming it, and nothing is written where the link points."""
    db = tmp_path / "app.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (v)")
    con.commit()
    con.close()
    deployment = make_deployment([{"type": "sqlite", "path": str(db)}])
    tmp, elsewhere = tmp_path / "tmp", tmp_path / "elsewhere"
    tmp.mkdir()
    elsewhere.mkdir()
    (tmp / f"backupctl-{os.getuid()}").symlink_to(elsewhere)
    result = deployment.run("backup", "create", "app", env={"TMPDIR": str(tmp)})
    assert result.returncode != 0, str(result)
    assert "Traceback" not in result.stderr, str(result)
    assert f"backupctl-{os.getuid()}" in result.stderr and "not a directory of this user" in result.stderr
    assert not list(elsewhere.iterdir())


def test_a_killed_replay_leaves_a_directory_and_server_that_the_next_replay_removes(tmp_path: Path) -> None:
    """The throwaway mariadbd of a MariaDB point-in-time restore lives in $TMPDIR (a short
    socket path, enterable by the data directory's owner), outside the swept run directories.
    After kill -9 its directory and the server stayed; the next replay stops and removes them."""
    import signal as signals
    import subprocess
    import sys
    import tempfile

    from backupctl import tempdir
    from backupctl.sources import mariadb_server

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(gone.stdout)
    left = Path(tempfile.mkdtemp(prefix=f"{mariadb_server.REPLAY_PREFIX}{dead_pid}-12345-"))
    # Stands in for the orphaned mariadbd: its command line names the directory.
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", str(left / "mysqld.sock")]
    )
    ours = Path(tempfile.mkdtemp(prefix=f"{mariadb_server.REPLAY_PREFIX}{tempdir.owner_tag()}-"))
    try:
        (left / "mysqld.pid").write_text(f"{orphan.pid}\n")
        # Right after exec /proc/PID/cmdline can still be empty (a real orphan is long started).
        deadline = time.monotonic() + 10
        while str(left).encode() not in Path(f"/proc/{orphan.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline, "the stand-in server never showed its command line"
            time.sleep(0.01)
        removed = mariadb_server.sweep_replays()
        assert left in removed and not left.exists()
        assert orphan.wait(timeout=10) == -signals.SIGKILL
        assert ours.exists() and ours not in removed  # a live process's replay is left alone
    finally:
        if orphan.poll() is None:
            orphan.kill()
        ours.rmdir()
