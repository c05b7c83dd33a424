"""MariaDB source against a real throwaway server, driven through the Source interface."""

from __future__ import annotations

import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import IO

import pytest
from dbservers import (
    MariaDBServer,
    child_processes,
    mariadb_fingerprint,
    restore_entries,
    take_backup,
)

from backupctl.errors import SourceError
from backupctl.events import CollectingReporter
from backupctl.sources.base import Entry, RestoreRequest, source_class
from backupctl.sources.mariadb import MariaDBSource
from backupctl.sources.mariadb_client import MariaDBOptions

pytestmark = pytest.mark.server


def make_source(server: MariaDBServer, **overrides: object) -> MariaDBSource:
    source = source_class("mariadb")(MariaDBOptions.model_validate(server.options(**overrides)))
    assert isinstance(source, MariaDBSource)
    return source


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def populate(server: MariaDBServer, db: str, user: str) -> None:
    server.root_sql(f"CREATE DATABASE {db} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    server.root_sql(
        """
        CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(100) NOT NULL, born DATE,
                                balance DECIMAL(12,2), doc JSON, photo BLOB, note TEXT CHARACTER SET latin1) ENGINE=InnoDB;
        INSERT INTO customers (name, born, balance, doc, photo, note)
            SELECT concat('name ', seq, ' \\u00e9 \\t "q" ', char(0xF09F9880 USING utf8mb4)), date('2000-01-01') + INTERVAL seq DAY,
                   seq * 1.25, json_object('i', seq), unhex(md5(seq)), concat('n\\'', seq)
            FROM seq_1_to_2000;
        CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer INT, total DECIMAL(10,3), at DATETIME(6),
                             FOREIGN KEY (customer) REFERENCES customers(id)) ENGINE=InnoDB;
        INSERT INTO orders (customer, total, at) SELECT 1 + seq % 2000, seq / 3, '2024-01-01' + INTERVAL seq MINUTE
            FROM seq_1_to_5000;
        CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, msg VARCHAR(100)) ENGINE=InnoDB;
        CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit (msg) VALUES (concat('order ', NEW.id));
        INSERT INTO orders (customer, total, at) VALUES (1, 1, now());
        CREATE VIEW big_spenders AS SELECT c.name, sum(o.total) AS spent FROM customers c
            JOIN orders o ON o.customer = c.id GROUP BY c.name HAVING sum(o.total) > 100;
        CREATE FUNCTION add_tax(amount DECIMAL(10,2)) RETURNS DECIMAL(10,2) DETERMINISTIC RETURN amount * 1.2;
        CREATE PROCEDURE count_orders(OUT n INT) SELECT count(*) INTO n FROM orders;
        CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE DO DELETE FROM audit;
        CREATE SEQUENCE invoice_no START WITH 1000;
        SELECT nextval(invoice_no) FROM seq_1_to_17;
        """,
        db,
    )
    server.root_sql(
        f"CREATE USER '{user}'@'%' IDENTIFIED BY 'userpw'; GRANT SELECT, INSERT ON {db}.* TO '{user}'@'%'"
    )


def grants(server: MariaDBServer, user: str) -> str:
    try:
        return server.root_sql(f"SHOW GRANTS FOR '{user}'@'%'")
    except RuntimeError:
        return ""


