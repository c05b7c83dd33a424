"""Logical clones: a pg_dump or mariadb-dump backup restored into new databases with a
new owner account (see clone.api for the whole clone and its guarantees).

* PostgreSQL: a LOGIN role created with a SCRAM-SHA-256 verifier computed here, so the
  plain password never reaches the server, a child's argv or a log; the cloned database
  and every object in it are given to it (`ALTER ... OWNER TO`, never `REASSIGN OWNED`).
* MariaDB: a user `'<NEW>_owner'@'%'` with ALL on the cloned database, created from the
  mysql_native_password hash.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from backupctl.clone.common import (
    MARIADB_IDENT_MAX,
    PG_IDENT_MAX,
    CloneError,
    Made,
    mysql_native_hash,
    new_password,
    restore_into,
    scram_verifier,
    source_doc,
    write_secret_file,
)
from backupctl.errors import BackupctlError
from backupctl.events import InfoEvent, WarningEvent
from backupctl.records import Manifest, SourceRecord
from backupctl.sources.base import Source, source_class

# The function-local imports below pick one SQL dialect's quote_ident/quote_literal (both
# sources define the same names) and load a source module only for the engine in use; none
# of them avoids an import cycle (tests/test_import_cycles.py sees them all).

if TYPE_CHECKING:
    from backupctl.backups.service import Service
    from backupctl.repo.repository import Repository

# ---- logical -----------------------------------------------------------------------------


def clone_logical(
    svc: Service,
    repo: Repository,
    manifest: Manifest,
    src: SourceRecord,
    source: Source,
    info: dict[str, Any],
    name: str,
    database: str | None,
    host: str | None,
    port: int | None,
    result: dict[str, Any],
) -> Made:
    """Restore the backup's databases under new names; fill `result`; return the new
    source's config and how to undo the clone."""
    kind = src["type"]
    originals, rename, owner = _clone_names(kind, manifest, info, name, database)
    overrides = _server_overrides(kind, host, port)
    target_opts = source.options.model_copy(update=overrides)
    target = source_class(kind)(target_opts, svc.reporter)
    same_server = (target_opts.host, target_opts.port) == (source.options.host, source.options.port)  # type: ignore[attr-defined]
    if same_server and set(rename.values()) & set(originals):
        raise CloneError(
            "the clone's database name equals the original's on the same server", hint="pass --database"
        )
    cleanup = _precheck(kind, target, rename, owner)

    password = new_password()
    secret_path = write_secret_file(name, password)

    def undo() -> None:
        try:
            cleanup()
        except BackupctlError as exc:
            svc.reporter.emit(WarningEvent(f"could not remove the partial clone: {exc.message}"))
        secret_path.unlink(missing_ok=True)

    try:
        svc.reporter.emit(
            InfoEvent(
                "cloning "
                + ", ".join(f"{o!r} -> {n!r}" for o, n in rename.items())
                + f" on {target_opts.host}:{target_opts.port}"  # type: ignore[attr-defined]
            )
        )
        extra = {"rename": rename, "only_databases": originals, "skip_globals": same_server}
        restore_into(svc, repo, manifest, src, target, None, extra)
        _give_to_owner(kind, target, info, rename, owner, password)
    except BaseException:
        undo()
        raise
    result.update(
        {
            "kind": "logical",
            "databases": rename,
            "host": target_opts.host,  # type: ignore[attr-defined]
            "port": target_opts.port,  # type: ignore[attr-defined]
            "datadir": None,
            "user": owner,
            "password_file": str(secret_path),
            "password": password,
            "start_command": None,
        }
    )
    return Made(_clone_source_doc(source, overrides, owner, str(secret_path), rename), undo)


def _clone_names(
    kind: str, manifest: Manifest, info: dict[str, Any], name: str, database: str | None
) -> tuple[list[str], dict[str, str], str]:
    """(the backup's databases, {original: clone}, the new owner), each name checked against
    the engine's identifier limit."""
    originals = [str(d["name"]) for d in info.get("databases", [])]
    if not originals:
        raise CloneError(f"backup {manifest['id'][:8]} records no databases to clone")
    if database is not None and len(originals) > 1:
        raise CloneError(
            f"the backup holds {len(originals)} databases; --database names one clone",
            hint=f"leave it out to clone each as <db>_{name}",
        )
    rename = {db: (database if database is not None else f"{db}_{name}") for db in originals}
    limit = PG_IDENT_MAX if kind == "postgres" else MARIADB_IDENT_MAX
    for new in rename.values():
        if not new or len(new.encode()) > limit:
            raise CloneError(
                f"database name {new!r} is empty or longer than {limit} bytes", hint="pass --database"
            )
    owner = f"{name}_owner"
    if len(owner.encode()) > (PG_IDENT_MAX if kind == "postgres" else 80):
        raise CloneError(f"user name {owner!r} is too long", hint="choose a shorter --name")
    return originals, rename, owner


