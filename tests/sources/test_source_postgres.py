"""PostgreSQL source against a real throwaway cluster, driven through the Source interface."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import IO

import pytest
from dbservers import (
    PostgresServer,
    child_processes,
    free_port,
    pg_fingerprint,
    pg_role,
    restore_entries,
    take_backup,
)

from backupctl.errors import SourceError
from backupctl.events import CollectingReporter
from backupctl.sources.base import Entry, RestoreRequest, source_class
from backupctl.sources.postgres import PostgresSource
from backupctl.sources.postgres_client import PostgresOptions

pytestmark = pytest.mark.server


def make_source(server: PostgresServer, **overrides: object) -> PostgresSource:
    opts = PostgresOptions.model_validate(server.options(**overrides))
    cls = source_class("postgres")
    source = cls(opts)
    assert isinstance(source, PostgresSource)
    return source


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def populate(server: PostgresServer, db: str, owner: str) -> None:
    """Tables of several types, a sequence, a view, a function, a trigger, grants, a role."""
    server.psql(f"CREATE ROLE {owner} LOGIN PASSWORD 'ownerpw' CREATEDB CONNECTION LIMIT 7")
    server.psql(f"CREATE DATABASE {db} OWNER {owner}")
    server.psql(
        f"""
        SET ROLE {owner};
        CREATE SCHEMA app;
        CREATE TABLE app.customers (id serial PRIMARY KEY, name text NOT NULL, born date, balance numeric(12,2),
                                    tags text[], doc jsonb, photo bytea);
        INSERT INTO app.customers (name, born, balance, tags, doc, photo)
            SELECT 'name ' || i || E' \\u00e9\\t"q"', date '2000-01-01' + i, i * 1.25, ARRAY['a' || i, 'b'],
                   jsonb_build_object('i', i, 'nested', jsonb_build_array(i, i * 2)), decode(md5(i::text), 'hex')
            FROM generate_series(1, 2000) i;
        CREATE TABLE public.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                    customer int REFERENCES app.customers(id), total numeric, at timestamptz);
        INSERT INTO public.orders (customer, total, at)
            SELECT 1 + i % 2000, i / 3.0, timestamptz '2024-01-01 00:00+00' + i * interval '1 minute'
            FROM generate_series(1, 5000) i;
        CREATE SEQUENCE app.invoice_no START 1000;
        SELECT nextval('app.invoice_no') FROM generate_series(1, 17);
        CREATE VIEW app.big_spenders AS SELECT c.name, sum(o.total) AS spent FROM app.customers c
            JOIN public.orders o ON o.customer = c.id GROUP BY c.name HAVING sum(o.total) > 100;
        CREATE FUNCTION app.add_tax(amount numeric) RETURNS numeric LANGUAGE sql IMMUTABLE AS $$ SELECT amount * 1.2 $$;
        CREATE TABLE app.audit (id serial PRIMARY KEY, msg text);
        CREATE FUNCTION app.log_order() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN INSERT INTO app.audit (msg) VALUES ('order ' || NEW.id); RETURN NEW; END $$;
        CREATE TRIGGER orders_audit AFTER INSERT ON public.orders FOR EACH ROW EXECUTE FUNCTION app.log_order();
        INSERT INTO public.orders (customer, total, at) VALUES (1, 1, now());
        GRANT SELECT ON app.customers TO PUBLIC;
        """,
        db,
    )


def drop(server: PostgresServer, db: str, role: str | None = None) -> None:
    server.psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    if role:
        server.psql(f"DROP ROLE IF EXISTS {role}")


def test_logical_round_trip_recreates_database_and_roles(pg_server: PostgresServer) -> None:
    db, owner = unique("shop"), unique("owner")
    populate(pg_server, db, owner)
    before = pg_fingerprint(pg_server, db)
    role_before = pg_role(pg_server, owner)
    assert before["table app.customers"].startswith("2000:")

    captured = take_backup(make_source(pg_server, databases=[db]))
    assert captured.paths == [
        "postgres",
        "postgres/globals.sql",
        "postgres/database-properties",
        f"postgres/database-properties/{db}.sql",
        "postgres/databases",
        f"postgres/databases/{db}.sql",
    ]
    assert captured.info["server_version_num"] == int(pg_server.psql("SHOW server_version_num"))
    assert captured.info["server_version"].startswith(str(pg_server.major))
    assert [d["name"] for d in captured.info["databases"]] == [db]
    dump = captured.data(f"postgres/databases/{db}.sql")
    assert b"COPY app.customers" in dump and b"CREATE DATABASE" not in dump  # plain, uncompressed

    drop(pg_server, db, owner)
    assert pg_role(pg_server, owner) == ""
    make_source(pg_server).restore(
        restore_entries(captured), RestoreRequest(target_dir=None, source_info=captured.info)
    )

    assert pg_fingerprint(pg_server, db) == before
    assert pg_role(pg_server, owner) == role_before  # password hash and attributes too
    assert pg_server.psql(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{db}'") == owner
    # The restore overwrote a database that had changed since, and can run again over itself.
    pg_server.psql("DELETE FROM public.orders WHERE id < 100; CREATE TABLE junk (x int)", db)
    make_source(pg_server).restore(
        restore_entries(captured), RestoreRequest(target_dir=None, source_info=captured.info)
    )
    assert pg_fingerprint(pg_server, db) == before
    drop(pg_server, db, owner)


def test_all_databases_each_restorable_on_its_own(pg_server: PostgresServer) -> None:
    one, two = unique("alpha"), unique("beta")
    for name in (one, two):
        pg_server.psql(f"CREATE DATABASE {name}")
        pg_server.psql(
            f"CREATE TABLE t AS SELECT g AS id, md5(g::text || '{name}') AS v FROM generate_series(1, 300) g",
            name,
        )
    fp_one, fp_two = pg_fingerprint(pg_server, one), pg_fingerprint(pg_server, two)

    captured = take_backup(make_source(pg_server, databases="all"))
    names = [d["name"] for d in captured.info["databases"]]
    assert {one, two, "postgres"} <= set(names)
    assert not {"template0", "template1"} & set(names)

    pg_server.psql("INSERT INTO t VALUES (999, 'later')", one)
    pg_server.psql("INSERT INTO t VALUES (999, 'later')", two)
    info = {**captured.info, "only_databases": [one]}
    make_source(pg_server).restore(
        restore_entries(captured), RestoreRequest(target_dir=None, source_info=info)
    )
    assert pg_fingerprint(pg_server, one) == fp_one
    assert pg_fingerprint(pg_server, two) != fp_two  # untouched
    drop(pg_server, one)
    drop(pg_server, two)


def test_clone_under_a_new_name_leaves_the_original_alone(pg_server: PostgresServer) -> None:
    db, owner = unique("orig"), unique("own")
    populate(pg_server, db, owner)
    before = pg_fingerprint(pg_server, db)
    captured = take_backup(make_source(pg_server, databases=[db]))
    clone = unique("clone")
    info = {**captured.info, "rename": {db: clone}}
    make_source(pg_server).restore(
        restore_entries(captured), RestoreRequest(target_dir=None, source_info=info)
    )

    assert pg_fingerprint(pg_server, clone) == before
    pg_server.psql("INSERT INTO public.orders (customer, total, at) VALUES (2, 5, now())", db)
    assert pg_fingerprint(pg_server, clone) == before
    assert pg_fingerprint(pg_server, db) != before
    pg_server.psql("DELETE FROM app.audit", clone)
    assert pg_fingerprint(pg_server, db)["table app.audit"].startswith("2:")
    drop(pg_server, clone)
    drop(pg_server, db, owner)


def test_dump_while_a_writer_inserts_restores_consistently(pg_server: PostgresServer) -> None:
    db = unique("busy")
    pg_server.psql(f"CREATE DATABASE {db}")
    pg_server.psql(
        "CREATE TABLE a (id int PRIMARY KEY, v text); CREATE TABLE b (id int PRIMARY KEY, v text);"
        "CREATE TABLE filler AS SELECT g AS id, repeat(md5(g::text), 8) AS v FROM generate_series(1, 60000) g",
        db,
    )
    writer = subprocess.Popen(
        [str(pg_server.bin / "psql"), "-X", "-q", "-h", str(pg_server.sockdir), "-p", str(pg_server.port)]
        + ["-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    stop = threading.Event()
    written = [0]

    def write() -> None:
        assert writer.stdin is not None
        i = 0
        while not stop.is_set():
            i += 1
            # b first, then a: a dump without one snapshot would find more rows in b (dumped later).
            writer.stdin.write(
                f"BEGIN; INSERT INTO b VALUES ({i}, 'x'); INSERT INTO a VALUES ({i}, 'x'); COMMIT;\n"
            )
            writer.stdin.flush()
            written[0] = i
            time.sleep(0.001)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        time.sleep(0.5)
        captured = take_backup(make_source(pg_server, databases=[db]))
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
        assert writer.stdin is not None
        writer.stdin.close()
        writer.wait()
    total = int(pg_server.psql("SELECT count(*) FROM a", db))
    clone = unique("busy_restored")
    info = {**captured.info, "rename": {db: clone}}
    make_source(pg_server).restore(
        restore_entries(captured), RestoreRequest(target_dir=None, source_info=info)
    )
    count_a = int(pg_server.psql("SELECT count(*) FROM a", clone))
    mismatched = pg_server.psql(
        "SELECT count(*) FROM a FULL JOIN b USING (id) WHERE a.id IS NULL OR b.id IS NULL", clone
    )
    assert 0 < count_a < total, "the dump should fall in the middle of the writes"
    assert mismatched == "0"
    drop(pg_server, db)
    drop(pg_server, clone)


def test_server_killed_mid_dump_fails_with_pg_dump_message(fresh_pg_server: PostgresServer) -> None:
    server = fresh_pg_server
    db = "victim"
    server.psql(f"CREATE DATABASE {db}")
    server.psql(
        "CREATE TABLE big AS SELECT g AS id, repeat(md5(g::text), 10) AS v FROM generate_series(1, 200000) g",
        db,
    )
    source = make_source(server, databases=[db])

    def kill_during_dump(entry: Entry, stream: IO[bytes]) -> None:
        # The dump itself, not the small database-properties entry of the same name.
        if entry.path == f"postgres/databases/{db}.sql":
            assert stream.read(1 << 16)
            server.kill()

    with pytest.raises(SourceError) as err:
        take_backup(source, during_read=kill_during_dump)
    assert "pg_dump" in str(err.value)
    assert "connection" in str(err.value) or "terminat" in str(err.value)
    assert server.password not in str(err.value)


def test_password_only_in_a_private_pgpass_file(pg_server: PostgresServer) -> None:
    db = unique("secret")
    pg_server.psql(f"CREATE DATABASE {db}")
    # A dump well beyond the 1 MiB pipe (dbutil._widen_pipe): pg_dump must still be running,
    # blocked on the pipe, when the first KiB is read.
    pg_server.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000000) g", db)
    source = make_source(pg_server, databases=[db], globals=False)
    seen: list[tuple[list[str], dict[str, str]]] = []
    pgpass_files: list[Path] = []

    def inspect(entry: Entry, stream: IO[bytes]) -> None:
        assert stream.read(1024)  # the child is running now
        for _pid, argv, env in child_processes():
            seen.append((argv, env))
            if "PGPASSFILE" in env:
                pgpass_files.append(Path(env["PGPASSFILE"]))
        for path in pgpass_files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    take_backup(source, during_read=inspect)
    assert any("pg_dump" in argv[0] for argv, _ in seen)
    for argv, env in seen:
        assert not any(pg_server.password in arg for arg in argv)
        assert not any(pg_server.password in value for value in env.values())
        assert "PGPASSWORD" not in env
    assert pgpass_files and not any(p.exists() for p in pgpass_files)  # removed after finish()
    drop(pg_server, db)


def test_wrong_password_fails_without_revealing_it(
    pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_source(pg_server)
    monkeypatch.setenv(pg_server.password_env, "not:the\\password")
    with pytest.raises(SourceError) as err:
        take_backup(source)
    assert "password authentication failed" in str(err.value)
    assert "not:the" not in str(err.value)


def test_restore_into_older_major_is_refused_and_newer_warns(pg_server: PostgresServer) -> None:
    db = unique("versions")
    pg_server.psql(f"CREATE DATABASE {db}")
    pg_server.psql("CREATE TABLE t AS SELECT 1 AS x", db)
    captured = take_backup(make_source(pg_server, databases=[db]))
    pg_server.psql("INSERT INTO t VALUES (2)", db)

    newer = {
        **captured.info,
        "server_version_num": (pg_server.major + 1) * 10000 + 3,
        "server_version": "99.3",
    }
    with pytest.raises(SourceError, match="older major version"):
        make_source(pg_server).restore(
            restore_entries(captured), RestoreRequest(target_dir=None, source_info=newer)
        )
    assert pg_server.psql("SELECT count(*) FROM t", db) == "2"  # nothing was dropped

    older = {**captured.info, "server_version_num": (pg_server.major - 1) * 10000 + 5}
    reporter = CollectingReporter()
    make_source(pg_server).restore(
        restore_entries(captured), RestoreRequest(target_dir=None, source_info=older, reporter=reporter)
    )
    assert any("newer" in w.message for w in reporter.warnings)
    assert pg_server.psql("SELECT count(*) FROM t", db) == "1"
    drop(pg_server, db)


def test_restore_to_target_dir_writes_the_dump_files(pg_server: PostgresServer, tmp_path: Path) -> None:
    db = unique("files")
    pg_server.psql(f"CREATE DATABASE {db}")
    captured = take_backup(make_source(pg_server, databases=[db]))
    make_source(pg_server).restore(
        restore_entries(captured), RestoreRequest(target_dir=tmp_path, source_info=captured.info)
    )
    written = tmp_path / "postgres" / "databases" / f"{db}.sql"
    assert written.read_bytes() == captured.data(f"postgres/databases/{db}.sql")
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert (tmp_path / "postgres" / "globals.sql").exists()
    drop(pg_server, db)


def test_failing_restore_reports_psql_error(pg_server: PostgresServer) -> None:
    db = unique("broken")
    pg_server.psql(f"CREATE DATABASE {db}")
    captured = take_backup(make_source(pg_server, databases=[db], globals=False))
    path = f"postgres/databases/{db}.sql"
    captured.entries = [
        (e, b"CREATE TABLE ok (x int);\nSELEC broken;\n" if e.path == path else d)
        for e, d in captured.entries
    ]
    with pytest.raises(SourceError, match=r"syntax error"):
        make_source(pg_server).restore(
            restore_entries(captured), RestoreRequest(target_dir=None, source_info=captured.info)
        )
    assert (
        pg_server.psql("SELECT count(*) FROM pg_tables WHERE tablename = 'ok'", db) == "0"
    )  # one transaction
    drop(pg_server, db)


def test_basebackup_restores_into_an_empty_dir_that_starts(pg_server: PostgresServer, tmp_path: Path) -> None:
    db = unique("physical")
    pg_server.psql(f"CREATE DATABASE {db}")
    pg_server.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g", db)
    before = pg_fingerprint(pg_server, db)
    captured = take_backup(make_source(pg_server, method="pg_basebackup"))
    assert captured.paths == ["postgres", "postgres/base.tar"]
    assert captured.info["method"] == "pg_basebackup" and captured.info["start_lsn"]
    pg_server.psql("INSERT INTO t VALUES (-1, 'after the backup')", db)

    # Refused: the running server's live data directory, and a non-empty directory.
    with pytest.raises(SourceError, match="running"):
        make_source(pg_server).restore(
            restore_entries(captured), RestoreRequest(pg_server.data, captured.info)
        )
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(SourceError, match="not empty"):
        make_source(pg_server).restore(
            restore_entries(captured), RestoreRequest(tmp_path / "full", captured.info)
        )

    target = pg_server.base / f"restored-{uuid.uuid4().hex[:6]}"
    make_source(pg_server).restore(restore_entries(captured), RestoreRequest(target, captured.info))
    port = free_port()
    with open(target / "postgresql.auto.conf", "a") as fh:
        fh.write(f"\nport = {port}\narchive_mode = off\n")
    pg_server.pg_ctl_start(target, pg_server.base / f"restored-{port}.log")
    try:
        assert pg_server.psql("SELECT count(*) FROM t", db, port=port) == "20000"
        restored = PostgresServer.__new__(PostgresServer)
        restored.__dict__.update(pg_server.__dict__)
        restored.port = port
        assert pg_fingerprint(restored, db) == before
    finally:
        pg_server.pg_ctl_stop(target, "immediate")
    drop(pg_server, db)


def test_options_reject_unknown_keys_and_secrets_are_not_described(pg_server: PostgresServer) -> None:
    with pytest.raises(ValueError):
        PostgresOptions.model_validate({"type": "postgres", "pasword": "x"})
    described = make_source(pg_server).describe()
    assert described["password_env"] == pg_server.password_env
    assert pg_server.password not in repr(described)
    assert os.environ[pg_server.password_env] == pg_server.password