def test_logical_round_trip_recreates_database_and_users(mariadb_server: MariaDBServer) -> None:
    server = mariadb_server
    db, user = unique("shop"), unique("u")
    populate(server, db, user)
    before = mariadb_fingerprint(server, db)
    grants_before = grants(server, user)
    assert before["table customers"].startswith("2000\t")
    assert "nextval" not in before  # sequences are tables here: compared with their rows

    captured = take_backup(make_source(server, databases=[db]))
    assert captured.paths == [
        "mariadb",
        "mariadb/globals.sql",
        "mariadb/databases",
        f"mariadb/databases/{db}.sql",
    ]
    assert captured.info["server_version"] == server.version
    dump = captured.data(f"mariadb/databases/{db}.sql")
    assert b"INSERT INTO `customers`" in dump and b"CREATE DATABASE" not in dump and b"USE `" not in dump

    server.root_sql(f"DROP DATABASE {db}; DROP USER '{user}'@'%'")
    make_source(server).restore(
        restore_entries(captured), RestoreRequest(target_dir=None, source_info=captured.info)
    )
    assert mariadb_fingerprint(server, db) == before
    assert grants(server, user) == grants_before
    assert server.root_sql(
        f"SELECT default_collation_name FROM information_schema.schemata WHERE schema_name = '{db}'"
    ) == ("utf8mb4_unicode_ci")
    # Restore over a changed database, and the backup user still logs in with its own password.
    server.root_sql("DELETE FROM orders WHERE id < 100; CREATE TABLE junk (x INT)", db)
    make_source(server).restore(
        restore_entries(captured), RestoreRequest(target_dir=None, source_info=captured.info)
    )
    assert mariadb_fingerprint(server, db) == before
    server.root_sql(f"DROP DATABASE {db}; DROP USER '{user}'@'%'")


def test_all_databases_and_clone_under_a_new_name(mariadb_server: MariaDBServer) -> None:
    server = mariadb_server
    one, two = unique("alpha"), unique("beta")
    for name in (one, two):
        server.root_sql(f"CREATE DATABASE {name}; CREATE TABLE {name}.t (id INT PRIMARY KEY, v TEXT)")
        server.root_sql(f"INSERT INTO {name}.t SELECT seq, md5(concat(seq, '{name}')) FROM seq_1_to_300")
        server.root_sql(f"CREATE VIEW {name}.v AS SELECT count(*) AS n FROM {name}.t")
    fp_one = mariadb_fingerprint(server, one)
    captured = take_backup(make_source(server, databases="all"))
    names = [d["name"] for d in captured.info["databases"]]
    assert {one, two} <= set(names) and not {
        "mysql",
        "sys",
        "information_schema",
        "performance_schema",
    } & set(names)

    clone = unique("clone")
    info = {**captured.info, "only_databases": [one], "rename": {one: clone}}
    make_source(server).restore(restore_entries(captured), RestoreRequest(target_dir=None, source_info=info))
    assert mariadb_fingerprint(server, clone) == fp_one
    assert server.root_sql(f"SELECT n FROM {clone}.v") == "300"
    server.root_sql(f"INSERT INTO {one}.t VALUES (999, 'later')")
    assert server.root_sql(f"SELECT n FROM {clone}.v") == "300"  # the view reads the clone's table
    assert not server.root_sql(f"SHOW DATABASES LIKE '{two}\\_%'").count("clone")
    for name in (one, two, clone):
        server.root_sql(f"DROP DATABASE {name}")


