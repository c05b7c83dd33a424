"""Fidelity of database backups (issue 12): what was there is what comes back, or the backup
says why not. Each test reproduces a real input that used to give a wrong Completed backup or
an unrestorable one, against the real component (SQLite, PostgreSQL, MariaDB)."""

from __future__ import annotations

import io
import os
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

import helpers
import pytest
from dbservers import MariaDBServer, PostgresServer, mariadb_fingerprint, pg_fingerprint

# ---- SQLite: any path the filesystem allows -------------------------------------------


def _sqlite_db(path: Path, rows: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)  # a plain path: never a URI
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(rows)])
    conn.close()


@pytest.mark.parametrize("dirname", ["odd dir#1", "a%20b", "q?mode=rwc", "x?y#z%41"])
def test_sqlite_path_with_uri_characters_round_trips(tmp_path: Path, make_deployment, dirname: str) -> None:
    parent = tmp_path / "srv"
    (parent / dirname).mkdir(parents=True)
    db = parent / dirname / "app.db"
    _sqlite_db(db, 123)
    before = sorted(os.listdir(parent))
    dep = make_deployment([{"type": "sqlite", "path": str(db)}])
    backup_id = dep.create()
    # Nothing was created next to the source (a URI cut at '#' or '?' names another file).
    assert sorted(os.listdir(parent)) == before
    assert sorted(os.listdir(parent / dirname)) == ["app.db"]
    target = tmp_path / "restore"
    dep.ok("backup", "restore", backup_id, "--target", target)
    conn = sqlite3.connect(helpers.restored(target, db))
    try:
        assert conn.execute("SELECT count(*), max(v) FROM t").fetchone() == (123, "row 99")
    finally:
        conn.close()


def test_sqlite_missing_database_under_uri_like_path_fails(tmp_path: Path, make_deployment) -> None:
    parent = tmp_path / "srv"
    (parent / "odd dir#1").mkdir(parents=True)
    db = parent / "odd dir#1" / "app.db"
    dep = make_deployment([{"type": "sqlite", "path": str(db)}])
    result = dep.run("backup", "create", "app")
    helpers.assert_one_line_error(result, 1, "app.db")
    assert [r["status"] for r in dep.list()] == ["Failed"]
    assert sorted(os.listdir(parent)) == ["odd dir#1"]
    assert os.listdir(parent / "odd dir#1") == []


# ---- PostgreSQL ------------------------------------------------------------------------


def _add_deployment(dep: Any, name: str, source: dict[str, Any]) -> None:
    doc = helpers.load_yaml(dep.config)
    doc["deployments"][name] = {"sources": [source], "destinations": ["local"]}
    helpers.dump_yaml(doc, dep.config)


def _pg_user_databases(server: PostgresServer) -> list[str]:
    return server.psql(
        "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY datname"
    ).splitlines()


@pytest.mark.server
def test_postgres_all_databases_restore_every_database_including_postgres(
    fresh_pg_server: PostgresServer, second_fresh_pg_server: PostgresServer, make_deployment: Any
) -> None:
    server, other = fresh_pg_server, second_fresh_pg_server
    names = ["aaa_first", "postgres", "zzz_last"]
    for name in names:
        if name != "postgres":
            server.psql(f"CREATE DATABASE {name}")
        server.psql(
            f"CREATE TABLE t_{name} AS SELECT g AS id, md5(g::text || '{name}') AS v FROM generate_series(1, 500) g",
            name,
        )
    before = {name: pg_fingerprint(server, name) for name in names}
    dep = make_deployment([server.options(databases="all")])
    _add_deployment(dep, "staging", other.options(databases="all"))
    backup_id = dep.create()

    for name in names:
        server.psql(f"DELETE FROM t_{name} WHERE id % 3 = 0; CREATE TABLE junk (x int)", name)
    dep.ok("backup", "restore", backup_id, "--yes")
    assert _pg_user_databases(server) == names
    assert {name: pg_fingerprint(server, name) for name in names} == before

    dep.ok("backup", "restore", backup_id, "--to", "staging", "--yes")
    assert _pg_user_databases(other) == names
    assert {name: pg_fingerprint(other, name) for name in names} == before


