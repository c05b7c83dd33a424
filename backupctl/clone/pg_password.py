"""Setting a new password on a cloned PostgreSQL data directory, for clone.physical.

The cluster is started once, privately: `pg_ctl start` as the data directory's owner (the
server refuses to run as root), on a private 0700 socket directory, no TCP
(`listen_addresses=''`) and a temporary trust-only hba file readable by nobody else, so no
other client can reach it meanwhile. For a point-in-time clone the server first replays
the archived WAL up to its target and promotes: we wait until `pg_is_in_recovery()` is
false (the server log tail is in the error when it does not get there). Then
`ALTER ROLE ... PASSWORD` with a SCRAM verifier over psql's stdin (the plain password
never reaches the server, an argv or a log; the verifier is redacted from errors), and
`pg_ctl stop -m fast`.

The tools come from the clone's own major version when installed (Debian and RPM
layouts), else PATH. As in clone.physical, the function-local imports load PostgreSQL's
tools only when a PostgreSQL clone is made; none of them avoids an import cycle.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from backupctl.clone.common import CloneError, free_port, scram_verifier


def _run_as_owner(argv: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *argv] if owner else argv


def _pg_tool(name: str, datadir: Path) -> str:
    """`name` from the clone's own major version when installed (Debian layout), else PATH."""
    try:
        major = (datadir / "PG_VERSION").read_text().strip()
    except OSError:
        major = ""
    for candidate in (
        Path(f"/usr/lib/postgresql/{major}/bin/{name}"),
        Path(f"/usr/pgsql-{major}/bin/{name}"),
    ):
        if major and candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise CloneError(
            f"{name} not found", hint="install the PostgreSQL server package of the backup's version"
        )
    return found


def pg_set_password(
    datadir: Path, user: str, maintenance_db: str, password: str, *, recovery_timeout: float | None = None
) -> None:
    """Start the cloned cluster privately (its own socket directory, no TCP, a trust-only
    hba file readable by nobody else), ALTER ROLE `user` with a SCRAM verifier over psql's
    stdin, and stop it with a clean (fast) shutdown.

    With `recovery_timeout` the cluster is in archive recovery (recovery.signal): wait up to
    that many seconds until it reached its recovery target and promoted."""
    import subprocess

    from backupctl.sources.dbutil import child_env

    st = datadir.stat()
    owner = _datadir_owner(datadir, st)
    work, hba = _private_workdir(st, owner)
    port = free_port()
    log = work / "server.log"
    pg_ctl = _pg_tool("pg_ctl", datadir)
    psql = _pg_tool("psql", datadir)
    base_argv = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(work), "-p", str(port), "-U", user]
    opts = f"-p {port} -k {work} -c listen_addresses='' -c hba_file={hba} -c archive_mode=off -c ssl=off"
    wait_s = str(int(max(600, recovery_timeout or 0)))

    def tail() -> str:
        """The server log's last lines, on one line (the error message is one line)."""
        text = log.read_text(errors="replace") if log.exists() else ""
        return " | ".join(ln.strip() for ln in text.splitlines()[-6:] if ln.strip())[-2000:]

    started = False
    try:
        proc = subprocess.run(
            _run_as_owner(
                [pg_ctl, "-D", str(datadir), "-o", opts, "-l", str(log), "-w", "-t", wait_s, "start"], owner
            ),
            capture_output=True,
            text=True,
            cwd=work,
            # Its restore_command runs `backupctl wal fetch`, which needs the repository's secrets.
            env=child_env(repository_access=True),
        )
        started = True
        if proc.returncode != 0:
            raise CloneError(
                f"the cloned PostgreSQL server on {datadir} would not start: {proc.stderr.strip()} {tail()}".strip()
            )
        if recovery_timeout is not None:
            _pg_wait_promoted(datadir, [*base_argv, "-d", maintenance_db], recovery_timeout, tail)
        _pg_alter_password([*base_argv, "-1", "-d", maintenance_db, "-f", "-"], user, password)
    finally:
        if started:
            _pg_stop(pg_ctl, datadir, owner, work)
        shutil.rmtree(work, ignore_errors=True)


