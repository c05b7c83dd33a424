"""MariaDB server binaries and a throwaway server on a restored data directory.

`which` finds a client/server tool, `binlog_tool`/`client_tool`/`server_tool` the MariaDB
(or MySQL) ones, and `TemporaryServer` runs mariadbd on a data directory privately (own
socket, no networking, no binary log) for a binary log replay (pitr.mariadb) or to set a
clone's password (clone.physical). Failures raise ServerError, a SourceError: this module
knows nothing of point-in-time recovery and imports nothing above sources/.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from backupctl import tempdir
from backupctl.errors import SourceError
from backupctl.sources.dbutil import child_env, find_tool


class ServerError(SourceError):
    """A MariaDB tool is missing, or the temporary server failed to start or stop."""

    # The kind these failures always had in `-o json` errors (they were BinlogError before
    # the runner moved here); the exit code (FAILED) is the same for both classes.
    kind = "binlog"


def which(*names: str, extra: tuple[str, ...] = ()) -> str:
    return find_tool(
        names, extra=extra, error=ServerError, hint="install the MariaDB client and server packages"
    )


def binlog_tool() -> str:
    return which("mariadb-binlog", "mysqlbinlog")


def client_tool() -> str:
    return which("mariadb", "mysql")


def server_tool() -> str:
    return which(
        "mariadbd",
        "mysqld",
        extra=("/usr/sbin/mariadbd", "/usr/sbin/mysqld", "/usr/libexec/mariadbd", "/usr/libexec/mysqld"),
    )


REPLAY_PREFIX = "bctl-replay-"


def _remove_replay(path: Path) -> None:
    """Stop the server of a dead run's replay (its pid file there, its command line naming
    the directory, so a reused pid is not killed), then remove the directory."""
    try:
        pid = int((path / "mysqld.pid").read_text().split()[0])
        if str(path).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError, IndexError):
        pass
    shutil.rmtree(path, ignore_errors=True)


def sweep_replays() -> list[Path]:
    """Remove the replay directories of killed runs, stopping a server still running there."""
    return tempdir.sweep_tagged(REPLAY_PREFIX, _remove_replay)


class TemporaryServer:
    """mariadbd on a restored data directory: no networking, a private socket, no binary log,
    no event scheduler or replication; grant tables skipped (reloaded by the first statement
    of a replay, FLUSH PRIVILEGES, so account statements in the binary log work)."""

    def __init__(self, datadir: Path, reporter: Any = None) -> None:
        self.datadir = datadir
        self.reporter = reporter
        sweep_replays()
        # In $TMPDIR itself: short (socket paths are limited) and enterable by the data
        # directory's owner; tagged with this process, so the next replay removes it after a kill.
        self.dir = Path(tempfile.mkdtemp(prefix=f"{REPLAY_PREFIX}{tempdir.owner_tag()}-"))
        os.chmod(self.dir, 0o700)
        self.socket = self.dir / "mysqld.sock"
        self.log = self.dir / "error.log"
        self.proc: subprocess.Popen[bytes] | None = None
        # A replay runs without grant tables and with the event scheduler DISABLED (no event
        # of the restored data fires); a drill may change both (drill/mariadb.py).
        self.grant_tables = False
        self.event_scheduler = "DISABLED"

    def _user(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        import pwd

        st = self.datadir.stat()
        try:
            name = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            name = str(st.st_uid)
        os.chown(self.dir, st.st_uid, st.st_gid)
        return [f"--user={name}"]

    def client_argv(self) -> list[str]:
        return [
            client_tool(),
            "--no-defaults",
            f"--socket={self.socket}",
            "--user=root",
            "--max-allowed-packet=1G",
        ]

    def start(self, timeout: float = 300) -> None:
        argv = [
            server_tool(),
            "--no-defaults",
            *self._user(),
            f"--datadir={self.datadir}",
            f"--socket={self.socket}",
            "--skip-networking",
            "--skip-log-bin",
            *([] if self.grant_tables else ["--skip-grant-tables"]),
            "--skip-slave-start",
            f"--event-scheduler={self.event_scheduler}",
            "--max-allowed-packet=1G",
            f"--pid-file={self.dir / 'mysqld.pid'}",
            f"--log-error={self.log}",
            f"--tmpdir={self.dir}",  # private: temporary tables of the replay stay with this server
        ]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=child_env(),  # no secret of ours reaches the temporary server
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"the temporary MariaDB server on {self.datadir} exited with code {self.proc.returncode}: "
                    f"{self.log_tail()}"
                )
            if self.socket.exists():
                probe = subprocess.run(
                    [*self.client_argv(), "--batch", "-e", "SELECT 1"],
                    capture_output=True,
                    timeout=60,
                    env=child_env(),
                )
                if probe.returncode == 0:
                    return
            time.sleep(0.2)
        self.stop()
        raise ServerError(
            f"the temporary MariaDB server on {self.datadir} did not start within {timeout:.0f} s"
        )

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:].strip()
        except OSError:
            return "(no error log)"

    def stop(self, timeout: float = 600) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: a clean shutdown
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise ServerError(
                    f"the temporary MariaDB server on {self.datadir} did not shut down"
                ) from None
            if self.proc.returncode != 0:
                raise ServerError(
                    f"the temporary MariaDB server on {self.datadir} shut down with code {self.proc.returncode}: "
                    f"{self.log_tail()}"
                )

    def cleanup(self) -> None:
        with contextlib.suppress(ServerError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