def _pg_database_properties(server: PostgresServer, db: str) -> dict[str, str]:
    """What lives in the catalog outside the database: ACL, settings, comment, connection limit."""
    lit = "'" + db.replace("'", "''") + "'"
    return {
        "acl": server.psql(
            f"SELECT coalesce(datacl::text, 'default') FROM pg_database WHERE datname = {lit}"
        ),
        "settings": server.psql(
            "SELECT string_agg(coalesce(pg_get_userbyid(nullif(s.setrole, 0)), '*') || ':' || array_to_string(s.setconfig, '|'),"
            " ';' ORDER BY 1) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase"
            f" WHERE d.datname = {lit}"
        ),
        "comment": server.psql(
            f"SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = {lit}"
        ),
        "connlimit": server.psql(f"SELECT datconnlimit FROM pg_database WHERE datname = {lit}"),
    }


@pytest.mark.server
def test_postgres_restore_keeps_database_settings_and_privileges(
    fresh_pg_server: PostgresServer, second_fresh_pg_server: PostgresServer, make_deployment: Any
) -> None:
    server, other = fresh_pg_server, second_fresh_pg_server
    db, app = "Shop db", "app_role"
    q = '"Shop db"'
    server.psql(f"CREATE ROLE {app} LOGIN")
    server.psql(f"CREATE DATABASE {q}")
    server.psql(
        f"CREATE SCHEMA shop; CREATE TABLE shop.items AS SELECT g AS id FROM generate_series(1, 100) g;"
        f"GRANT USAGE ON SCHEMA shop TO {app}; GRANT SELECT ON shop.items TO {app}",
        db,
    )
    for sql in (
        f'ALTER DATABASE {q} SET search_path = shop, "$user", public',
        f"ALTER DATABASE {q} SET statement_timeout = '42s'",
        f"ALTER ROLE {app} IN DATABASE {q} SET work_mem = '8MB'",
        f"REVOKE CONNECT, TEMPORARY ON DATABASE {q} FROM PUBLIC",
        f"GRANT CONNECT ON DATABASE {q} TO {app}",
        f"COMMENT ON DATABASE {q} IS 'the shop; since 2019'",
        f"ALTER DATABASE {q} CONNECTION LIMIT 17",
    ):
        server.psql(sql)
    before = _pg_database_properties(server, db)
    assert "app_role=c/postgres" in before["acl"] and "=Tc/" not in before["acl"], before
    data = pg_fingerprint(server, db)
    dep = make_deployment([server.options(databases=[db])])
    _add_deployment(dep, "staging", other.options(databases=[db]))
    backup_id = dep.create()

    server.psql(
        f"ALTER DATABASE {q} RESET ALL; GRANT ALL ON DATABASE {q} TO PUBLIC; COMMENT ON DATABASE {q} IS NULL"
    )
    dep.ok("backup", "restore", backup_id, "--yes")
    assert _pg_database_properties(server, db) == before
    assert pg_fingerprint(server, db) == data
    # What an application sees: the search_path of the database, PUBLIC cannot connect.
    assert server.psql("SHOW search_path", db) == 'shop, "$user", public'

    dep.ok("backup", "restore", backup_id, "--to", "staging", "--yes")
    assert _pg_database_properties(other, db) == before
    assert pg_fingerprint(other, db) == data


# ---- MariaDB ---------------------------------------------------------------------------


def _mariadb_accounts(server: MariaDBServer) -> dict[str, str]:
    """Every account that is not the server's own, with its SHOW GRANTS."""
    rows = server.root_sql(
        "SELECT user, host FROM mysql.user WHERE is_role = 'N' AND user <> ''"
    ).splitlines()
    out = {}
    for row in rows:
        user, host = row.split("\t")
        if user in ("root", "mysql", "mariadb.sys", MariaDBServer.user):
            continue
        account = f"{MariaDBServer.sql_str(user)}@{MariaDBServer.sql_str(host)}"
        out[account] = server.root_sql(f"SHOW GRANTS FOR {account}")
    return out


