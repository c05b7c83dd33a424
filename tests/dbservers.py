"""Throwaway PostgreSQL and MariaDB servers for tests.

Each server lives in its own temporary directory, listens on 127.0.0.1 on a free high port
and a private socket, and is removed by `stop()`. The servers already running on this
machine (5432, 3306) are never touched. Install the binaries with `.ci/install-db.sh`.

PostgreSQL: `initdb` / `pg_ctl` refuse to run as root, so they run through
`runuser -u postgres`; local (socket) connections are trusted, TCP connections need the
password (scram-sha-256), WAL archiving is on. MariaDB: `mariadb-install-db` and
`mariadbd` with `--no-defaults` first, binlog on; root logs in over the socket, the
`backup` user over TCP with a password.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from backupctl.sources.base import Entry, RestoreEntry, Source

PG_BIN_CANDIDATES = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def awkward_password() -> str:
    """A password with ':' '\\' quotes and a space, different for every server."""
    return "s3cr:et\\pa ss'\"" + uuid.uuid4().hex[:10]


class ServerUnavailable(Exception):
    """The server binaries are missing or the server would not start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise ServerUnavailable(f"{what} did not become ready within {timeout} s")


class PostgresServer:
    user = "postgres"

    def __init__(self) -> None:
        bins = [b for b in PG_BIN_CANDIDATES if (b / "initdb").exists()]
        if not bins:
            raise ServerUnavailable("PostgreSQL server binaries not found (run .ci/install-db.sh)")
        if os.geteuid() != 0:
            raise ServerUnavailable("starting a throwaway PostgreSQL needs root (runuser -u postgres)")
        try:
            self._pw = pwd.getpwnam("postgres")
        except KeyError:
            raise ServerUnavailable("no 'postgres' system user") from None
        self.bin = bins[0]
        self.password = awkward_password()
        self.base = Path(tempfile.mkdtemp(prefix="backupctl-pg-"))
        os.chown(self.base, self._pw.pw_uid, self._pw.pw_gid)
        self.data = self.base / "data"
        self.sockdir = self.base / "sock"
        self.archive = self.base / "archive"
        self.log = self.base / "server.log"
        self.port = free_port()
        self.host = "127.0.0.1"
        for d in (self.sockdir, self.archive):
            d.mkdir()
            os.chown(d, self._pw.pw_uid, self._pw.pw_gid)

    def _as_postgres(
        self, *argv: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            cwd=self.base,
        )

    def start(self) -> PostgresServer:
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chown(pwfile, self._pw.pw_uid, self._pw.pw_gid)
        try:
            self._as_postgres(
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            )
        except subprocess.CalledProcessError as exc:
            raise ServerUnavailable(f"initdb failed: {exc.stderr.strip()}") from None
        finally:
            pwfile.unlink()
        self.write_config(self.data, self.port)
        self.pg_ctl_start(self.data)
        return self

    def write_config(self, data: Path, port: int) -> None:
        with open(data / "postgresql.conf", "a") as fh:
            fh.write(
                f"\nport = {port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.sockdir}'\n"
                "wal_level = replica\narchive_mode = on\n"
                f"archive_command = 'test ! -f {self.archive}/%f && cp %p {self.archive}/%f'\n"
                "max_wal_senders = 5\nwal_keep_size = 256MB\nfsync = off\n"
                "shared_buffers = 32MB\nmax_connections = 40\n"
            )

    def pg_ctl_start(self, data: Path, log: Path | None = None) -> None:
        log = log or self.log
        try:
            self._as_postgres(
                str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"
            )
        except subprocess.CalledProcessError as exc:
            text = log.read_text() if log.exists() else ""
            raise ServerUnavailable(f"pg_ctl start failed: {exc.stderr.strip()} {text[-2000:]}") from None

    def pg_ctl_stop(self, data: Path, mode: str = "fast") -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop", check=False)

    def kill(self) -> None:
        """Kill the postmaster and its children at once, like a crash."""
        pidfile = self.data / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
            # Children notice the postmaster's death; end them too so clients see it now.
            subprocess.run(["pkill", "-KILL", "-P", str(pid)], check=False)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.pg_ctl_stop(self.data, "immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def options(self, **overrides: object) -> dict[str, object]:
        """Source options connecting over TCP with the password from $BACKUPCTL_TEST_PGPASS_<port>."""
        os.environ[self.password_env] = self.password
        opts: dict[str, object] = {
            "type": "postgres",
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password_env": self.password_env,
        }
        opts.update(overrides)
        return opts

    @property
    def password_env(self) -> str:
        return f"BACKUPCTL_TEST_PGPASS_{self.port}"

    def psql(self, sql: str, db: str = "postgres", *, port: int | None = None) -> str:
        """Run SQL as the superuser over the socket; return unaligned, tuples-only output."""
        res = subprocess.run(
            [
                str(self.bin / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.sockdir),
                "-p",
                str(port or self.port),
                "-U",
                self.user,
                "-d",
                db,
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if res.returncode != 0:
            raise RuntimeError(f"psql failed: {res.stderr.strip()}")
        return res.stdout.strip()

    @property
    def major(self) -> int:
        return int(self.psql("SHOW server_version_num")) // 10000


class MariaDBServer:
    user = "backup"

    def __init__(self, *, default_install: bool = False) -> None:
        """`default_install`: set up as `mariadb-install-db --user=mysql` does by default (as
        Debian's package does): root and mysql@localhost by unix socket or an invalid password,
        anonymous accounts at localhost and at this machine's host name (which a server
        started with --skip-name-resolve, as every throwaway server is, cannot resolve)."""
        self.default_install = default_install
        self.mariadbd = shutil.which("mariadbd") or (
            "/usr/sbin/mariadbd" if Path("/usr/sbin/mariadbd").exists() else None
        )
        self.install_db = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        self.client = shutil.which("mariadb") or shutil.which("mysql")
        if not (self.mariadbd and self.install_db and self.client):
            raise ServerUnavailable("MariaDB server binaries not found (run .ci/install-db.sh)")
        if os.geteuid() != 0:
            raise ServerUnavailable("the throwaway MariaDB runs with --user=root")
        self.base = Path(tempfile.mkdtemp(prefix="backupctl-mariadb-"))
        self.password = awkward_password()
        self.data = self.base / "data"
        self.socket = self.base / "mysqld.sock"
        self.log = self.base / "error.log"
        self.tmp = self.base / "tmp"
        self.port = free_port()
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MariaDBServer:
        assert self.install_db is not None
        self.tmp.mkdir(parents=True, exist_ok=True)
        if self.default_install:
            try:
                mysql = pwd.getpwnam("mysql")
            except KeyError:
                raise ServerUnavailable("no 'mysql' system user (install mariadb-server)") from None
            for d in (self.base, self.tmp):
                os.chown(d, mysql.pw_uid, mysql.pw_gid)
            install_args = ["--user=mysql"]
        else:
            install_args = ["--user=root", "--auth-root-authentication-method=socket", "--skip-test-db"]
        res = subprocess.run(
            [
                self.install_db,
                "--no-defaults",
                *install_args,
                f"--datadir={self.data}",
                f"--tmpdir={self.tmp}",  # passed on to mariadbd: no shared /tmp between instances
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if res.returncode != 0:
            raise ServerUnavailable(f"mariadb-install-db failed: {res.stderr.strip()[-2000:]}")
        self.start_datadir(self.data)
        self.root_sql(
            f"CREATE USER '{self.user}'@'127.0.0.1' IDENTIFIED BY {self.sql_str(self.password)};"
            f"GRANT ALL ON *.* TO '{self.user}'@'127.0.0.1' WITH GRANT OPTION;"
        )
        return self

    def start_datadir(self, data: Path, port: int | None = None) -> None:
        """Start mariadbd on `data` (the restore tests boot restored datadirs the same way)."""
        assert self.mariadbd is not None
        if port is not None:
            self.port = port
        self.data = data
        (self.base / "binlog").mkdir(exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            [
                self.mariadbd,
                "--no-defaults",
                "--user=root",
                f"--datadir={data}",
                f"--socket={self.socket}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--log-bin={self.base / 'binlog' / 'mariadb-bin'}",
                "--server-id=1",
                f"--pid-file={self.base / 'mariadbd.pid'}",
                f"--log-error={self.log}",
                f"--tmpdir={self.tmp}",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M",
                "--innodb-log-file-size=64M",
                "--innodb-flush-log-at-trx-commit=2",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                log = self.log.read_text()[-2000:] if self.log.exists() else ""
                raise ServerUnavailable(f"mariadbd exited with {self.proc.returncode}: {log}")
            try:
                self.root_sql("SELECT 1")
                return True
            except RuntimeError:
                return False

        _wait_for(ready, 60, "mariadbd")

    def root_sql(self, sql: str, db: str | None = None) -> str:
        assert self.client is not None
        argv = [
            self.client,
            "--no-defaults",
            f"--socket={self.socket}",
            "-uroot",
            "--batch",
            "--skip-column-names",
        ]
        # A default database, so the sequence engine's seq_1_to_N tables work everywhere.
        argv.append(f"--database={db or 'mysql'}")
        res = subprocess.run([*argv, "-e", sql], capture_output=True, text=True, timeout=300)
        if res.returncode != 0:
            raise RuntimeError(f"mariadb failed: {res.stderr.strip()}")
        return res.stdout.strip()

    @property
    def password_env(self) -> str:
        return f"BACKUPCTL_TEST_MARIADBPASS_{self.port}"

    @staticmethod
    def sql_str(value: str) -> str:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def shutdown(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        self.shutdown()
        shutil.rmtree(self.base, ignore_errors=True)

    def options(self, **overrides: object) -> dict[str, object]:
        os.environ[self.password_env] = self.password
        opts: dict[str, object] = {
            "type": "mariadb",
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password_env": self.password_env,
        }
        opts.update(overrides)
        return opts

    @property
    def version(self) -> str:
        return self.root_sql("SELECT VERSION()")


# -- driving a Source the way the engine does ---------------------------------------------


@dataclass
class Captured:
    """What a backup stored: each entry with its content, and the source's info()."""

    entries: list[tuple[Entry, bytes]]
    info: dict[str, Any]

    def data(self, path: str) -> bytes:
        for entry, data in self.entries:
            if entry.path == path:
                return data
        raise KeyError(path)

    @property
    def paths(self) -> list[str]:
        return [e.path for e, _ in self.entries]


def take_backup(source: Source, during_read: Callable[[Entry, IO[bytes]], None] | None = None) -> Captured:
    """scan(), read every file entry's stream to the end, finish(); abort() on any error."""
    entries: list[tuple[Entry, bytes]] = []
    try:
        for entry in source.scan():
            data = b""
            if entry.kind == "file":
                assert entry.open is not None
                stream = entry.open()
                if during_read is not None:
                    during_read(entry, stream)
                data = stream.read()
            entries.append((entry, data))
        source.finish()
    except BaseException:
        source.abort()
        raise
    return Captured(entries, source.info())


def restore_entries(captured: Captured, chunk_size: int = 1 << 16) -> Iterator[RestoreEntry]:
    for entry, data in captured.entries:

        def chunks(data: bytes = data) -> Iterator[bytes]:
            for i in range(0, len(data), chunk_size):
                yield data[i : i + chunk_size]

        yield RestoreEntry(
            path=entry.path,
            kind=entry.kind,
            mode=entry.mode,
            uid=entry.uid,
            gid=entry.gid,
            user=entry.user,
            group=entry.group,
            mtime_ns=entry.mtime_ns,
            size=len(data),
            target=entry.target,
            chunks=chunks,
        )


CLIENT_TOOLS = frozenset(
    {
        "pg_dump",
        "pg_dumpall",
        "pg_basebackup",
        "pg_restore",
        "psql",
        "mariadb",
        "mysql",
        "mariadb-dump",
        "mysqldump",
        "mariabackup",
        "mariadb-backup",
        "mbstream",
        "mariadb-binlog",
    }
)


def child_processes() -> list[tuple[int, list[str], dict[str, str]]]:
    """(pid, argv, environment) of every database client tool whose parent is this process.

    Servers that other fixtures of this test process started (fake-gcs-server, sshd, the
    database servers themselves...) are not the source's children and are left out."""
    me = os.getpid()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != me:
                continue
            argv = (proc / "cmdline").read_bytes().decode("utf-8", "replace").split("\0")
            env_items = (proc / "environ").read_bytes().decode("utf-8", "replace").split("\0")
        except (OSError, IndexError, ValueError):
            continue
        if os.path.basename(argv[0]) not in CLIENT_TOOLS:
            continue
        env = dict(item.split("=", 1) for item in env_items if "=" in item)
        found.append((int(proc.name), argv, env))
    return found


# -- comparing databases ------------------------------------------------------------------


def pg_fingerprint(server: PostgresServer, db: str) -> dict[str, str]:
    """Every table (row count + md5 of the ordered rows), sequences, views, functions, owners."""
    user_schemas = "NOT IN ('pg_catalog', 'information_schema')"
    tables = server.psql(
        "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables"
        f" WHERE schemaname {user_schemas} ORDER BY 1",
        db,
    ).splitlines()
    fp = {}
    for table in tables:
        fp[f"table {table}"] = server.psql(
            f"SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, ',' ORDER BY x::text)), '') FROM {table} x",
            db,
        )
    fp["sequences"] = server.psql(
        "SELECT string_agg(schemaname || '.' || sequencename || '=' || coalesce(last_value::text, 'null'), ','"
        " ORDER BY schemaname, sequencename) FROM pg_sequences",
        db,
    )
    fp["views"] = server.psql(
        f"SELECT string_agg(viewname || ':' || definition, ';' ORDER BY viewname) FROM pg_views WHERE schemaname {user_schemas}",
        db,
    )
    fp["functions"] = server.psql(
        "SELECT string_agg(pg_get_functiondef(p.oid), ';' ORDER BY p.proname) FROM pg_proc p"
        f" JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname {user_schemas} AND p.prokind = 'f'",
        db,
    )
    fp["owners"] = server.psql(
        f"SELECT string_agg(tablename || '=' || tableowner, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname {user_schemas}",
        db,
    )
    fp["grants"] = server.psql(
        "SELECT string_agg(table_name || ':' || grantee || ':' || privilege_type, ',' ORDER BY table_name, grantee, privilege_type)"
        f" FROM information_schema.role_table_grants WHERE table_schema {user_schemas}",
        db,
    )
    return fp


def pg_role(server: PostgresServer, role: str) -> str:
    return server.psql(
        "SELECT rolname || rolcanlogin::text || rolcreatedb::text || rolconnlimit || coalesce(rolpassword, '-')"
        f" FROM pg_authid WHERE rolname = '{role}'"
    )


def mariadb_fingerprint(server: MariaDBServer, db: str) -> dict[str, str]:
    """Every table (row count + checksum of the ordered rows), views, routines, triggers, events."""
    lit = MariaDBServer.sql_str(db)
    fp: dict[str, str] = {}
    tables = server.root_sql(
        f"SELECT table_name FROM information_schema.tables WHERE table_schema = {lit} AND table_type = 'BASE TABLE'"
        " ORDER BY table_name"
    ).splitlines()
    for table in tables:
        cols = server.root_sql(
            f"SELECT group_concat(concat('`', column_name, '`') ORDER BY ordinal_position) FROM information_schema.columns"
            f" WHERE table_schema = {lit} AND table_name = {MariaDBServer.sql_str(table)}"
        )
        fp[f"table {table}"] = server.root_sql(
            f"SELECT count(*), md5(group_concat(md5(concat_ws('|', {cols})) ORDER BY {cols} SEPARATOR ','))"
            f" FROM `{db}`.`{table}`",
        )
    fp["views"] = server.root_sql(
        "SELECT group_concat(table_name, ':', replace(view_definition, concat('`', table_schema, '`.'), '') ORDER BY table_name)"
        f" FROM information_schema.views WHERE table_schema = {lit}"
    )
    fp["routines"] = server.root_sql(
        "SELECT group_concat(routine_name, ':', routine_type, ':', routine_definition ORDER BY routine_name)"
        f" FROM information_schema.routines WHERE routine_schema = {lit}"
    )
    fp["triggers"] = server.root_sql(
        "SELECT group_concat(trigger_name, ':', action_statement ORDER BY trigger_name)"
        f" FROM information_schema.triggers WHERE trigger_schema = {lit}"
    )
    fp["events"] = server.root_sql(
        "SELECT group_concat(event_name, ':', event_definition ORDER BY event_name)"
        f" FROM information_schema.events WHERE event_schema = {lit}"
    )
    fp["auto_increment"] = server.root_sql(
        "SELECT group_concat(table_name, '=', coalesce(auto_increment, 0) ORDER BY table_name)"
        f" FROM information_schema.tables WHERE table_schema = {lit}"
    )
    return fp
