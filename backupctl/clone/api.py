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
deployment's user: clone.physical.

Every SQL statement goes through stdin (`admin_sql`), all SQL text with a secret is
redacted from errors. Nothing here prints: events go to the service's reporter.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupctl.clone import physical
from backupctl.clone.common import DB_TYPES, NAME_RE, CloneError
from backupctl.clone.logical import clone_logical
from backupctl.errors import ConfigError
from backupctl.events import InfoEvent, WarningEvent
from backupctl.pitr.common import PHYSICAL_METHODS, remove_partial
from backupctl.policy import yaml_edit
from backupctl.records import BackupSummary, Manifest, SourceRecord
from backupctl.sources.base import source_class
from backupctl.timefmt import iso_ms, parse_iso

if TYPE_CHECKING:
    from backupctl.backups.service import Service
    from backupctl.config.models import DeploymentConfig
    from backupctl.pitr.common import Target


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
    clone.physical.

    Keys: name, backup_id, from_deployment, method, kind (logical|physical), databases
    ({original: clone}), host, port, datadir, user, password_file, config, uploaded,
    start_command, with `moment` also target_moment and pitr_backup (= backup_id, the base
    backup), and `password` — the caller shows it once and must not log it.
    """
    config_path = _config_path_for(svc, name)
    restored: dict[str, Any] | None = None
    created = False
    if moment is not None:
        _refuse_logical_flags(database=database, host=host, destination=destination)
        datadir = physical.new_datadir(
            datadir, "a point-in-time clone is a new data directory: --datadir is required"
        )
        created = not datadir.exists()
        restored = physical.restore_moment(
            svc, id_prefix, name=name, deployment=deployment, moment=moment, datadir=datadir
        )
        id_prefix = str(restored["backup"])
    else:
        id_prefix = _backup_to_clone(id_prefix, deployment)

    try:
        record, repo, manifest = svc.completed_backup(id_prefix, destination)
        orig_name = record["deployment"]
        orig_dep = svc.config.deployments.get(orig_name)
        position, src = _db_source(svc, record, manifest)
        source = svc.restore_source(src, orig_dep, position)
        info: dict[str, Any] = dict(src.get("info", {}))
        method = str(info.get("method", source.method))
        result = _base_result(svc, record, name, method, config_path, orig_dep, destination)
        description = f"clone of {orig_name} from backup {record['short_id']}"
        if restored is not None and datadir is not None:
            result.update(target_moment=restored["target_moment"], pitr_backup=record["id"])
            description = f"clone of {orig_name} at {_as_shown(restored['target_moment'])}"
            made = physical.finish(svc, src, source, datadir, port, result, created=created, recovery=True)
        elif method in PHYSICAL_METHODS:  # a physical clone starts from these
            _refuse_logical_flags(database=database, host=host, method=method)
            datadir = physical.new_datadir(datadir, f"a {method} backup is cloned into a new data directory")
            made = physical.clone_physical(svc, repo, manifest, src, source, datadir, port, result)
        else:
            if datadir is not None:
                raise CloneError("--datadir applies to physical backups; a logical clone is a new database")
            made = clone_logical(svc, repo, manifest, src, source, info, name, database, host, port, result)
    except BaseException:
        if restored is not None and datadir is not None:
            remove_partial(datadir, created)
        raise

    mapping = _deployment_mapping(description, made.doc, result["destinations"], orig_dep)
    try:
        source_class(made.doc["type"]).Options.model_validate(made.doc)
        yaml_edit.add_deployment(config_path, name, mapping)
    except BaseException:
        made.undo()
        raise
    svc.reporter.emit(InfoEvent(f"added deployment {name!r} to {config_path}"))
    return result


def _config_path_for(svc: Service, name: str) -> Path:
    """The config file the clone `name` is added to, once the name is known to be usable."""
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
    return config_path


def _refuse_logical_flags(
    *,
    database: str | None,
    host: str | None,
    destination: str | None = None,
    method: str | None = None,
) -> None:
    """Refuse the logical-clone flags for a physical clone: a point-in-time one (`method`
    None, --destination refused too) or one of a stored physical backup (`method`)."""
    if method is None:
        for flag, value in (("--database", database), ("--host", host), ("--destination", destination)):
            if value is not None:
                raise CloneError(
                    f"{flag} does not apply to a point-in-time clone",
                    hint="it restores a physical backup and the deployment's archived WAL/binary logs "
                    "from its primary destination into --datadir",
                )
        return
    if database is not None:
        raise CloneError("--database applies to logical backups; a physical clone copies every database")
    if host is not None:
        raise CloneError(
            "--host applies to logical backups; a physical clone is a data directory on this machine"
        )


def _backup_to_clone(id_prefix: str | None, deployment: str | None) -> str:
    """The backup ID of a clone that is not point-in-time (then --deployment does not apply)."""
    if id_prefix is None:
        raise CloneError(
            "give a backup ID to clone",
            hint="or --deployment D with --to-time/--to-lsn/--to-name/--to-position for a point-in-time clone",
        )
    if deployment is not None:
        raise CloneError(
            "--deployment applies with --to-time/--to-lsn/--to-name/--to-position",
            hint="a backup ID alone names the backup to clone",
        )
    return id_prefix


def _base_result(
    svc: Service,
    record: BackupSummary,
    name: str,
    method: str,
    config_path: Path,
    orig_dep: DeploymentConfig | None,
    destination: str | None,
) -> dict[str, Any]:
    """The result keys every clone has; the variants add theirs. Says when the backup can
    only be cloned on this machine (no remote copy)."""
    uploaded = _uploaded(svc, record)
    if not uploaded:
        svc.reporter.emit(
            InfoEvent(
                f"backup {record['short_id']} has not been uploaded to a remote destination: it can be cloned "
                f"on this machine only (run `backupctl backup upload {record['short_id']}` to clone it elsewhere)"
            )
        )
    orig_name = record["deployment"]
    dest_names = (
        list(orig_dep.destinations) if orig_dep else [destination or svc.primary_destination(orig_name)]
    )
    return {
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


def _deployment_mapping(
    description: str, doc: dict[str, Any], dest_names: list[str], orig_dep: DeploymentConfig | None
) -> dict[str, Any]:
    """The clone's deployment entry: its one source, the original's destinations, policy and
    upload setting (only where the original differs from the defaults)."""
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
    return mapping


def _db_source(svc: Service, record: BackupSummary, manifest: Manifest) -> tuple[int, SourceRecord]:
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


def _uploaded(svc: Service, record: BackupSummary) -> bool:
    """True when a copy of the backup is complete in a non-local destination."""
    for dest_name, state in (record.get("destinations") or {}).items():
        options = svc.config.destinations.get(dest_name)
        if options is not None and options.type != "local" and state.get("state") in ("uploaded", "stored"):
            return True
    return False


def _as_shown(moment: str) -> str:
    """A target moment as `-f json` shows it (one precision everywhere: milliseconds); a
    description such as "restore point 'x'" as it is."""
    try:
        return iso_ms(parse_iso(moment))
    except ValueError:
        return moment
