"""`backupctl backup clone` end to end through the CLI against the throwaway servers.

A clone must match the source table by table, then live on its own (changes on either
side stay there), be owned by a new account whose generated password works and is stored
0600, leave the original's ownership alone, and appear in the config file as a new
deployment that can itself be backed up.
"""

from __future__ import annotations

import difflib
import os
import shutil
import stat
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from dbservers import MariaDBServer, PostgresServer, mariadb_fingerprint, pg_fingerprint
from helpers import load_yaml

pytestmark = pytest.mark.server

DATA_KEYS = ("table ", "sequences", "views", "functions")


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def data_part(fp: dict[str, str]) -> dict[str, str]:
    """The content of a fingerprint (tables, sequences, views, functions), not who owns it."""
    return {k: v for k, v in fp.items() if k.startswith(DATA_KEYS)}


def add_comments(config: Path) -> str:
    """Decorate the generated config with comments a user would have; return the new text."""
    text = config.read_text()
    text = "# backupctl config -- hand-written comment at the top\n" + text
    text = text.replace("deployments:\n", "deployments:\n  # the production app, keep this comment\n", 1)
    config.write_text(text)
    return text


def assert_only_added(before: str, after: str) -> None:
    """`after` is `before` with lines inserted: nothing changed or removed (comments included)."""
    ops = difflib.SequenceMatcher(None, before.splitlines(), after.splitlines()).get_opcodes()
    changed = [op for op in ops if op[0] not in ("equal", "insert")]
    assert not changed and any(op[0] == "insert" for op in ops), (changed, after)


def check_secret_file(path: Path, password: str, isolated_env: dict[str, Path]) -> None:
    assert path.is_relative_to(isolated_env["XDG_CONFIG_HOME"] / "backupctl" / "secrets"), path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(password) >= 24


