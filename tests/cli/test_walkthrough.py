"""Failures found by walking through the docs as a new user on Debian 12 (issue 12).

Each test reproduces one finding against real components and is marked xfail(strict=True)
until the engine is fixed; the fix removes the mark.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import helpers
import pytest
from dbservers import PostgresServer, free_port

pytestmark = pytest.mark.server


def _debian_layout_backup(server: PostgresServer, deployment: Any) -> str:
    """A pg_basebackup backup of `server` with its configuration files moved out of the
    data directory while it runs (Debian's /etc/postgresql layout), so the backup has none."""
    etc = Path(tempfile.mkdtemp(prefix="backupctl-pg-etc-"))
    names = ("postgresql.conf", "pg_hba.conf", "pg_ident.conf")
    for name in names:
        shutil.move(server.data / name, etc / name)
    try:
        created = deployment.ok("backup", "create", "app")
        return str(created.stdout.strip().splitlines()[-1])
    finally:
        for name in names:
            shutil.move(etc / name, server.data / name)
        shutil.rmtree(etc, ignore_errors=True)


def _psql_tcp(server: PostgresServer, port: int, user: str, password: str, db: str, sql: str) -> str:
    res = subprocess.run(
        [str(server.bin / "psql"), "-X", "-A", "-t", "-w", "-h", "127.0.0.1", "-p", str(port)]
        + ["-U", user, "-d", db, "-c", sql],
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": password},
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def _assert_minimal_config(datadir: Path) -> None:
    """The written configuration: local only, never the original's data_directory."""
    conf = (datadir / "postgresql.conf").read_text()
    assert "data_directory" not in conf and "listen_addresses = 'localhost'" in conf
    hba = (datadir / "pg_hba.conf").read_text()
    rules = [ln.split() for ln in hba.splitlines() if ln.strip() and not ln.startswith("#")]
    assert rules and all(r[0] == "local" or r[3] in ("127.0.0.1/32", "::1/128") for r in rules), hba
    assert not any("trust" in r for r in rules), hba
    assert (datadir / "pg_ident.conf").exists()
    pg = pwd.getpwnam("postgres")
    for name in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
        st = (datadir / name).stat()
        assert (st.st_uid, st.st_mode & 0o777) == (pg.pw_uid, 0o600), name


def test_physical_clone_of_a_cluster_whose_config_lives_outside_the_data_directory(
    pg_server: PostgresServer, make_deployment: Any
) -> None:
    server = pg_server
    db = "walk_" + uuid.uuid4().hex[:8]
    server.psql(f"CREATE DATABASE {db}")
    server.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 500) g", db)
    deployment = make_deployment([server.options(method="pg_basebackup")])
    # Debian's layout: the configuration files are not in the data directory, so
    # pg_basebackup does not carry them. The running server has read them already.
    backup_id = _debian_layout_backup(server, deployment)
    base = Path(tempfile.mkdtemp(prefix="backupctl-walk-clone-"))
    pw = pwd.getpwnam("postgres")
    os.chown(base, pw.pw_uid, pw.pw_gid)
    datadir = base / "data"
    try:
        result = deployment.run(
            "backup", "clone", backup_id, "--name", "walk" + uuid.uuid4().hex[:6],
            "--datadir", datadir, "--yes", "-o", "json",
        )  # fmt: skip
        # It was: exit 1, "the cloned PostgreSQL server on ... would not start: ...
        # could not access the server configuration file .../postgresql.conf".
        assert result.returncode == 0, str(result)
        doc = result.json()
        _assert_minimal_config(datadir)
        # The clone's user (here the owner, postgres) logs in by its new password, socket too.
        assert "peer" not in (datadir / "pg_hba.conf").read_text().split("# TYPE")[1]
        password = Path(doc["password_file"]).read_text().strip()
        server.pg_ctl_start(datadir, base / "clone.log")
        try:
            count = _psql_tcp(server, doc["port"], server.user, password, db, "SELECT count(*) FROM t")
            assert count == "500"
        finally:
            server.pg_ctl_stop(datadir)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        server.psql(f"DROP DATABASE {db} WITH (FORCE)")


def test_physical_restore_target_of_a_cluster_whose_config_lives_outside_the_data_directory(
    pg_server: PostgresServer, make_deployment: Any
) -> None:
    """`backup restore --target DIR` of such a backup is a data directory that starts as it
    is (pg_ctl -D DIR start): the missing configuration files are written, local only; the
    owner logs in by peer over the socket, the other roles by their original passwords."""
    server = pg_server
    db = "walk_" + uuid.uuid4().hex[:8]
    server.psql(f"CREATE DATABASE {db}")
    server.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 300) g", db)
    deployment = make_deployment([server.options(method="pg_basebackup")])
    backup_id = _debian_layout_backup(server, deployment)
    # A base backup is a copy, not a dump, and says so only when incremental was asked for.
    assert "incremental form" not in deployment.ok("backup", "create", "app").stderr
    asked = deployment.ok("backup", "create", "app", "--type", "incremental").stderr
    assert "pg_basebackup has no incremental form: taking a full copy" in asked, asked
    base = Path(tempfile.mkdtemp(prefix="backupctl-walk-restore-"))
    pw = pwd.getpwnam("postgres")
    os.chown(base, pw.pw_uid, pw.pw_gid)
    datadir = base / "data"
    port = free_port()
    try:
        result = deployment.run("backup", "restore", backup_id, "--target", datadir, "--yes")
        assert result.returncode == 0, str(result)
        assert "wrote minimal ones" in result.stderr, str(result)
        _assert_minimal_config(datadir)
        start = subprocess.run(
            ["runuser", "-u", "postgres", "--", str(server.bin / "pg_ctl"), "-D", str(datadir)]
            + ["-o", f"-p {port} -k {base}", "-l", str(base / "restore.log"), "-w", "-t", "60", "start"],
            capture_output=True,
            text=True,
            cwd=base,
        )
        assert start.returncode == 0, start.stderr + (base / "restore.log").read_text()
        try:
            peer = subprocess.run(
                ["runuser", "-u", "postgres", "--", str(server.bin / "psql"), "-X", "-A", "-t"]
                + ["-h", str(base), "-p", str(port), "-d", db, "-c", "SELECT count(*) FROM t"],
                capture_output=True,
                text=True,
                cwd=base,
            )
            assert (peer.returncode, peer.stdout.strip()) == (0, "300"), peer.stderr
            assert (
                _psql_tcp(server, port, server.user, server.password, db, "SELECT count(*) FROM t") == "300"
            )
        finally:
            server.pg_ctl_stop(datadir)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        server.psql(f"DROP DATABASE {db} WITH (FORCE)")