def test_dump_while_a_writer_inserts_restores_consistently(mariadb_server: MariaDBServer) -> None:
    server = mariadb_server
    db = unique("busy")
    server.root_sql(
        f"CREATE DATABASE {db}; CREATE TABLE {db}.a (id INT PRIMARY KEY) ENGINE=InnoDB;"
        f"CREATE TABLE {db}.b (id INT PRIMARY KEY) ENGINE=InnoDB;"
        f"CREATE TABLE {db}.filler ENGINE=InnoDB AS SELECT seq AS id, repeat(md5(seq), 8) AS v FROM seq_1_to_60000"
    )
    assert server.client is not None
    writer = subprocess.Popen(
        [server.client, "--no-defaults", f"--socket={server.socket}", "-uroot", db],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    stop = threading.Event()

    def write() -> None:
        assert writer.stdin is not None
        i = 0
        while not stop.is_set():
            i += 1
            writer.stdin.write(f"BEGIN; INSERT INTO b VALUES ({i}); INSERT INTO a VALUES ({i}); COMMIT;\n")
            writer.stdin.flush()
            time.sleep(0.001)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        time.sleep(0.5)
        captured = take_backup(make_source(server, databases=[db], globals=False))
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join()
        assert writer.stdin is not None
        writer.stdin.close()
        writer.wait()
    total = int(server.root_sql(f"SELECT count(*) FROM {db}.a"))
    clone = unique("busy_restored")
    info = {**captured.info, "rename": {db: clone}}
    make_source(server).restore(restore_entries(captured), RestoreRequest(target_dir=None, source_info=info))
    count_a = int(server.root_sql(f"SELECT count(*) FROM {clone}.a"))
    missing = server.root_sql(
        f"SELECT (SELECT count(*) FROM {clone}.a WHERE id NOT IN (SELECT id FROM {clone}.b))"
        f" + (SELECT count(*) FROM {clone}.b WHERE id NOT IN (SELECT id FROM {clone}.a))"
    )
    assert 0 < count_a < total, "the dump should fall in the middle of the writes"
    assert missing == "0"
    server.root_sql(f"DROP DATABASE {db}; DROP DATABASE {clone}")


def test_server_killed_mid_dump_fails_with_the_tools_message(fresh_mariadb_server: MariaDBServer) -> None:
    server = fresh_mariadb_server
    server.root_sql(
        "CREATE DATABASE victim; CREATE TABLE victim.big ENGINE=InnoDB AS"
        " SELECT seq AS id, repeat(md5(seq), 10) AS v FROM seq_1_to_200000"
    )
    source = make_source(server, databases=["victim"])

    def kill_during_dump(entry: Entry, stream: IO[bytes]) -> None:
        if entry.path.endswith("victim.sql"):
            assert stream.read(1 << 16)
            server.kill()

    with pytest.raises(SourceError) as err:
        take_backup(source, during_read=kill_during_dump)
    assert "mariadb-dump" in str(err.value) and "victim" in str(err.value)
    assert "Lost connection" in str(err.value) or "Error" in str(err.value)
    assert server.password not in str(err.value)


def test_password_only_in_a_private_option_file_given_first(mariadb_server: MariaDBServer) -> None:
    server = mariadb_server
    db = unique("secret")
    server.root_sql(
        f"CREATE DATABASE {db}; CREATE TABLE {db}.t ENGINE=InnoDB AS SELECT seq FROM seq_1_to_1000000"
    )  # a dump well beyond the 1 MiB pipe: the tool is still running when the first KiB is read
    seen: list[list[str]] = []
    envs: list[dict[str, str]] = []
    option_files: list[Path] = []

    def inspect(entry: Entry, stream: IO[bytes]) -> None:
        assert stream.read(1024)
        for _pid, argv, env in child_processes():
            if argv[0].endswith("mariadbd"):
                continue  # the test server itself
            seen.append(argv)
            envs.append(env)
            assert argv[1].startswith("--defaults-extra-file="), argv
            path = Path(argv[1].split("=", 1)[1])
            option_files.append(path)
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    take_backup(make_source(server, databases=[db]), during_read=inspect)
    assert any("mariadb-dump" in argv[0] for argv in seen)
    for argv, env in zip(seen, envs, strict=True):
        assert not any(server.password in arg for arg in argv)
        assert not any(server.password in value for value in env.values())
    assert option_files and not any(p.exists() for p in option_files)
    server.root_sql(f"DROP DATABASE {db}")


def test_wrong_password_fails_without_revealing_it(
    mariadb_server: MariaDBServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_source(mariadb_server)  # sets the right password in the environment...
    monkeypatch.setenv(mariadb_server.password_env, "wrong\"pass'word")  # ...replaced here
    with pytest.raises(SourceError, match="Access denied") as err:
        take_backup(source)
    assert "wrong" not in str(err.value).replace("wrong password", "")


def test_restore_into_older_version_is_refused_and_newer_warns(mariadb_server: MariaDBServer) -> None:
    server = mariadb_server
    db = unique("versions")
    server.root_sql(f"CREATE DATABASE {db}; CREATE TABLE {db}.t (x INT); INSERT INTO {db}.t VALUES (1)")
    captured = take_backup(make_source(server, databases=[db]))
    server.root_sql(f"INSERT INTO {db}.t VALUES (2)")
    major, minor = (int(p) for p in server.version.split(".")[:2])
    newer = {**captured.info, "server_version": f"{major}.{minor + 1}.0-MariaDB"}
    with pytest.raises(SourceError, match="older version"):
        make_source(server).restore(
            restore_entries(captured), RestoreRequest(target_dir=None, source_info=newer)
        )
    assert server.root_sql(f"SELECT count(*) FROM {db}.t") == "2"
    older = {**captured.info, "server_version": f"{major}.{minor - 1}.3-MariaDB"}
    reporter = CollectingReporter()
    make_source(server).restore(restore_entries(captured), RestoreRequest(None, older, reporter=reporter))
    assert any("newer" in w.message for w in reporter.warnings)
    assert server.root_sql(f"SELECT count(*) FROM {db}.t") == "1"
    server.root_sql(f"DROP DATABASE {db}")


def test_mariabackup_full_and_incrementals_restore_into_a_datadir_that_starts(
    mariadb_server: MariaDBServer, tmp_path: Path
) -> None:
    server = mariadb_server
    db = unique("phys")
    server.root_sql(f"CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, v TEXT) ENGINE=InnoDB")
    server.root_sql(f"INSERT INTO {db}.t SELECT seq, md5(seq) FROM seq_1_to_20000")

    full_source = make_source(server, method="mariabackup")
    assert full_source.supports_incremental
    full = take_backup(full_source)
    assert full.paths == ["mariadb", "mariadb/mariabackup.xbstream"]
    assert full.info["backup_type"] == "full" and full.info["to_lsn"] > 0
    fp_full = mariadb_fingerprint(server, db)

    server.root_sql(
        f"INSERT INTO {db}.t SELECT seq, 'inc1' FROM seq_20001_to_25000; DELETE FROM {db}.t WHERE id <= 10"
    )
    inc1_source = make_source(server, method="mariabackup")
    inc1_source.set_parent(full.info)
    inc1 = take_backup(inc1_source)
    assert inc1.info["backup_type"] == "incremental" and inc1.info["from_lsn"] == full.info["to_lsn"]
    assert len(inc1.data("mariadb/mariabackup.xbstream")) < len(full.data("mariadb/mariabackup.xbstream"))

    server.root_sql(
        f"UPDATE {db}.t SET v = 'inc2' WHERE id % 7 = 0; CREATE TABLE {db}.extra AS SELECT 42 AS answer"
    )
    inc2_source = make_source(server, method="mariabackup")
    inc2_source.set_parent(inc1.info)
    inc2 = take_backup(inc2_source)
    fp_inc2 = mariadb_fingerprint(server, db)
    server.root_sql(f"DELETE FROM {db}.t")  # after the last backup: must not be restored

    # Refused: the running server's own datadir, and a broken chain.
    with pytest.raises(SourceError, match="not empty|running"):
        make_source(server, method="mariabackup").restore_chain(
            [(full.info, restore_entries(full))], RestoreRequest(server.data, full.info)
        )
    with pytest.raises(SourceError, match="broken chain"):
        make_source(server, method="mariabackup").restore_chain(
            [(full.info, restore_entries(full)), ({**inc2.info, "from_lsn": 1}, restore_entries(inc2))],
            RestoreRequest(tmp_path / "broken", full.info),
        )

    for chain, expected in (
        ([full], fp_full),
        ([full, inc1, inc2], fp_inc2),
    ):
        target = server.base / f"restored-{uuid.uuid4().hex[:6]}"
        make_source(server, method="mariabackup").restore_chain(
            [(c.info, restore_entries(c)) for c in chain], RestoreRequest(target, chain[-1].info)
        )
        restored = MariaDBServer()
        try:
            restored.start_datadir(target)
            assert mariadb_fingerprint(restored, db) == expected
        finally:
            restored.stop()
    server.root_sql(f"DROP DATABASE {db}")


def test_incremental_without_usable_parent_takes_a_full_backup(mariadb_server: MariaDBServer) -> None:
    source = make_source(mariadb_server, method="mariabackup")
    reporter = CollectingReporter()
    source.reporter = reporter
    source.set_parent({"method": "mariadb-dump"})
    captured = take_backup(source)
    assert captured.info["backup_type"] == "full"
    assert any("full backup" in getattr(e, "message", "") for e in reporter.events)