@pytest.mark.server
def test_mariadb_skip_name_resolve_backs_up_every_resolvable_account_and_restores(
    default_mariadb_server: MariaDBServer, make_deployment: Any
) -> None:
    server = default_mariadb_server
    unresolvable = server.root_sql(
        "SELECT concat(quote(user), '@', quote(host)) FROM mysql.user"
        " WHERE host NOT IN ('localhost', '127.0.0.1', '::1', '%', '')"
    ).splitlines()
    assert unresolvable, "a default install has an account at the host name"
    assert (
        server.root_sql("SELECT count(*) FROM mysql.user WHERE user = 'mysql' AND host = 'localhost'") == "1"
    )
    server.root_sql(
        "CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, v VARCHAR(20));"
        "INSERT INTO shop.items SELECT seq, concat('item ', seq) FROM seq_1_to_300;"
        "CREATE USER 'app'@'%' IDENTIFIED BY 'app pw'; GRANT SELECT, INSERT ON shop.* TO 'app'@'%';"
        "CREATE USER 'report'@'10.1.2.%' IDENTIFIED BY 'r'; GRANT SELECT ON shop.items TO 'report'@'10.1.2.%'"
    )
    accounts, data = _mariadb_accounts(server), mariadb_fingerprint(server, "shop")
    assert set(accounts) == {"'app'@'%'", "'report'@'10.1.2.%'"}
    dep = make_deployment([server.options(databases="all")])

    result = dep.run("backup", "create", "app", "-o", "json")
    assert result.returncode == 3, str(result)  # Completed, with a warning
    record = result.json()
    assert record["status"] == "Completed", record
    warnings = [line for line in result.stderr.splitlines() if "warning" in line.lower()]
    for account in unresolvable:
        assert any(account in line for line in warnings), (account, result.stderr)

    server.root_sql("DROP DATABASE shop; DROP USER 'app'@'%'; DROP USER 'report'@'10.1.2.%'")
    # As the backup user, who has every privilege but PROXY: the server's own accounts
    # (root, mysql@localhost, mariadb.sys) are left as they are, so nothing fails.
    restored = dep.run("backup", "restore", record["id"], "--yes")
    assert restored.returncode == 0, str(restored)
    assert _mariadb_accounts(server) == accounts
    assert mariadb_fingerprint(server, "shop") == data


# ---- physical restores: tar extraction on every Python the package supports ---------------


