"""Clone a database backup into a new deployment, leaving the original untouched.

Logical backups (pg_dump, mariadb-dump) are restored into new databases (default name
`<db>_<NEW>`, or `--database` for a one-database backup) on the original server or on
`host`/`port`. A new owner account `<NEW>_owner` gets a newly generated password:

* PostgreSQL: a LOGIN role created with a SCRAM-SHA-256 verifier computed here, so the
  plain password never reaches the server, a child's argv or a log. The cloned database
  and, inside the clone only, every object in it (whichever role owned it: the original
  owner, other roles, large objects included) are given to it (`ALTER ... OWNER TO`, never
  `REASSIGN OWNED`, which would also reach shared objects such as the original database);
  what it still cannot own is named in a warning.
* MariaDB: a user `'<NEW>_owner'@'%'` with ALL on the cloned database (MariaDB: created
  from the mysql_native_password hash, so again no plain password on the wire).

The password is stored in a 0600 file under `$XDG_CONFIG_HOME/backupctl/secrets/` and
the new deployment (same destinations, policy and settings, `user: <NEW>_owner`,
`password_file: ...`) is appended to the config file with comments kept.

Physical backups (pg_basebackup, mariabackup), as they were or at a moment in time
(`--to-time` & co.), become a new data directory with a newly generated password for the
deployment's user: engine.clone_physical.

Every SQL statement goes through stdin (`admin_sql`), all SQL text with a secret is
redacted from errors. Nothing here prints: events go to the service's reporter.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupctl.config.paths import config_dir
from backupctl.engine.restorer import Prefetcher
from backupctl.errors import BackupctlError, ConfigError
from backupctl.events import Finished, InfoEvent, Started, WarningEvent
from backupctl.sources.base import Source, source_class

if TYPE_CHECKING:
    from backupctl.engine.pitr import Target
    from backupctl.engine.service import Service
    from backupctl.repo.repository import Repository

DB_TYPES = ("postgres", "mariadb")
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")
PG_IDENT_MAX = 63
MARIADB_IDENT_MAX = 64


class CloneError(BackupctlError):
    """A clone could not be made (bad name, existing database, unsupported backup...)."""

    kind = "clone"


# ---- secrets ---------------------------------------------------------------------------


def new_password() -> str:
    """32 URL-safe characters (192 bits): no quoting problems in any client or file."""
    return secrets.token_urlsafe(24)


def scram_verifier(password: str, *, iterations: int = 4096, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677)."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def mysql_native_hash(password: str) -> str:
    """The mysql_native_password hash: '*' + upper hex SHA1(SHA1(password))."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


def secrets_dir() -> Path:
    return config_dir() / "secrets"


def secret_file_path(name: str) -> Path:
    return secrets_dir() / f"{name}.password"