def test_point_in_time_clone_and_restore_of_a_cluster_whose_config_lives_outside_the_data_directory(
    pitr_pg: Any,
) -> None:
    """--to-time into a new directory (clone and `backup restore --target`) of a Debian-layout
    cluster: the copy gets the minimal configuration, replays the archived WAL to the moment
    and promotes; exactly the rows before the moment are there."""
    server, dep = pitr_pg
    db = "walk_" + uuid.uuid4().hex[:8]
    server.psql(f"CREATE DATABASE {db}")
    server.psql("CREATE TABLE t (id serial PRIMARY KEY, batch int)", db)
    _debian_layout_backup(server, dep)
    server.psql("INSERT INTO t (batch) SELECT 1 FROM generate_series(1, 100)", db)
    time.sleep(1.2)
    moment = server.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
    time.sleep(1.2)
    server.psql("INSERT INTO t (batch) SELECT 2 FROM generate_series(1, 50)", db)
    dep.ok("pitr", "check", "app")
    base = Path(tempfile.mkdtemp(prefix="backupctl-walk-pitr-"))
    pw = pwd.getpwnam("postgres")
    os.chown(base, pw.pw_uid, pw.pw_gid)
    try:
        clone_dir = base / "clone"
        doc = dep.ok(
            "backup", "clone", "--deployment", "app", "--to-time", f"{moment} UTC",
            "--name", "walk" + uuid.uuid4().hex[:6], "--datadir", clone_dir, "--yes", "-o", "json",
            timeout=600,
        ).json()  # fmt: skip
        _assert_minimal_config(clone_dir)
        password = Path(doc["password_file"]).read_text().strip()
        server.pg_ctl_start(clone_dir, base / "clone.log")
        try:
            rows = _psql_tcp(server, doc["port"], server.user, password, db, "SELECT count(*) FROM t")
            assert rows == "100"
        finally:
            server.pg_ctl_stop(clone_dir)

        restored = base / "restored"
        result = dep.ok(
            "backup", "restore", "--deployment", "app", "--to-time", f"{moment} UTC", "--target", restored,
            "--yes", timeout=600,
        )  # fmt: skip
        assert "wrote minimal ones" in result.stderr, str(result)
        _assert_minimal_config(restored)
        port = free_port()
        start = subprocess.run(
            ["runuser", "-u", "postgres", "--", str(server.bin / "pg_ctl"), "-D", str(restored)]
            + ["-o", f"-p {port} -k {base}", "-l", str(base / "restored.log"), "-w", "-t", "120", "start"],
            capture_output=True,
            text=True,
            cwd=base,
        )
        assert start.returncode == 0, start.stderr + (base / "restored.log").read_text()
        try:
            query = ["-h", str(base), "-p", str(port), "-d", db, "-A", "-t", "-X"]
            for _ in range(240):  # until promoted (replay to the moment)
                rec = subprocess.run(
                    ["runuser", "-u", "postgres", "--", str(server.bin / "psql"), *query]
                    + ["-c", "SELECT pg_is_in_recovery()"],
                    capture_output=True,
                    text=True,
                    cwd=base,
                )
                if rec.stdout.strip() == "f":
                    break
                time.sleep(0.5)
            assert rec.stdout.strip() == "f", rec.stderr + (base / "restored.log").read_text()
            assert (
                _psql_tcp(server, port, server.user, server.password, db, "SELECT count(*) FROM t") == "100"
            )
        finally:
            server.pg_ctl_stop(restored)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_configured_path_that_is_a_symlinked_directory_is_not_silently_a_0_byte_backup(
    tmp_path: Path, make_deployment: Any
) -> None:
    """`paths: [/srv/www]` with /srv/www -> /data/www stores the link (as restic and tar
    without -h do) and says so: exit 3, a warning naming the path, the target and what to
    list instead. It used to be a Completed 0 B backup with exit 0 and no word."""
    real = tmp_path / "data" / "www"
    real.mkdir(parents=True)
    (real / "index.html").write_text("<h1>site</h1>\n")
    link = tmp_path / "www"
    link.symlink_to(real)  # like /var/www -> /data/www
    deployment = make_deployment([{"type": "files", "paths": [str(link)]}])
    result = deployment.run("backup", "create", "app")
    assert result.returncode == 3, str(result)
    assert f"{link}: is a symlink to {real}: only the link is stored; list {real}" in result.stderr, str(
        result
    )
    backup_id = deployment.list()[0]["id"]
    # What was stored is exactly the link: it restores as the link.
    target = tmp_path / "restored"
    deployment.ok("backup", "restore", backup_id, "--target", target, "--yes")
    restored = target / str(link).lstrip("/")
    assert restored.is_symlink() and os.readlink(restored) == str(real)
    assert not (target / str(real).lstrip("/")).exists()

    # Listing the target too backs its contents up: no warning.
    both = make_deployment([{"type": "files", "paths": [str(link), str(real)]}])
    result = both.run("backup", "create", "app")
    assert result.returncode == 0 and "symlink" not in result.stderr, str(result)
    # A dangling link is said to be one.
    dangling = tmp_path / "gone"
    dangling.symlink_to(tmp_path / "nowhere")
    dep = make_deployment([{"type": "files", "paths": [str(dangling)]}])
    result = dep.run("backup", "create", "app")
    assert result.returncode == 3 and "which does not exist" in result.stderr, str(result)


