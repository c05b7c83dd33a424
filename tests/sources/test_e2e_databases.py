"""Database backups end to end through the CLI, as a new user runs them, against real servers."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from dbservers import MariaDBServer, PostgresServer, mariadb_fingerprint, pg_fingerprint, pg_role

pytestmark = pytest.mark.server


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_postgres_dump_backup_and_in_place_restore(pg_server: PostgresServer, make_deployment: Any) -> None:
    db, owner = unique("e2e"), unique("e2e_owner")
    pg_server.psql(f"CREATE ROLE {owner} LOGIN PASSWORD 'pw'")
    pg_server.psql(f"CREATE DATABASE {db} OWNER {owner}")
    pg_server.psql(
        f"SET ROLE {owner}; CREATE TABLE t (id serial PRIMARY KEY, v text);"
        "INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 5000) g;"
        "CREATE VIEW v AS SELECT count(*) FROM t",
        db,
    )
    before, role_before = pg_fingerprint(pg_server, db), pg_role(pg_server, owner)
    deployment = make_deployment([pg_server.options(databases=[db])])
    backup_id = deployment.create()
    shown = deployment.show(backup_id)
    assert shown["status"] == "Completed", shown

    pg_server.psql("DELETE FROM t WHERE id % 2 = 0; DROP VIEW v", db)
    deployment.ok("backup", "restore", backup_id, "--yes")
    assert pg_fingerprint(pg_server, db) == before
    assert pg_role(pg_server, owner) == role_before
    pg_server.psql(f"DROP DATABASE {db} WITH (FORCE)")


def test_postgres_failing_dump_gives_a_failed_backup_and_no_completed_one(
    pg_server: PostgresServer, make_deployment: Any
) -> None:
    db, reader = unique("e2e_denied"), unique("reader")
    pg_server.psql(
        f"CREATE ROLE {reader} LOGIN PASSWORD {pg_server.psql(f'SELECT quote_literal($${pg_server.password}$$)')}"
    )
    pg_server.psql(f"CREATE DATABASE {db}")
    pg_server.psql(
        f"CREATE TABLE open_t AS SELECT 1 AS x; CREATE TABLE secret_t AS SELECT 2 AS y; GRANT SELECT ON open_t TO {reader}",
        db,
    )
    deployment = make_deployment([pg_server.options(databases=[db], user=reader, globals=False)])
    result = deployment.run("backup", "create", "app")
    assert result.returncode == 1, str(result)
    assert "permission denied" in result.stderr and "secret_t" in result.stderr, str(result)
    assert pg_server.password not in result.stderr + result.stdout
    statuses = [b["status"] for b in deployment.list()]
    assert statuses == ["Failed"], statuses
    pg_server.psql(f"DROP DATABASE {db} WITH (FORCE)")
    pg_server.psql(f"DROP ROLE {reader}")


def test_postgres_restore_to_another_deployment_on_another_server(
    pg_server: PostgresServer, fresh_pg_server: PostgresServer, make_deployment: Any
) -> None:
    db = unique("e2e_to")
    pg_server.psql(f"CREATE DATABASE {db}")
    pg_server.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 3000) g", db)
    before = pg_fingerprint(pg_server, db)
    other = fresh_pg_server.options(databases=[db])
    deployment = make_deployment([pg_server.options(databases=[db])])
    from helpers import dump_yaml, load_yaml

    doc = load_yaml(deployment.config)
    doc["deployments"]["staging"] = {"sources": [other], "destinations": ["local"]}
    dump_yaml(doc, deployment.config)

    backup_id = deployment.create()
    deployment.ok("backup", "restore", backup_id, "--to", "staging", "--yes")
    assert pg_fingerprint(fresh_pg_server, db) == before
    pg_server.psql("INSERT INTO t VALUES (-1, 'only in the original')", db)
    assert pg_fingerprint(fresh_pg_server, db) == before
    pg_server.psql(f"DROP DATABASE {db} WITH (FORCE)")


def test_mariadb_dump_backup_and_in_place_restore(
    mariadb_server: MariaDBServer, make_deployment: Any
) -> None:
    server = mariadb_server
    db = unique("e2e")
    server.root_sql(f"CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT AUTO_INCREMENT PRIMARY KEY, v TEXT)")
    server.root_sql(
        f"INSERT INTO {db}.t (v) SELECT md5(seq) FROM seq_1_to_5000; CREATE VIEW {db}.v AS SELECT count(*) AS n FROM {db}.t"
    )
    before = mariadb_fingerprint(server, db)
    deployment = make_deployment([server.options(databases=[db])])
    backup_id = deployment.create()
    server.root_sql(f"DELETE FROM {db}.t WHERE id % 2 = 0; DROP VIEW {db}.v")
    deployment.ok("backup", "restore", backup_id, "--yes")
    assert mariadb_fingerprint(server, db) == before
    server.root_sql(f"DROP DATABASE {db}")


def test_postgres_icu_database_keeps_its_locale_through_backup_and_restore(
    pg_server: PostgresServer, make_deployment: Any
) -> None:
    """The database facts (one psql call with the version, read through to_jsonb) record an
    ICU database's provider and locale, and the in-place restore recreates it with them."""
    db = unique("e2e_icu")
    pg_server.psql(f"CREATE DATABASE {db} LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' TEMPLATE template0")
    pg_server.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g", db)
    before = pg_fingerprint(pg_server, db)
    deployment = make_deployment([pg_server.options(databases=[db])])
    backup_id = deployment.create()
    info = deployment.show(backup_id)["sources"][0]["info"]
    facts = {d["name"]: d for d in info["databases"]}
    assert (facts[db]["locale_provider"], facts[db]["icu_locale"]) == ("i", "de-DE"), facts
    assert info["server_version_num"] >= 150000
    assert info["row_counts"][db] == {"public.t": 2000}

    pg_server.psql("DELETE FROM t WHERE id > 10", db)
    deployment.ok("backup", "restore", backup_id, "--yes")
    assert pg_fingerprint(pg_server, db) == before
    assert (
        pg_server.psql(f"SELECT datlocprovider, daticulocale FROM pg_database WHERE datname = '{db}'")
        == "i|de-DE"
    )
    pg_server.psql(f"DROP DATABASE {db} WITH (FORCE)")