def _server_overrides(kind: str, host: str | None, port: int | None) -> dict[str, Any]:
    """The source options that point the clone at --host/--port (a MariaDB socket would win
    over a host, so it is dropped)."""
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
        if kind == "mariadb":
            overrides["socket"] = None
    if port is not None:
        overrides["port"] = port
    return overrides


def _precheck(kind: str, target: Source, rename: dict[str, str], owner: str) -> Any:
    """Check that the clone's databases and owner do not exist yet; how to remove them again."""
    if kind == "postgres":
        from backupctl.sources.postgres import PostgresSource

        assert isinstance(target, PostgresSource)
        return _precheck_postgres(target, rename, owner)
    from backupctl.sources.mariadb import MariaDBSource

    assert isinstance(target, MariaDBSource)
    return _precheck_mariadb(target, rename, owner)


def _give_to_owner(
    kind: str, target: Source, info: dict[str, Any], rename: dict[str, str], owner: str, password: str
) -> None:
    if kind == "postgres":
        _own_postgres(target, info, rename, owner, password)
    else:
        _own_mariadb(target, info, rename, owner, password)


def _clone_source_doc(
    source: Source, overrides: dict[str, Any], owner: str, password_file: str, rename: dict[str, str]
) -> dict[str, Any]:
    """The clone's source entry: the original's, on the clone's server, as the new owner."""
    doc = source_doc(source)
    doc.pop("password_env", None)
    doc.update(overrides)
    if doc.get("socket") is None:
        doc.pop("socket", None)
    doc.update(
        {
            "user": owner,
            "password_file": password_file,
            "databases": list(rename.values()),
            # The new owner is not a superuser: it cannot read roles/users.
            "globals": False,
        }
    )
    return doc


def _precheck_postgres(target: Any, rename: dict[str, str], owner: str) -> Any:
    from backupctl.sources.postgres_client import quote_ident, quote_literal

    names = ", ".join(quote_literal(n) for n in rename.values())
    existing = [r[0] for r in target.admin_sql(f"SELECT datname FROM pg_database WHERE datname IN ({names})")]
    if existing:
        raise CloneError(
            f"database(s) {', '.join(existing)} already exist on {target.options.host}:{target.options.port};"
            " a clone never overwrites a database",
            hint="pass --database NAME or choose another --name",
        )
    if target.admin_sql(f"SELECT 1 FROM pg_roles WHERE rolname = {quote_literal(owner)}"):
        raise CloneError(f"role {owner!r} already exists", hint="choose another --name")

    def cleanup() -> None:
        drops = "".join(f"DROP DATABASE IF EXISTS {quote_ident(n)} WITH (FORCE);" for n in rename.values())
        for stmt in drops.split(";"):
            if stmt:
                _pg_autocommit(target, stmt)
        _pg_autocommit(target, f"DROP ROLE IF EXISTS {quote_ident(owner)}")

    return cleanup


def _pg_autocommit(target: Any, sql: str) -> None:
    """A statement that cannot run in a transaction block (DROP DATABASE): psql -c, no secret."""
    from backupctl.sources.dbutil import Secrets

    secrets_ = Secrets("backupctl-pg-")
    try:
        env = target.client_env(secrets_)
        target.psql(secrets_, env, sql)
    finally:
        secrets_.cleanup()