def test_restore_target_that_is_a_file_is_refused_before_any_prompt(
    tmp_path: Path, make_deployment: Any
) -> None:
    """--target naming an existing file (a typo) is a usage error, exit 2, before the
    'current data there will be overwritten' prompt, and the file is left alone (the
    restore used to ask, then stop with 'File exists ... or remove <the file>')."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    deployment = make_deployment([{"type": "files", "paths": [str(src)]}])
    backup_id = deployment.create()
    victim = tmp_path / "notes.txt"
    victim.write_text("precious\n")
    for extra in ([], ["--yes"]):
        result = deployment.run("backup", "restore", backup_id, "--target", victim, *extra)
        assert result.returncode == 2, str(result)
        assert "not a directory" in result.stderr and str(victim) in result.stderr, str(result)
        assert "overwritten" not in result.stderr and "remove" not in result.stderr, str(result)
        assert victim.read_text() == "precious\n"


# ---- small findings of the walkthrough ---------------------------------------------------


def test_missing_sdk_hint_installs_the_extra_from_the_source_checkout(
    tmp_path: Path, make_deployment: Any
) -> None:
    """backupctl is not on a package index: the hint names `pip install '.[s3]'` in the
    checkout (docs/destinations.md) and the SDK itself, never `backupctl[s3]`."""
    deployment = make_deployment([{"type": "files", "paths": [str(tmp_path)]}])
    doc = helpers.load_yaml(deployment.config)
    doc["destinations"]["offsite"] = {"type": "s3", "bucket": "b", "endpoint": "http://127.0.0.1:9"}
    doc["deployments"]["app"]["destinations"] = ["offsite"]
    helpers.dump_yaml(doc, deployment.config)
    # A boto3 that cannot be imported, as on a machine without the SDK.
    shadow = tmp_path / "shadow"
    (shadow / "boto3").mkdir(parents=True)
    (shadow / "boto3" / "__init__.py").write_text("raise ImportError(\"No module named 'boto3'\")\n")
    result = deployment.run("backup", "create", "app", env={"PYTHONPATH": str(shadow)})
    assert result.returncode != 0, str(result)
    assert "pip install '.[s3]'" in result.stderr and "pip install boto3" in result.stderr, str(result)
    assert "backupctl[s3]" not in result.stderr, str(result)


def test_init_with_config_says_next_with_that_config(tmp_path: Path, isolated_env: Any) -> None:
    config = tmp_path / "elsewhere" / "cfg.yaml"
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    init = helpers.run_ok("init", "--config", config, "--example-path", src, "--repository", tmp_path / "r")
    hint = next(ln for ln in init.stderr.splitlines() if ln.startswith("Next: "))
    assert hint == (
        f"Next: backupctl --config {config} backup create example && backupctl --config {config} backup list"
    ), hint
    # The hint's first command works as printed (no BACKUPCTL_CONFIG, another directory).
    first = shlex.split(hint[len("Next: ") :].split(" && ")[0])
    helpers.run_ok(*first[1:], cwd=tmp_path)
    # Without --config the hint stays short.
    plain = helpers.run_ok("init", "--example-path", src, "--repository", tmp_path / "r2")
    assert "Next: backupctl backup create example && backupctl backup list" in plain.stderr, str(plain)


def test_missing_key_file_hint_mentions_init(tmp_path: Path, make_deployment: Any) -> None:
    deployment = make_deployment([{"type": "files", "paths": [str(tmp_path)]}])
    deployment.key_file.unlink()
    result = deployment.run("backup", "create", "app")
    assert result.returncode != 0, str(result)
    assert "restore it from your safe copy" in result.stderr and "backupctl init" in result.stderr, str(
        result
    )


def test_no_incremental_form_is_said_only_when_incremental_was_asked_for(
    tmp_path: Path, make_deployment: Any
) -> None:
    db = tmp_path / "x.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    deployment = make_deployment([{"type": "sqlite", "path": str(db)}])
    default = deployment.ok("backup", "create", "app")
    assert "incremental form" not in default.stderr, str(default)
    asked = deployment.ok("backup", "create", "app", "--type", "incremental")
    assert "sqlite has no incremental form: taking a full copy (copies are always complete" in asked.stderr, (
        str(asked)
    )
    assert deployment.show(asked.stdout.strip().splitlines()[-1])["type"] == "full"


def test_prune_prints_one_formatted_line_per_repository(tmp_path: Path, make_deployment: Any) -> None:
    """The engine prints nothing: `backup prune` renders its result once per repository
    (human sizes, singular and plural), and a backup's single warning is '1 warning'."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    link = tmp_path / "link"
    link.symlink_to(src)
    deployment = make_deployment([{"type": "files", "paths": [str(link)]}])
    created = deployment.run("backup", "create", "app")
    assert created.returncode == 3 and "1 warning (see above)" in created.stderr, str(created)
    shown = deployment.ok("backup", "show", created.stdout.strip().splitlines()[-1])
    assert "1 warning" in shown.stdout and "1 warnings" not in shown.stdout, str(shown)
    result = deployment.ok("backup", "prune", "--yes")
    lines = [ln for ln in result.stderr.splitlines() if "temporary file" in ln]
    assert lines == ["local: deleted 0 unreferenced packs and 0 temporary files, freed 0 B"], str(result)
    assert not re.search(r"freed \d+ bytes", result.stderr), str(result)


def test_a_single_problem_is_one_problem(tmp_path: Path, make_deployment: Any) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    deployment = make_deployment([{"type": "files", "paths": [str(src)]}])
    deployment.create()
    (manifest,) = (deployment.repository / "snapshots").iterdir()
    manifest.write_bytes(manifest.read_bytes()[:-5] + b"xxxxx")  # one damaged backup record
    result = deployment.run("repository", "check")
    assert "damaged: 1 problem" in result.stderr and "1 problems" not in result.stderr, str(result)
    assert "checking 1 backup\n" in result.stderr, str(result)
