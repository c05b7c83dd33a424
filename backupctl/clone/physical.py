"""Physical clones: a pg_basebackup or mariabackup backup becomes a new data directory.

Two ways in (both called by clone.api.clone_backup, which validates the name and adds
the new deployment to the config file):

* `clone_physical`: the backup as it was (`backup clone ID --datadir DIR`);
* `clone_to_moment`: the deployment as it was at a moment (`backup clone --to-time T ...`,
  also --to-lsn/--to-name for PostgreSQL and --to-position for MariaDB). The base backup
  is chosen, and a target outside the recoverable window or past a gap refused before
  anything is written, by pitr.dispatch.restore_to_moment (the code `backup restore --to-*`
  runs); it restores the base backup into DIR and, for PostgreSQL, writes the recovery
  settings (restore_command = `wal fetch` from the ORIGINAL deployment's archive,
  recovery_target_*, promote, archive_mode = off) or, for MariaDB, replays the archived
  binary logs into DIR.

A PostgreSQL backup without postgresql.conf (Debian keeps it in /etc/postgresql) got minimal,
local-only configuration files from the restore (sources.postgres_conf); the clone's user
logs in by its new password there, the socket included.

Then the clone is given its own port and started once, privately, to set a newly generated
password for the deployment's user:

* PostgreSQL (clone.pg_password): `pg_ctl start` as the data directory's owner on a private socket directory,
  no TCP (`listen_addresses=''`) and a temporary trust-only hba file. For a point-in-time
  clone the server first replays the archived WAL up to the target and promotes: we wait
  until `pg_is_in_recovery()` is false (the server log tail is in the error when it does
  not get there). `ALTER ROLE ... PASSWORD` with a SCRAM verifier over psql's stdin;
  `pg_ctl stop -m fast`. A promoted clone no longer has recovery.signal; the
  restore_command and recovery_target_* lines are then removed from postgresql.auto.conf
  (PostgreSQL ignores them after promotion, but they would suggest that the clone still
  reads the original's archive).
* MariaDB: a temporary mariadbd (sources.mariadb_server.TemporaryServer: --no-defaults, own socket,
  --skip-networking); every account with the deployment's user name gets the
  mysql_native_password hash; SIGTERM shutdown.

When a clone fails after its data directory was written, the directory is emptied again
(removed when the clone created it), so the same command can be retried; a PostgreSQL
data directory whose server could not be stopped is left alone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupctl.clone.common import (
    CloneError,
    Made,
    free_port,
    mysql_native_hash,
    new_password,
    restore_into,
    secret_file_path,
    source_doc,
    write_secret_file,
)
from backupctl.clone.pg_password import pg_set_password
from backupctl.errors import UsageError
from backupctl.events import InfoEvent
from backupctl.pitr.common import base_deployment, remove_partial
from backupctl.pitr.dispatch import restore_to_moment
from backupctl.records import Manifest, SourceRecord
from backupctl.sources.mariadb_server import ServerError, TemporaryServer

# The function-local imports below load a database's tools only for the engine in use (and
# both sources define quote_literal); none of them avoids an import cycle.

if TYPE_CHECKING:
    from backupctl.backups.service import Service
    from backupctl.pitr.common import Target
    from backupctl.repo.repository import Repository
    from backupctl.sources.base import Source


# How long a point-in-time clone may take to replay WAL up to its target and promote.
RECOVERY_TIMEOUT_S = 6 * 3600.0


def new_datadir(datadir: Path | None, missing: str) -> Path:
    """The absolute clone data directory; it must be absent or empty (`missing`: the error without it)."""
    if datadir is None:
        raise UsageError(missing, hint="pass --datadir DIR (empty or absent)")
    datadir = Path(os.path.abspath(os.path.expanduser(str(datadir))))
    if datadir.exists() and (not datadir.is_dir() or any(datadir.iterdir())):
        raise CloneError(f"{datadir} is not empty; a clone goes into a new data directory")
    return datadir


def clone_physical(
    svc: Service,
    repo: Repository,
    manifest: Manifest,
    src: SourceRecord,
    source: Source,
    datadir: Path,
    port: int | None,
    result: dict[str, Any],
) -> Made:
    """Restore the backup into the new `datadir` and finish it; returns the new source's
    config and how to undo the clone."""
    created = not datadir.exists()
    try:
        restore_into(svc, repo, manifest, src, source, datadir, {})
        return finish(svc, src, source, datadir, port, result, created=created, recovery=False)
    except BaseException:
        remove_partial(datadir, created)
        raise


def restore_moment(
    svc: Service, id_prefix: str | None, *, name: str, deployment: str | None, moment: Target, datadir: Path
) -> dict[str, Any]:
    """Restore `deployment` (from backup `id_prefix` when given) as it was at `moment` into the
    new `datadir`: what `backup restore --to-* --target DIR` does. Returns its result
    (`backup` = the base backup's ID, `target_moment`). Every check that can refuse the
    clone runs before anything is written; a failure after that empties `datadir` again."""
    if secret_file_path(name).exists():
        raise CloneError(
            f"a secrets file {secret_file_path(name)} already exists",
            hint="choose another --name, or remove the file if it belongs to a deleted clone",
        )
    deployment = base_deployment(svc, id_prefix, deployment)
    created = not datadir.exists()
    try:
        return restore_to_moment(
            svc,
            deployment=deployment,
            backup_id=id_prefix,
            target=moment,
            target_dir=datadir,
            safety_backup=False,
        )
    except BaseException:
        remove_partial(datadir, created)
        raise


def finish(
    svc: Service,
    src: SourceRecord,
    source: Source,
    datadir: Path,
    port: int | None,
    result: dict[str, Any],
    *,
    created: bool,
    recovery: bool,
) -> Made:
    """Give the restored `datadir` its own port and a new password (after recovery to the
    target and promotion when `recovery`); fill `result`; return the new source's config and
    `undo`, which removes the clone (secret file, data directory) if adding it to the config
    file fails."""
    new_port = port or free_port()
    kind = src["type"]
    name = str(result["name"])
    doc = source_doc(source)
    doc.pop("password_env", None)
    doc["port"] = new_port
    user = str(source.options.user)  # type: ignore[attr-defined]
    password = new_password()
    secret_path = write_secret_file(name, password)
    try:
        if kind == "postgres":
            from backupctl.sources.postgres_conf import password_only_for

            password_only_for(datadir, user)
            auto = datadir / "postgresql.auto.conf"
            ref = datadir / "PG_VERSION"
            with open(auto, "a") as fh:
                fh.write(
                    "\n# Added by `backupctl backup clone`: the clone listens on its own port and does not\n"
                    "# archive WAL into the original's archive.\n"
                    f"port = {new_port}\narchive_mode = off\n"
                )
            if os.geteuid() == 0 and ref.exists():
                st = ref.stat()
                os.chown(auto, st.st_uid, st.st_gid)
            if recovery:
                svc.reporter.emit(
                    InfoEvent(
                        f"starting the clone: it replays the archived WAL to {result.get('target_moment')}"
                    )
                )
            svc.reporter.emit(InfoEvent(f"setting a new password for {user!r} on the clone"))
            pg_set_password(
                datadir,
                user,
                str(getattr(source.options, "maintenance_db", "postgres")),
                password,
                recovery_timeout=RECOVERY_TIMEOUT_S if recovery else None,
            )
            if recovery:
                _drop_recovery_settings(datadir, str(result.get("target_moment")))
            doc["data_dir"] = str(datadir)
            start = f"pg_ctl -D {datadir} -l {datadir}/clone.log start  (as the owner of {datadir}, e.g. runuser -u postgres --)"
        else:
            svc.reporter.emit(InfoEvent(f"setting a new password for {user!r} on the clone"))
            _mariadb_set_password(datadir, user, password, svc.reporter)
            doc["datadir"] = str(datadir)
            doc.pop("socket", None)
            doc["host"] = "127.0.0.1"
            # --no-defaults: the host's my.cnf names the system server's pid file, socket and port.
            start = (
                f"chown -R mysql:mysql {datadir} && mariadbd --no-defaults --user=mysql --datadir={datadir} "
                f"--port={new_port} --bind-address=127.0.0.1 --socket={datadir}/mysqld.sock "
                f"--pid-file={datadir}/mysqld.pid --log-error={datadir}/clone.err"
            )
    except BaseException:
        secret_path.unlink(missing_ok=True)
        raise
    doc["user"] = user
    doc["password_file"] = str(secret_path)

    def undo() -> None:
        secret_path.unlink(missing_ok=True)
        remove_partial(datadir, created)

    svc.reporter.emit(InfoEvent(f"start the clone with: {start}"))
    result.update(
        {
            "kind": "physical",
            "databases": {},
            "host": doc.get("host"),
            "port": new_port,
            "datadir": str(datadir),
            "user": user,
            "password_file": str(secret_path),
            "password": password,
            "start_command": start,
        }
    )
    return Made(doc, undo)


_RECOVERY_LINE = re.compile(r"^\s*(restore_command|recovery_target\w*)\s*=")


def _drop_recovery_settings(datadir: Path, moment: str) -> None:
    """Remove restore_command and recovery_target_* from a promoted clone's postgresql.auto.conf.

    PostgreSQL ignores them once promoted (no recovery.signal), but left there they would say
    that the clone reads the original's WAL archive. Rewritten in place: owner and mode stay."""
    (datadir / "recovery.signal").unlink(missing_ok=True)  # removed by the promotion already
    auto = datadir / "postgresql.auto.conf"
    lines = auto.read_text().splitlines()
    kept = [
        (
            f"# point-in-time clone by backupctl: recovered to {moment} and promoted"
            if ln.startswith("# point-in-time recovery by backupctl:")
            else ln
        )
        for ln in lines
        if not _RECOVERY_LINE.match(ln)
    ]
    with open(auto, "r+") as fh:
        fh.write("\n".join(kept) + "\n")
        fh.truncate()


def _mariadb_set_password(datadir: Path, user: str, password: str, reporter: Any) -> None:
    """Start mariadbd on the clone (private socket, --skip-networking), give every account
    named `user` the mysql_native_password hash of `password` over the client's stdin, and
    shut it down cleanly."""
    from backupctl.sources.dbutil import Secrets, child_env, run
    from backupctl.sources.mariadb_client import quote_literal

    server = TemporaryServer(datadir, reporter)
    secrets_ = Secrets("backupctl-mariadb-")
    digest = mysql_native_hash(password)
    secrets_.write("redact", "", secret=digest)
    try:
        try:
            server.start()
            argv = [*server.client_argv(), "--batch", "--skip-column-names"]
            env = child_env(drop=["MYSQL_PWD"])
            # Grant tables are skipped at start: load them, then change the accounts.
            hosts_sql = f"FLUSH PRIVILEGES; SELECT Host FROM mysql.user WHERE User = {quote_literal(user)};\n"
            hosts = [
                h
                for h in run(argv, env=env, what="mariadb", input_chunks=[hosts_sql.encode()]).splitlines()
                if h
            ]
            if not hosts:
                raise CloneError(f"the clone has no account named {user!r}; its password cannot be set")
            sql = "FLUSH PRIVILEGES;\n" + "".join(
                f"ALTER USER {quote_literal(user)}@{quote_literal(h)} IDENTIFIED BY PASSWORD {quote_literal(digest)};\n"
                for h in hosts
            )
            run(argv, env=env, secrets=secrets_, what="mariadb", input_chunks=[sql.encode()], timeout=300)
            server.stop()
        except ServerError as exc:
            raise CloneError(exc.message) from None
    finally:
        secrets_.cleanup()
        server.cleanup()