def _datadir_owner(datadir: Path, st: os.stat_result) -> str | None:
    """The user name the server must run as when we are root (it refuses to run as root)."""
    import pwd

    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        raise CloneError(f"the owner (uid {st.st_uid}) of {datadir} has no user name") from None


def _private_workdir(st: os.stat_result, owner: str | None) -> tuple[Path, Path]:
    """(a 0700 directory for the socket and log, its trust-only pg_hba.conf), given to the
    data directory's owner when the server runs as that owner."""
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="bctl-pgclone-"))  # short: socket paths are limited
    os.chmod(work, 0o700)
    hba = work / "pg_hba.conf"
    hba.write_text("local all all trust\n")
    if owner:
        os.chown(work, st.st_uid, st.st_gid)
        os.chown(hba, st.st_uid, st.st_gid)
    return work, hba


def _pg_alter_password(argv: list[str], user: str, password: str) -> None:
    """ALTER ROLE `user` with a SCRAM verifier of `password`, over psql's stdin (`argv`);
    the verifier is redacted from any error."""
    from backupctl.sources.dbutil import Secrets, child_env, run
    from backupctl.sources.postgres_client import quote_ident, quote_literal

    verifier = scram_verifier(password)
    secrets_ = Secrets("backupctl-pg-")
    secrets_.write("redact", "", secret=verifier)
    try:
        sql = f"ALTER ROLE {quote_ident(user)} PASSWORD {quote_literal(verifier)};\n"
        run(
            argv,
            env=child_env(drop=["PGPASSWORD", "PGPASSFILE"]),
            secrets=secrets_,
            what="psql",
            input_chunks=[sql.encode()],
            timeout=300,
        )
    finally:
        secrets_.cleanup()


def _pg_stop(pg_ctl: str, datadir: Path, owner: str | None, work: Path) -> None:
    """A clean (fast) shutdown; CloneError when the server is still running after it."""
    import subprocess

    from backupctl.sources.dbutil import child_env

    stop = subprocess.run(
        _run_as_owner([pg_ctl, "-D", str(datadir), "-m", "fast", "-w", "-t", "600", "stop"], owner),
        capture_output=True,
        text=True,
        cwd=work,
        env=child_env(),
    )
    if stop.returncode != 0 and (datadir / "postmaster.pid").exists():
        shutil.rmtree(work, ignore_errors=True)
        raise CloneError(f"the cloned PostgreSQL server on {datadir} did not stop: {stop.stderr.strip()}")


def _pg_wait_promoted(datadir: Path, argv: list[str], timeout: float, tail: Any) -> None:
    """Poll `SELECT pg_is_in_recovery()` until false (the target was reached and the server
    promoted). A server that ends recovery without reaching its target shuts down
    ("recovery ended before configured recovery target was reached"): said at once."""
    import subprocess

    from backupctl.sources.dbutil import child_env

    deadline = time.monotonic() + timeout
    last = ""
    while True:
        proc = subprocess.run(
            [*argv, "-A", "-t", "-c", "SELECT pg_is_in_recovery()"],
            capture_output=True,
            text=True,
            env=child_env(drop=["PGPASSWORD", "PGPASSFILE"]),
            timeout=120,
        )
        if proc.returncode == 0 and proc.stdout.strip() == "f":
            return
        last = proc.stderr.strip() or last
        if not (datadir / "postmaster.pid").exists():
            raise CloneError(
                f"the cloned PostgreSQL server on {datadir} stopped before it reached the recovery target: {tail()}",
                hint="the server log above says why; `backupctl pitr show` gives the recoverable window",
            )
        if time.monotonic() > deadline:
            raise CloneError(
                f"the cloned PostgreSQL server on {datadir} did not reach the recovery target and promote "
                f"within {timeout:.0f} s ({last or 'still in recovery'}): {tail()}"
            )
        time.sleep(0.5)