def write_secret_file(name: str, password: str) -> Path:
    """Create secrets/<name>.password with mode 0600 (directory 0700); never overwrite."""
    directory = secrets_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    path = secret_file_path(name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CloneError(
            f"a secrets file {path} already exists",
            hint="choose another --name, or remove the file if it belongs to a deleted clone",
        ) from None
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---- the clone -------------------------------------------------------------------------


def clone_backup(
    svc: Service,
    id_prefix: str | None,
    *,
    name: str,
    database: str | None = None,
    host: str | None = None,
    port: int | None = None,
    datadir: Path | None = None,
    destination: str | None = None,
    deployment: str | None = None,
    moment: Target | None = None,
) -> dict[str, Any]:
    """Create deployment `name` from a backup; returns what was made (never the password).

    With `moment` (a point-in-time target) the clone is `deployment` (or the deployment of
    backup `id_prefix`, restored from that backup) as it was at that moment: see
    engine.clone_physical.

    Keys: name, backup_id, from_deployment, method, kind (logical|physical), databases
    ({original: clone}), host, port, datadir, user, password_file, config, uploaded,
    start_command, with `moment` also target_moment and pitr_backup (= backup_id, the base
    backup), and `password` — the caller shows it once and must not log it.
    """
    from backupctl.engine import clone_physical as physical

    reporter = svc.reporter
    if not NAME_RE.match(name):
        raise CloneError(
            f"invalid clone name {name!r}",
            hint="start with a letter; letters, digits, '_' and '-' only; at most 40 characters",
        )
    if name in svc.config.deployments:
        raise ConfigError(f"a deployment named {name!r} already exists", hint="choose another --name")
    config_path = svc.config.path
    if config_path is None:
        raise ConfigError("the configuration was not read from a file, so the clone cannot be added to it")

    restored: dict[str, Any] | None = None
    created = False
    if moment is not None:
        for flag, value in (("--database", database), ("--host", host), ("--destination", destination)):
            if value is not None:
                raise CloneError(
                    f"{flag} does not apply to a point-in-time clone",
                    hint="it restores a physical backup and the deployment's archived WAL/binary logs "
                    "from its primary destination into --datadir",
                )
        datadir = physical.new_datadir(
            datadir, "a point-in-time clone is a new data directory: --datadir is required"
        )
        created = not datadir.exists()
        restored = physical.restore_moment(
            svc, id_prefix, name=name, deployment=deployment, moment=moment, datadir=datadir
        )
        id_prefix = str(restored["backup"])
    elif id_prefix is None:
        raise CloneError(
            "give a backup ID to clone",
            hint="or --deployment D with --to-time/--to-lsn/--to-name/--to-position for a point-in-time clone",
        )
    elif deployment is not None:
        raise CloneError(
            "--deployment applies with --to-time/--to-lsn/--to-name/--to-position",
            hint="a backup ID alone names the backup to clone",
        )

    try:
        record, repo, manifest = svc._completed(id_prefix, destination)
        orig_name = record["deployment"]
        orig_dep = svc.config.deployments.get(orig_name)
        position, src = _db_source(svc, record, manifest)
        source = svc._restore_source(src, orig_dep, position)
        info: dict[str, Any] = dict(src.get("info", {}))
        method = str(info.get("method", source.method))

        uploaded = _uploaded(svc, record)
        if not uploaded:
            reporter.emit(
                InfoEvent(
                    f"backup {record['short_id']} has not been uploaded to a remote destination: it can be cloned "
                    f"on this machine only (run `backupctl backup upload {record['short_id']}` to clone it elsewhere)"
                )
            )
        dest_names = (
            list(orig_dep.destinations) if orig_dep else [destination or svc.primary_destination(orig_name)]
        )

        result: dict[str, Any] = {
            "name": name,
            "backup_id": record["id"],
            "from_deployment": orig_name,
            "method": method,
            "uploaded": uploaded,
            "config": str(config_path),
            "destinations": dest_names,
            "target_moment": None,
            "pitr_backup": None,
        }
        description = f"clone of {orig_name} from backup {record['short_id']}"
        if restored is not None and datadir is not None:
            result.update(target_moment=restored["target_moment"], pitr_backup=record["id"])
            description = f"clone of {orig_name} at {restored['target_moment']}"
            doc = physical.finish(svc, src, source, datadir, port, result, created=created, recovery=True)
        elif method in physical.PHYSICAL:
            if database is not None:
                raise CloneError(
                    "--database applies to logical backups; a physical clone copies every database"
                )
            if host is not None:
                raise CloneError(
                    "--host applies to logical backups; a physical clone is a data directory on this machine"
                )
            datadir = physical.new_datadir(datadir, f"a {method} backup is cloned into a new data directory")
            doc = physical.clone_physical(svc, repo, manifest, src, source, datadir, port, result)
        else:
            if datadir is not None:
                raise CloneError("--datadir applies to physical backups; a logical clone is a new database")
            doc = _clone_logical(svc, repo, manifest, src, source, info, name, database, host, port, result)
    except BaseException:
        if restored is not None and datadir is not None:
            physical.remove_partial(datadir, created)
        raise

    mapping: dict[str, Any] = {
        "description": description,
        "sources": [doc],
        "destinations": dest_names,
    }
    if orig_dep is not None:
        if orig_dep.policy is not None:
            mapping["policy"] = orig_dep.policy
        if not orig_dep.upload:
            mapping["upload"] = False
    from backupctl.policy import yaml_edit

    try:
        source_class(doc["type"]).Options.model_validate(doc)
        yaml_edit.add_deployment(config_path, name, mapping)
    except BaseException:
        if "cleanup" in result:
            result.pop("cleanup")()
        raise
    result.pop("cleanup", None)
    reporter.emit(InfoEvent(f"added deployment {name!r} to {config_path}"))
    return result


def _db_source(svc: Service, record: dict[str, Any], manifest: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(position, stored source) of the backup's one database source; others are warned about."""
    db_sources = [(i, s) for i, s in enumerate(manifest["sources"]) if s["type"] in DB_TYPES]
    if not db_sources:
        raise CloneError(
            f"backup {record['short_id']} holds no PostgreSQL or MariaDB database; clone needs one",
            hint="use `backupctl backup restore --target DIR` for files",
        )
    if len(db_sources) > 1:
        raise CloneError(
            f"backup {record['short_id']} holds {len(db_sources)} database sources; clone supports one"
        )
    for s in manifest["sources"]:
        if s["type"] not in DB_TYPES:
            svc.reporter.emit(
                WarningEvent(f"the {s['method']} source of the backup is not cloned (databases only)")
            )
    return db_sources[0]


def _uploaded(svc: Service, record: dict[str, Any]) -> bool:
    """True when a copy of the backup is complete in a non-local destination."""
    for dest_name, state in (record.get("destinations") or {}).items():
        options = svc.config.destinations.get(dest_name)
        if options is not None and options.type != "local" and state.get("state") in ("uploaded", "stored"):
            return True
    return False


def restore_into(
    svc: Service,
    repo: Repository,
    manifest: dict[str, Any],
    src: dict[str, Any],
    source: Source,
    target_dir: Path | None,
    extra_info: dict[str, Any],
) -> None:
    """Restore one stored source into `source` (what Service.restore_backup does per source)."""
    repo.load_index()
    svc.reporter.emit(Started("restore", manifest["id"], int(src.get("bytes", 0))))
    prefetcher = Prefetcher(repo)
    try:
        svc.restore_stored_source(repo, manifest, src, source, prefetcher, target_dir, extra_info)
    finally:
        prefetcher.close()
    svc.reporter.emit(Finished("restore", manifest["id"]))


def source_doc(source: Source) -> dict[str, Any]:
    """The original source's config entry as the user wrote it (plus its type)."""
    doc: dict[str, Any] = source.options.model_dump(mode="json", exclude_unset=True)
    doc["type"] = source.options.type
    return doc


# ---- logical -----------------------------------------------------------------------------


def _clone_logical(
    svc: Service,
    repo: Repository,
    manifest: dict[str, Any],
    src: dict[str, Any],
    source: Source,
    info: dict[str, Any],
    name: str,
    database: str | None,
    host: str | None,
    port: int | None,
    result: dict[str, Any],
) -> dict[str, Any]:
    kind = src["type"]
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

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
        if kind == "mariadb":
            overrides["socket"] = None
    if port is not None:
        overrides["port"] = port
    target_opts = source.options.model_copy(update=overrides)
    target = source_class(kind)(target_opts, svc.reporter)
    same_server = (target_opts.host, target_opts.port) == (source.options.host, source.options.port)  # type: ignore[attr-defined]
    if same_server and set(rename.values()) & set(originals):
        raise CloneError(
            "the clone's database name equals the original's on the same server", hint="pass --database"
        )

    if kind == "postgres":
        from backupctl.sources.postgres import PostgresSource

        assert isinstance(target, PostgresSource)
        cleanup = _precheck_postgres(target, rename, owner)
    else:
        from backupctl.sources.mariadb import MariaDBSource

        assert isinstance(target, MariaDBSource)
        cleanup = _precheck_mariadb(target, rename, owner)

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
        if kind == "postgres":
            _own_postgres(target, info, rename, owner, password)  # type: ignore[arg-type]
        else:
            _own_mariadb(target, info, rename, owner, password)  # type: ignore[arg-type]
    except BaseException:
        undo()
        raise
    result["cleanup"] = undo
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
    doc = source_doc(source)
    doc.pop("password_env", None)
    doc.update(overrides)
    if doc.get("socket") is None:
        doc.pop("socket", None)
    doc.update(
        {
            "user": owner,
            "password_file": str(secret_path),
            "databases": list(rename.values()),
            # The new owner is not a superuser: it cannot read roles/users.
            "globals": False,
        }
    )
    return doc


def _precheck_postgres(target: Any, rename: dict[str, str], owner: str) -> Any:
    from backupctl.sources.postgres import quote_ident, quote_literal

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
        env = target._env(secrets_)
        target._psql(secrets_, env, sql)
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
    from backupctl.sources.postgres import quote_ident, quote_literal

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
    from backupctl.sources.mariadb import quote_ident, quote_literal

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
    from backupctl.sources.mariadb import quote_ident

    return quote_ident(name.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%"))


def _own_mariadb(
    target: Any, info: dict[str, Any], rename: dict[str, str], owner: str, password: str
) -> None:
    from backupctl.sources.mariadb import quote_literal

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