# Objects inside the clone owned by any role but the clone's owner, as `ALTER <kind> <name>`
# targets. OIDs below 16384 are the system's (pg_catalog, information_schema, public in
# PG 15+); extension members follow their extension; sequences owned by a column follow the
# table, indexes and row types follow theirs.
_PG_NOT_MINE = """
WITH me AS (SELECT oid FROM pg_roles WHERE rolname = {owner}),
ext AS (SELECT classid, objid FROM pg_depend WHERE deptype = 'e')
SELECT 'SCHEMA ' || quote_ident(n.nspname) FROM pg_namespace n, me
 WHERE n.nspowner <> me.oid AND n.oid >= 16384
   AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_namespace'::regclass AND ext.objid = n.oid)
UNION ALL
SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE ' WHEN 'v' THEN 'VIEW ' WHEN 'm' THEN 'MATERIALIZED VIEW '
       WHEN 'f' THEN 'FOREIGN TABLE ' ELSE 'TABLE ' END || c.oid::regclass::text
  FROM pg_class c, me
 WHERE c.relowner <> me.oid AND c.oid >= 16384 AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
   AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_class'::regclass AND ext.objid = c.oid)
   AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
            AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE ' WHEN 'a' THEN 'AGGREGATE ' ELSE 'FUNCTION ' END
       || p.oid::regprocedure::text
  FROM pg_proc p, me
 WHERE p.proowner <> me.oid AND p.oid >= 16384
   AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_proc'::regclass AND ext.objid = p.oid)
UNION ALL
SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN ' ELSE 'TYPE ' END || t.oid::regtype::text
  FROM pg_type t, me
 WHERE t.typowner <> me.oid AND t.oid >= 16384 AND t.typtype IN ('e', 'd', 'r', 'm', 'c')
   AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
   AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_type'::regclass AND ext.objid = t.oid)
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid
                   AND d.deptype = 'i')
UNION ALL
SELECT 'LARGE OBJECT ' || l.oid FROM pg_largeobject_metadata l, me WHERE l.lomowner <> me.oid
UNION ALL
SELECT 'COLLATION ' || quote_ident(n.nspname) || '.' || quote_ident(c.collname)
  FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace, me
 WHERE c.collowner <> me.oid AND c.oid >= 16384
   AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_collation'::regclass AND ext.objid = c.oid)
UNION ALL
SELECT 'CONVERSION ' || quote_ident(n.nspname) || '.' || quote_ident(c.conname)
  FROM pg_conversion c JOIN pg_namespace n ON n.oid = c.connamespace, me
 WHERE c.conowner <> me.oid AND c.oid >= 16384
   AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_conversion'::regclass AND ext.objid = c.oid)
UNION ALL
SELECT 'TEXT SEARCH CONFIGURATION ' || c.oid::regconfig::text FROM pg_ts_config c, me
 WHERE c.cfgowner <> me.oid AND c.oid >= 16384
   AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_ts_config'::regclass AND ext.objid = c.oid)
UNION ALL
SELECT 'TEXT SEARCH DICTIONARY ' || d.oid::regdictionary::text FROM pg_ts_dict d, me
 WHERE d.dictowner <> me.oid AND d.oid >= 16384
   AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_ts_dict'::regclass AND ext.objid = d.oid)
UNION ALL
SELECT 'OPERATOR ' || o.oid::regoperator::text FROM pg_operator o, me
 WHERE o.oprowner <> me.oid AND o.oid >= 16384
   AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_operator'::regclass AND ext.objid = o.oid)
UNION ALL
SELECT 'OPERATOR FAMILY ' || quote_ident(n.nspname) || '.' || quote_ident(f.opfname) || ' USING '
       || quote_ident(a.amname)
  FROM pg_opfamily f JOIN pg_namespace n ON n.oid = f.opfnamespace JOIN pg_am a ON a.oid = f.opfmethod, me
 WHERE f.opfowner <> me.oid AND f.oid >= 16384
   AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_opfamily'::regclass AND ext.objid = f.oid)
UNION ALL
SELECT 'OPERATOR CLASS ' || quote_ident(n.nspname) || '.' || quote_ident(c.opcname) || ' USING '
       || quote_ident(a.amname)
  FROM pg_opclass c JOIN pg_namespace n ON n.oid = c.opcnamespace JOIN pg_am a ON a.oid = c.opcmethod, me
 WHERE c.opcowner <> me.oid AND c.oid >= 16384
   AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_opclass'::regclass AND ext.objid = c.oid)
UNION ALL
SELECT 'STATISTICS ' || quote_ident(n.nspname) || '.' || quote_ident(s.stxname)
  FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace, me
 WHERE s.stxowner <> me.oid
"""

# What is still owned by another role once the ALTERs ran (kinds a non-superuser cannot own
# or that need more than ALTER ... OWNER: event triggers, foreign-data wrappers and servers,
# publications, subscriptions), from the ownership dependencies recorded for this database.
_PG_LEFT_OVER = """
SELECT pg_describe_object(d.classid, d.objid, d.objsubid) || ' (owned by ' || pg_get_userbyid(d.refobjid) || ')'
  FROM pg_shdepend d
 WHERE d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND d.deptype = 'o' AND d.refclassid = 'pg_authid'::regclass
   AND d.refobjid <> (SELECT oid FROM pg_roles WHERE rolname = {owner})
 ORDER BY 1
"""