def _tar_bytes(members: list[tuple[str, str, str]]) -> bytes:
    """(name, kind, data-or-link-target) -> an uncompressed tar, as pg_basebackup streams one."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, value in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if kind == "file":
                info.size, info.mode = len(value), 0o600
                tar.addfile(info, io.BytesIO(value.encode()))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o700
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, value
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, value
            elif kind == "chardev":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tar.addfile(info)
    return buf.getvalue()


def _filter_modes() -> list[bool]:
    return [False, True] if hasattr(tarfile, "data_filter") else [False]


@pytest.mark.parametrize("python_filter", _filter_modes())
def test_tar_extraction_writes_a_data_directory(tmp_path: Path, python_filter: bool) -> None:
    from backupctl.sources.postgres_physical import extract_tar_stream

    data = _tar_bytes(
        [
            ("PG_VERSION", "file", "15\n"),
            ("base", "dir", ""),
            ("base/1", "dir", ""),
            ("base/1/1259", "file", "x" * 9000),
            ("pg_wal", "dir", ""),
            ("current", "symlink", "base/1"),
            ("base/1/again", "hardlink", "base/1/1259"),
        ]
    )
    dest = tmp_path / "data"
    dest.mkdir()
    extract_tar_stream(io.BytesIO(data), dest, python_filter=python_filter)
    assert (dest / "PG_VERSION").read_text() == "15\n"
    assert (dest / "base/1/1259").read_text() == "x" * 9000
    assert os.readlink(dest / "current") == "base/1"
    assert (dest / "base/1/again").stat().st_ino == (dest / "base/1/1259").stat().st_ino
    assert oct((dest / "base").stat().st_mode & 0o7777) == oct(0o700)


@pytest.mark.parametrize("python_filter", _filter_modes())
@pytest.mark.parametrize(
    "members",
    [
        [("../escaped", "file", "bad")],
        [("/tmp/absolute-backupctl-test", "file", "bad")],
        [("base", "dir", ""), ("base/../../escaped", "file", "bad")],
        [("evil", "symlink", "/")],
        [("evil", "symlink", "../..")],
        [("ok", "dir", ""), ("ok/evil", "symlink", "../../outside")],
        [("evil", "hardlink", "/etc/passwd")],
        [("evil", "hardlink", "../outside")],
        [("evil", "chardev", "")],
    ],
    ids=[
        "dotdot",
        "absolute",
        "dotdot-inside",
        "abs-symlink",
        "symlink-up",
        "nested-symlink-up",
        "abs-hardlink",
        "hardlink-up",
        "device",
    ],
)
def test_tar_extraction_refuses_members_outside_the_directory(
    tmp_path: Path, members: list[tuple[str, str, str]], python_filter: bool
) -> None:
    from backupctl.errors import SourceError
    from backupctl.sources.postgres_physical import extract_tar_stream

    outer = tmp_path / "outer"
    dest = outer / "a" / "data"
    dest.mkdir(parents=True)
    with pytest.raises(SourceError, match="refusing"):
        extract_tar_stream(io.BytesIO(_tar_bytes(members)), dest, python_filter=python_filter)
    outside_dest = [p for p in outer.rglob("*") if p not in (outer / "a", dest) and dest not in p.parents]
    assert not outside_dest, outside_dest
    assert not Path("/tmp/absolute-backupctl-test").exists()
    assert not [p for p in dest.rglob("*") if p.is_symlink() or p.name == "evil"]


# ---- version checks of physical restores, before any safety backup ------------------------


def _tree_state(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


@pytest.mark.server
def test_postgres_physical_restore_into_an_older_cluster_is_refused_before_the_safety_backup(
    fresh_pg_server: PostgresServer, make_deployment: Any
) -> None:
    server = fresh_pg_server
    dep = make_deployment([server.options(method="pg_basebackup", data_dir=str(server.data))])
    backup_id = dep.create()
    assert dep.show(backup_id)["status"] == "Completed"
    server.pg_ctl_stop(server.data)
    # The configured data directory now holds a cluster of an older major version.
    (server.data / "PG_VERSION").write_text(f"{server_major_before(server) - 1}\n")
    before = _tree_state(server.data)
    result = dep.run("backup", "restore", backup_id, "--yes")
    helpers.assert_one_line_error(result, 1, "PostgreSQL")
    assert "older" in result.stderr, str(result)
    assert "safety backup" not in result.stderr, str(result)
    assert [b["id"] for b in dep.list()] == [backup_id], "a refused restore took a safety backup"
    assert _tree_state(server.data) == before


def server_major_before(server: PostgresServer) -> int:
    return int(server.bin.parent.name)


@pytest.mark.server
def test_postgres_physical_backup_of_a_newer_major_is_refused_without_its_server(
    fresh_pg_server: PostgresServer, make_deployment: Any, tmp_path: Path
) -> None:
    server = fresh_pg_server
    server.pg_ctl_stop(server.data)
    (server.data / "PG_VERSION").write_text("99\n")  # a stopped cluster of PostgreSQL 99
    dep = make_deployment([server.options(method="pg_basebackup", data_dir=str(server.data))])
    result = dep.run("backup", "create", "app", "-o", "json")  # an offline copy, with a warning
    assert result.returncode == 3, str(result)
    record = result.json()
    assert dep.show(record["id"])["source_versions"].get("pg_basebackup.major_version") == "99"
    target = tmp_path / "restored"
    refused = dep.run("backup", "restore", record["id"], "--target", target)
    helpers.assert_one_line_error(refused, 1, "PostgreSQL 99")
    assert not target.exists() or not any(target.iterdir())


@pytest.mark.server
def test_mariabackup_of_a_newer_server_is_refused_by_older_tools(
    fresh_mariadb_server: MariaDBServer, make_deployment: Any, tmp_path: Path
) -> None:
    server = fresh_mariadb_server
    server.shutdown()
    # The stopped data directory was last run by MariaDB 99.1.
    (server.data / "mysql_upgrade_info").write_text("99.1.0-MariaDB")
    dep = make_deployment([server.options(method="mariabackup", datadir=str(server.data))])
    result = dep.run("backup", "create", "app", "-o", "json")  # an offline copy, with a warning
    assert result.returncode == 3, str(result)
    record = result.json()
    target = tmp_path / "restored"
    refused = dep.run("backup", "restore", record["id"], "--target", target)
    helpers.assert_one_line_error(refused, 1, "99.1")
    assert not target.exists() or not any(target.iterdir())


@pytest.mark.server
def test_logical_version_checks_run_before_the_safety_backup(
    pg_server: PostgresServer, mariadb_server: MariaDBServer
) -> None:
    """The engine calls check_in_place_restore before it takes the safety backup."""
    from backupctl.errors import SourceError
    from backupctl.sources.mariadb import MariaDBSource
    from backupctl.sources.mariadb_client import MariaDBOptions
    from backupctl.sources.postgres import PostgresSource
    from backupctl.sources.postgres_client import PostgresOptions

    pg = PostgresSource(PostgresOptions.model_validate(pg_server.options(databases=["postgres"])))
    newer = {
        "method": "pg_dump",
        "server_version_num": (pg_server.major + 1) * 10000,
        "server_version": "99.0",
    }
    with pytest.raises(SourceError, match="older major version"):
        pg.check_in_place_restore(newer)
    pg.check_in_place_restore({**newer, "server_version_num": pg_server.major * 10000 + 1})

    maria = MariaDBSource(MariaDBOptions.model_validate(mariadb_server.options(databases=["mysql"])))
    with pytest.raises(SourceError, match="older version"):
        maria.check_in_place_restore({"method": "mariadb-dump", "server_version": "99.1.0-MariaDB"})
    maria.check_in_place_restore({"method": "mariadb-dump", "server_version": mariadb_server.version})


# ---- clone: the clone's owner owns everything in it ----------------------------------------


@pytest.mark.server
def test_postgres_clone_with_objects_of_other_roles_can_back_itself_up(
    fresh_pg_server: PostgresServer, make_deployment: Any
) -> None:
    server = fresh_pg_server
    db, app, uploader = "media", "media_app", "media_uploader"
    server.psql(f"CREATE ROLE {app} LOGIN; CREATE ROLE {uploader} LOGIN")
    server.psql(f"CREATE DATABASE {db} OWNER {app}")
    server.psql(f"ALTER DATABASE {db} SET search_path = files, public")
    server.psql(
        f"GRANT CREATE ON DATABASE {db} TO {uploader};"
        f"SET ROLE {uploader}; CREATE SCHEMA files;"
        "CREATE TABLE files.blobs (id int PRIMARY KEY, lo oid);"
        "INSERT INTO files.blobs SELECT g, lo_from_bytea(0, convert_to(repeat('blob ' || g, 100), 'UTF8'))"
        " FROM generate_series(1, 5) g;"
        f"RESET ROLE; CREATE TABLE public.admin_notes AS SELECT 1 AS x;"  # owned by postgres
        f"SET ROLE {app}; CREATE TABLE public.app_t AS SELECT 2 AS y",
        db,
    )
    blobs = server.psql("SELECT string_agg(md5(lo_get(lo)), ',' ORDER BY id) FROM files.blobs", db)
    dep = make_deployment([server.options(databases=[db])])
    backup_id = dep.create()

    doc = dep.ok("backup", "clone", backup_id, "--name", "stg", "--yes", "-o", "json").json()
    clone_db, new_owner = doc["databases"][db], doc["user"]
    assert (
        server.psql("SELECT string_agg(md5(lo_get(lo)), ',' ORDER BY id) FROM files.blobs", clone_db) == blobs
    )
    foreign = server.psql(
        "SELECT string_agg(what, ', ') FROM ("
        " SELECT 'large object ' || oid AS what FROM pg_largeobject_metadata WHERE lomowner::regrole::text <> "
        f"'{new_owner}' UNION ALL SELECT 'table ' || oid::regclass FROM pg_class WHERE oid >= 16384"
        f" AND relkind IN ('r', 'S', 'v') AND relowner::regrole::text <> '{new_owner}'"
        " UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE oid >= 16384"
        f" AND nspowner::regrole::text <> '{new_owner}') o",
        clone_db,
    )
    assert foreign == "", f"owned by other roles in the clone: {foreign}"
    # The database's own settings came along under the clone's name.
    assert server.psql("SHOW search_path", clone_db) == "files, public"
    # The original keeps its owners.
    assert server.psql("SELECT DISTINCT lomowner::regrole::text FROM pg_largeobject_metadata", db) == uploader
    # The clone backs itself up (as its owner, who is not a superuser) and restores.
    clone_backup = dep.run("backup", "create", "stg", "-o", "json")
    assert clone_backup.returncode == 0, str(clone_backup)
    server.psql("UPDATE files.blobs SET lo = NULL", clone_db)
    dep.ok("backup", "restore", clone_backup.json()["id"], "--yes")
    assert (
        server.psql("SELECT string_agg(md5(lo_get(lo)), ',' ORDER BY id) FROM files.blobs", clone_db) == blobs
    )


@pytest.mark.server
def test_postgres_restore_by_a_user_who_cannot_create_databases_is_refused_before_any_drop(
    fresh_pg_server: PostgresServer, make_deployment: Any
) -> None:
    server = fresh_pg_server
    password = server.psql(f"SELECT quote_literal($${server.password}$$)")
    server.psql(f"CREATE ROLE plain LOGIN PASSWORD {password}")
    server.psql("CREATE DATABASE plaindb OWNER plain")
    server.psql("SET ROLE plain; CREATE TABLE t AS SELECT g FROM generate_series(1, 10) g", "plaindb")
    dep = make_deployment([server.options(databases=["plaindb"], user="plain", globals=False)])
    backup_id = dep.create()
    server.psql("SET ROLE plain; INSERT INTO t VALUES (11)", "plaindb")
    result = dep.run("backup", "restore", backup_id, "--yes")
    helpers.assert_one_line_error(result, 1, "cannot create databases")
    assert server.psql("SELECT count(*) FROM t", "plaindb") == "11", "the database was dropped"
    assert [b["id"] for b in dep.list()] == [backup_id]


# ---- mariabackup increments store what changed since the previous backup -------------------


@pytest.mark.server
def test_mariabackup_increment_after_a_small_change_is_small_and_restores(
    fresh_mariadb_server: MariaDBServer, make_deployment: Any, tmp_path: Path
) -> None:
    server = fresh_mariadb_server
    server.root_sql(
        "CREATE DATABASE big; CREATE TABLE big.t (id INT PRIMARY KEY, v TEXT) ENGINE=InnoDB;"
        "INSERT INTO big.t SELECT seq, repeat(md5(seq), 10) FROM seq_1_to_100000"
    )
    dep = make_deployment([server.options(method="mariabackup", datadir=str(server.data))])
    full = dep.show(dep.create("--type", "full"))
    server.root_sql("UPDATE big.t SET v = 'changed' WHERE id <= 10")
    inc_id = dep.create("--type", "incremental")
    inc = dep.show(inc_id)
    assert inc["type"] == "incremental" and inc["sources"][0]["info"]["backup_type"] == "incremental"
    # A quiet server: the increment holds the changed pages, not the redo log since an old checkpoint.
    assert inc["size_bytes"] < full["size_bytes"] / 8, (inc["size_bytes"], full["size_bytes"])
    text = dep.ok("backup", "show", inc_id).stdout
    assert "since the parent" in text, text
    expected = mariadb_fingerprint(server, "big")

    target = tmp_path / "restored"
    dep.ok("backup", "restore", inc_id, "--target", target)
    restored = MariaDBServer()
    try:
        restored.start_datadir(target)
        assert mariadb_fingerprint(restored, "big") == expected
    finally:
        restored.stop()