def pg_login(server: PostgresServer, user: str, password: str, db: str, sql: str) -> str:
    """Log in over TCP with a password (scram-sha-256 in pg_hba), as a client of the clone would."""
    res = subprocess.run(
        [str(server.bin / "psql"), "-X", "-A", "-t", "-w", "-h", server.host, "-p", str(server.port)]
        + ["-U", user, "-d", db, "-c", sql],
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": password},
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_postgres_logical_clone(
    pg_server: PostgresServer, make_deployment: Any, isolated_env: dict[str, Path]
) -> None:
    server = pg_server
    db, owner = unique("cl"), unique("cl_owner")
    server.psql(f"CREATE ROLE {owner} LOGIN PASSWORD 'pw'")
    server.psql(f"CREATE DATABASE {db} OWNER {owner}")
    server.psql(
        f"SET ROLE {owner}; CREATE SCHEMA app;"
        "CREATE TABLE app.items (id serial PRIMARY KEY, v text);"
        "INSERT INTO app.items (v) SELECT md5(g::text) FROM generate_series(1, 4000) g;"
        "CREATE TABLE public.notes (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text);"
        "INSERT INTO public.notes (body) SELECT 'note ' || g FROM generate_series(1, 300) g;"
        "CREATE SEQUENCE public.free_seq; SELECT nextval('public.free_seq');"
        "CREATE VIEW app.item_count AS SELECT count(*) AS n FROM app.items;"
        "CREATE FUNCTION app.double(x int) RETURNS int LANGUAGE sql AS 'SELECT x * 2';"
        "CREATE TYPE app.mood AS ENUM ('ok', 'bad')",
        db,
    )
    deployment = make_deployment([server.options(databases=[db])])
    commented = add_comments(deployment.config)
    backup_id = deployment.create()
    before = pg_fingerprint(server, db)
    datdba = f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{db}'"

    name = unique("stg")
    clone_db, new_owner = f"{db}_{name}", f"{name}_owner"
    result = deployment.ok("backup", "clone", backup_id[:8], "--name", name, "--yes", "-o", "json")
    doc = result.json()
    assert doc["databases"] == {db: clone_db}, doc
    assert doc["user"] == new_owner and doc["kind"] == "logical"
    assert "password" not in doc, "the JSON document names the password file, never the password"
    assert "not been uploaded" in result.stderr, result.stderr
    password_file = Path(doc["password_file"])
    password = password_file.read_text().strip()
    check_secret_file(password_file, password, isolated_env)
    assert password not in result.stdout + result.stderr
    assert password not in server.log.read_text()

    # Same content, new owner, original untouched.
    after_clone = pg_fingerprint(server, clone_db)
    assert data_part(after_clone) == data_part(before)
    assert pg_fingerprint(server, db) == before
    assert server.psql(datdba) == owner
    assert (
        server.psql(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{clone_db}'")
        == new_owner
    )
    owned = server.psql(
        "SELECT string_agg(DISTINCT pg_get_userbyid(relowner), ',') FROM pg_class"
        " WHERE relnamespace::regnamespace::text IN ('app', 'public') AND relkind IN ('r', 'v', 'S')",
        clone_db,
    )
    assert owned == new_owner, owned
    assert (
        server.psql("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'app'", clone_db)
        == new_owner
    )
    assert (
        server.psql("SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = 'double'", clone_db)
        == new_owner
    )
    assert (
        server.psql("SELECT pg_get_userbyid(typowner) FROM pg_type WHERE typname = 'mood'", clone_db)
        == new_owner
    )
    assert (
        server.psql("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'app'", db) == owner
    )
    assert server.psql("SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = 'double'", db) == owner

    # The new owner logs in with the stored password and reads and writes its tables.
    assert pg_login(server, new_owner, password, clone_db, "SELECT count(*) FROM app.items") == "4000"
    pg_login(server, new_owner, password, clone_db, "INSERT INTO app.items (v) VALUES ('clone only')")

    # Independent from now on, both ways.
    server.psql("INSERT INTO app.items (v) SELECT 'source ' || g FROM generate_series(1, 50) g", db)
    assert server.psql("SELECT count(*) FROM app.items", db) == "4050"
    assert server.psql("SELECT count(*) FROM app.items", clone_db) == "4001"
    assert server.psql("SELECT count(*) FROM app.items WHERE v = 'clone only'", db) == "0"

    # The config gained the deployment; the rest of the file, comments included, is as it was.
    text = deployment.config.read_text()
    assert_only_added(commented, text)
    new = load_yaml(deployment.config)["deployments"][name]
    src = new["sources"][0]
    assert src["user"] == new_owner and src["password_file"] == str(password_file)
    assert src["databases"] == [clone_db] and "password_env" not in src
    assert new["destinations"] == ["local"]
    assert password not in text

    # The clone is a deployment like any other.
    clone_backup = deployment.ok("backup", "create", name).stdout.strip().splitlines()[-1]
    shown = deployment.show(clone_backup)
    assert shown["status"] == "Completed" and shown["deployment"] == name

    # A second clone of the same name is refused without touching anything.
    again = deployment.run("backup", "clone", backup_id, "--name", name, "--yes")
    assert again.returncode != 0 and "already exists" in again.stderr, str(again)
    assert "Traceback" not in again.stderr

    server.psql(f"DROP DATABASE {clone_db} WITH (FORCE)")
    server.psql(f"DROP DATABASE {db} WITH (FORCE)")
    server.psql(f"DROP ROLE {new_owner}")


def test_postgres_clone_refuses_an_existing_database(pg_server: PostgresServer, make_deployment: Any) -> None:
    server = pg_server
    db, taken = unique("cl_src"), unique("cl_taken")
    server.psql(f"CREATE DATABASE {db}")
    server.psql(f"CREATE DATABASE {taken}")
    server.psql("CREATE TABLE keep AS SELECT 1 AS x", taken)
    deployment = make_deployment([server.options(databases=[db])])
    backup_id = deployment.create()
    name = unique("c")
    result = deployment.run("backup", "clone", backup_id, "--name", name, "--database", taken, "--yes")
    assert result.returncode == 1, str(result)
    assert "already exist" in result.stderr and "Traceback" not in result.stderr
    assert server.psql("SELECT count(*) FROM keep", taken) == "1"
    assert name not in deployment.config.read_text()
    assert not server.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{name}_owner'")
    server.psql(f"DROP DATABASE {db} WITH (FORCE)")
    server.psql(f"DROP DATABASE {taken} WITH (FORCE)")


def mariadb_login(server: MariaDBServer, user: str, password: str, db: str, sql: str) -> str:
    assert server.client is not None
    res = subprocess.run(
        [server.client, "--no-defaults", "-h", server.host, "-P", str(server.port), "-u", user]
        + ["--batch", "--skip-column-names", f"--database={db}", "-e", sql],
        capture_output=True,
        text=True,
        env={**os.environ, "MYSQL_PWD": password},
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def mariadb_can_use(server: MariaDBServer, user: str, password: str, db: str) -> bool:
    assert server.client is not None
    res = subprocess.run(
        [server.client, "--no-defaults", "-h", server.host, "-P", str(server.port), "-u", user]
        + [f"--database={db}", "-e", "SELECT 1"],
        capture_output=True,
        text=True,
        env={**os.environ, "MYSQL_PWD": password},
        timeout=60,
    )
    return res.returncode == 0


def test_mariadb_logical_clone(
    mariadb_server: MariaDBServer, make_deployment: Any, isolated_env: dict[str, Path]
) -> None:
    server = mariadb_server
    db = unique("cl")
    server.root_sql(
        f"CREATE DATABASE {db}; CREATE TABLE {db}.items (id INT AUTO_INCREMENT PRIMARY KEY, v TEXT);"
        f"INSERT INTO {db}.items (v) SELECT md5(seq) FROM seq_1_to_3000;"
        f"CREATE VIEW {db}.item_count AS SELECT count(*) AS n FROM {db}.items;"
        f"CREATE TABLE {db}.log (id INT AUTO_INCREMENT PRIMARY KEY, note TEXT);"
    )
    server.root_sql(
        "CREATE TRIGGER items_ai AFTER INSERT ON items FOR EACH ROW INSERT INTO log (note) VALUES (NEW.v);"
        "CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2",
        db,
    )
    # A similarly named database the clone's grant must not reach ('_' is a GRANT wildcard).
    lookalike = db.replace("_", "x", 1)
    deployment = make_deployment([server.options(databases=[db])])
    commented = add_comments(deployment.config)
    backup_id = deployment.create()
    before = mariadb_fingerprint(server, db)

    name = unique("stg")
    clone_db, new_owner = f"{db}_{name}", f"{name}_owner"
    server.root_sql(f"CREATE DATABASE {lookalike}_{name.replace('_', 'x', 1)}")
    result = deployment.ok("backup", "clone", backup_id, "--name", name, "--yes", "-o", "json")
    doc = result.json()
    assert doc["databases"] == {db: clone_db} and doc["user"] == new_owner, doc
    password_file = Path(doc["password_file"])
    password = password_file.read_text().strip()
    check_secret_file(password_file, password, isolated_env)
    assert password not in result.stdout + result.stderr

    assert mariadb_fingerprint(server, clone_db) == before
    assert mariadb_fingerprint(server, db) == before
    assert mariadb_login(server, new_owner, password, clone_db, "SELECT count(*) FROM items") == "3000"
    grants = server.root_sql(f"SHOW GRANTS FOR '{new_owner}'@'%'")
    assert "ALL PRIVILEGES ON *.*" not in grants, grants
    assert not mariadb_can_use(server, new_owner, password, f"{lookalike}_{name.replace('_', 'x', 1)}")
    assert not mariadb_can_use(server, new_owner, password, db)
    assert server.root_sql(f"SELECT definer FROM mysql.proc WHERE db = '{db}'") == "root@localhost"

    server.root_sql(f"INSERT INTO {db}.items (v) VALUES ('source only')")
    mariadb_login(server, new_owner, password, clone_db, "INSERT INTO items (v) VALUES ('clone only')")
    assert server.root_sql(f"SELECT count(*) FROM {db}.items") == "3001"
    assert server.root_sql(f"SELECT count(*) FROM {clone_db}.items") == "3001"
    assert server.root_sql(f"SELECT count(*) FROM {db}.items WHERE v = 'clone only'") == "0"
    assert server.root_sql(f"SELECT count(*) FROM {clone_db}.items WHERE v = 'source only'") == "0"
    # The clone's view and trigger work on the clone's tables, not on the original's.
    assert server.root_sql(f"SELECT n FROM {clone_db}.item_count") == "3001"
    assert server.root_sql(f"SELECT count(*) FROM {clone_db}.log WHERE note = 'clone only'") == "1"
    assert server.root_sql(f"SELECT count(*) FROM {db}.log WHERE note = 'clone only'") == "0"
    server.root_sql(f"INSERT INTO {db}.items (v) VALUES ('source again')")
    assert server.root_sql(f"SELECT n FROM {clone_db}.item_count") == "3001"

    text = deployment.config.read_text()
    assert_only_added(commented, text)
    src = load_yaml(deployment.config)["deployments"][name]["sources"][0]
    assert (
        src["user"] == new_owner
        and src["databases"] == [clone_db]
        and src["password_file"] == str(password_file)
    )
    clone_backup = deployment.ok("backup", "create", name).stdout.strip().splitlines()[-1]
    assert deployment.show(clone_backup)["status"] == "Completed"

    server.root_sql(
        f"DROP DATABASE {db}; DROP DATABASE {clone_db}; DROP DATABASE {lookalike}_{name.replace('_', 'x', 1)};"
        f"DROP USER '{new_owner}'@'%'"
    )


def test_postgres_physical_clone(
    pg_server: PostgresServer, make_deployment: Any, isolated_env: dict[str, Path]
) -> None:
    server = pg_server
    db = unique("cl_phys")
    server.psql(f"CREATE DATABASE {db}")
    server.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g", db)
    before = pg_fingerprint(server, db)
    deployment = make_deployment([server.options(method="pg_basebackup")])
    backup_id = deployment.create()

    # The postgres user must reach the new data directory.
    base = Path(tempfile.mkdtemp(prefix="backupctl-clone-"))
    pw = __import__("pwd").getpwnam("postgres")
    os.chown(base, pw.pw_uid, pw.pw_gid)
    datadir = base / "data"
    name = unique("phys")
    try:
        missing = deployment.run("backup", "clone", backup_id, "--name", name, "--yes")
        assert missing.returncode == 2 and "--datadir" in missing.stderr, str(missing)
        result = deployment.ok(
            "backup", "clone", backup_id, "--name", name, "--datadir", datadir, "--yes", "-o", "json"
        )
        doc = result.json()
        port = doc["port"]
        assert doc["kind"] == "physical" and doc["datadir"] == str(datadir)
        assert doc["user"] == server.user and "password" not in doc
        secret = Path(doc["password_file"])
        password = secret.read_text().strip()
        check_secret_file(secret, password, isolated_env)
        assert password not in result.stdout + result.stderr
        assert f"port = {port}" in (datadir / "postgresql.auto.conf").read_text()
        assert not (datadir / "postmaster.pid").exists()  # the temporary start was stopped
        server.pg_ctl_start(datadir, base / "clone.log")
        try:
            assert pg_fingerprint_on(server, db, port) == before["table public.t"]
            # The stored password logs in over TCP; the original's no longer does on the clone.
            assert pg_login_port(server, port, server.user, password, db, "SELECT count(*) FROM t") == "2000"
            assert not pg_can_login(server, port, server.user, server.password, db)
            assert pg_can_login(server, server.port, server.user, server.password, db)
            assert not pg_can_login(server, server.port, server.user, password, db)
            server.psql("INSERT INTO t VALUES (-1, 'original only')", db)
            assert pg_fingerprint_on(server, db, port) == before["table public.t"]
        finally:
            server.pg_ctl_stop(datadir)
        new = load_yaml(deployment.config)["deployments"][name]["sources"][0]
        assert new["port"] == port and new["data_dir"] == str(datadir)
        assert new["user"] == server.user and new["password_file"] == str(secret)
        assert "password_env" not in new
        assert password not in deployment.config.read_text()
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
        server.psql(f"DROP DATABASE {db} WITH (FORCE)")


def pg_fingerprint_on(server: PostgresServer, db: str, port: int) -> str:
    return server.psql(
        "SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM public.t x",
        db,
        port=port,
    )


def pg_can_login(server: PostgresServer, port: int, user: str, password: str, db: str) -> bool:
    res = subprocess.run(
        [str(server.bin / "psql"), "-X", "-A", "-t", "-w", "-h", server.host, "-p", str(port)]
        + ["-U", user, "-d", db, "-c", "SELECT 1"],
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": password},
        timeout=60,
    )
    return res.returncode == 0


def pg_login_port(server: PostgresServer, port: int, user: str, password: str, db: str, sql: str) -> str:
    res = subprocess.run(
        [str(server.bin / "psql"), "-X", "-A", "-t", "-w", "-h", server.host, "-p", str(port)]
        + ["-U", user, "-d", db, "-c", sql],
        capture_output=True,
        text=True,
        env={**os.environ, "PGPASSWORD": password},
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_mariadb_physical_clone(
    mariadb_server: MariaDBServer, make_deployment: Any, isolated_env: dict[str, Path]
) -> None:
    server = mariadb_server
    db = unique("cl_mphys")
    server.root_sql(
        f"CREATE DATABASE {db}; CREATE TABLE {db}.t (id int PRIMARY KEY, v varchar(40));"
        f"INSERT INTO {db}.t SELECT seq, md5(seq) FROM seq_1_to_1500;"
    )
    before = data_part(mariadb_fingerprint(server, db))
    deployment = make_deployment([server.options(method="mariabackup")])
    backup_id = deployment.create()
    base = Path(tempfile.mkdtemp(prefix="backupctl-mclone-"))
    datadir = base / "data"
    name = unique("mphys")
    clone = MariaDBServer()
    try:
        result = deployment.ok(
            "backup", "clone", backup_id, "--name", name, "--datadir", datadir, "--yes", "-o", "json"
        )
        doc = result.json()
        assert doc["kind"] == "physical" and doc["datadir"] == str(datadir)
        assert doc["user"] == server.user and "password" not in doc
        secret = Path(doc["password_file"])
        password = secret.read_text().strip()
        check_secret_file(secret, password, isolated_env)
        assert password not in result.stdout + result.stderr
        new = load_yaml(deployment.config)["deployments"][name]["sources"][0]
        assert new["port"] == doc["port"] and new["datadir"] == str(datadir)
        assert new["user"] == server.user and new["password_file"] == str(secret)
        assert "password_env" not in new
        assert password not in deployment.config.read_text()

        clone.start_datadir(datadir, port=doc["port"])
        assert data_part(mariadb_fingerprint(clone, db)) == before
        assert mariadb_login(clone, server.user, password, db, "SELECT count(*) FROM t") == "1500"
        assert not mariadb_can_use(clone, server.user, server.password, db)
        # The original keeps its own password, and the clone's does not work there.
        assert mariadb_can_use(server, server.user, server.password, db)
        assert not mariadb_can_use(server, server.user, password, db)
        server.root_sql(f"INSERT INTO {db}.t VALUES (-1, 'original only')")
        assert data_part(mariadb_fingerprint(clone, db)) == before
    finally:
        clone.stop()
        shutil.rmtree(base, ignore_errors=True)
        server.root_sql(f"DROP DATABASE {db}")