def _own_postgres(
    target: Any, info: dict[str, Any], rename: dict[str, str], owner: str, password: str
) -> None:
    """Create the owner role, give it each cloned database and everything inside it.

    Objects owned by any other role (the original owner, other application roles, the
    superuser that restored them) are given to the new owner with `ALTER ... OWNER TO`, so
    it can dump its whole database (large objects included). What it still cannot own is
    named in a warning. The role has CREATEDB, so the clone's deployment can restore its own
    backups (a restore drops and creates the database).
    """
    from backupctl.sources.postgres_client import quote_ident, quote_literal

    verifier = scram_verifier(password)
    role = quote_ident(owner)
    # CREATEDB: restoring the clone's own backups drops and creates its database.
    target.admin_sql(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD {quote_literal(verifier)}", secret=verifier)
    for clone in rename.values():
        target.admin_sql(f"ALTER DATABASE {quote_ident(clone)} OWNER TO {role}")
        # Runs connected to the clone: pg_namespace, pg_class, ... are the clone's own catalogs.
        targets = [r[0] for r in target.admin_sql(_PG_NOT_MINE.format(owner=quote_literal(owner)), db=clone)]
        if targets:
            target.admin_sql("".join(f"ALTER {t} OWNER TO {role};\n" for t in targets), db=clone)
        left = [r[0] for r in target.admin_sql(_PG_LEFT_OVER.format(owner=quote_literal(owner)), db=clone)]
        if left:
            target.reporter.emit(
                WarningEvent(
                    f"in the clone {clone!r}, {owner!r} does not own: {'; '.join(left)}. A backup made as"
                    f" {owner!r} fails on what it cannot read; give these to it, or drop them"
                )
            )


def _precheck_mariadb(target: Any, rename: dict[str, str], owner: str) -> Any:
    from backupctl.sources.mariadb_client import quote_ident, quote_literal

    names = ", ".join(quote_literal(n) for n in rename.values())
    existing = [
        r[0]
        for r in target.admin_sql(
            f"SELECT schema_name FROM information_schema.schemata WHERE schema_name IN ({names})"
        )
    ]
    if existing:
        raise CloneError(
            f"database(s) {', '.join(existing)} already exist on {target.options.host}:{target.options.port};"
            " a clone never overwrites a database",
            hint="pass --database NAME or choose another --name",
        )
    if target.admin_sql(f"SELECT 1 FROM mysql.user WHERE user = {quote_literal(owner)}"):
        raise CloneError(f"user {owner!r} already exists", hint="choose another --name")

    def cleanup() -> None:
        sql = "".join(f"DROP DATABASE IF EXISTS {quote_ident(n)};" for n in rename.values())
        sql += f"DROP USER IF EXISTS {quote_literal(owner)}@'%';"
        target.admin_sql(sql)

    return cleanup


def _grant_pattern(name: str) -> str:
    """A database name for GRANT, where '_' and '%' are wildcards unless escaped."""
    from backupctl.sources.mariadb_client import quote_ident

    return quote_ident(name.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%"))


def _own_mariadb(
    target: Any, info: dict[str, Any], rename: dict[str, str], owner: str, password: str
) -> None:
    from backupctl.sources.mariadb_client import quote_literal

    user = f"{quote_literal(owner)}@'%'"
    if info.get("flavor", "mariadb") == "mariadb":
        create = f"CREATE USER {user} IDENTIFIED BY PASSWORD {quote_literal(mysql_native_hash(password))};"
        secret = None
    else:
        create = f"CREATE USER {user} IDENTIFIED BY {quote_literal(password)};"
        secret = password
    grants = "".join(f"GRANT ALL PRIVILEGES ON {_grant_pattern(n)}.* TO {user};" for n in rename.values())
    target.admin_sql(create + grants, secret=secret)
    if info.get("flavor", "mariadb") == "mariadb":
        # The clone's stored routines become the new owner's (MariaDB keeps them in mysql.proc),
        # so it can dump them (SHOW CREATE FUNCTION needs the definer or mysql.proc access) and
        # they no longer run with the original definer's rights. Only the clone's rows change.
        definer = quote_literal(f"{owner}@%")
        target.admin_sql(
            "".join(
                f"UPDATE mysql.proc SET definer = {definer} WHERE db = {quote_literal(n)};"
                for n in rename.values()
            )
        )
