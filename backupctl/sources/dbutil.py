"""Helpers shared by the database sources: secrets for child processes, subprocess streams,
option files, directory helpers (the lifecycle itself is sources/database.py).

Secrets reach client tools only through files in a private (0700) temporary directory
under this run's directory (backupctl/tempdir.py), each written 0600 and removed when the
source is done (or, after kill -9, by the next run): a pgpass file for PostgreSQL
(`PGPASSFILE`), an option file for MariaDB (`--defaults-extra-file`, which must be the
first argument). They never appear in argv, in the child's environment, or in an error
message: every message built from a tool's stderr goes through `Secrets.redact`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from backupctl.errors import SourceError
from backupctl.events import InfoEvent
from backupctl.tempdir import make_dir, unnamed_file

STDERR_LIMIT = 4000  # characters of a tool's stderr kept in an error message


def find_tool(
    names: Sequence[str], *, hint: str, extra: Sequence[str] = (), error: type[SourceError] = SourceError
) -> str:
    """The path of the first of `names` on PATH, else the first executable of `extra`
    (absolute paths, for tools outside a user's PATH such as /usr/sbin); raises `error`
    naming every candidate, with `hint`, when none is there."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    for path in extra:
        if os.access(path, os.X_OK):
            return path
    raise error(f"none of {', '.join(names)} is installed", hint=hint)


class Secrets:
    """A private temporary directory holding credential files for child processes."""

    def __init__(self, prefix: str = "backupctl-db-") -> None:
        self._dir: Path | None = None
        self._prefix = prefix
        self._values: list[str] = []

    @property
    def dir(self) -> Path:
        if self._dir is None:
            # In this run's private directory, so a kill -9 leaves nothing readable by others
            # and the next run removes it (backupctl/tempdir.py).
            self._dir = make_dir(self._prefix)
        return self._dir

    def write(self, name: str, text: str, secret: str | None = None) -> Path:
        """Create `name` with mode 0600 (never readable by others, not even briefly)."""
        if secret:
            self._values.append(secret)
        path = self.dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        return path

    def redact(self, text: str) -> str:
        for value in self._values:
            if value:
                text = text.replace(value, "<redacted>")
        return text

    def cleanup(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def pgpass_line(user: str | None, password: str) -> str:
    """One pgpass line matching any host, port and database for `user` (escaping ':' and '\\')."""

    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    return f"*:*:*:{esc(user) if user else '*'}:{esc(password)}\n"


def mysql_option_file(password: str) -> str:
    """An option file giving the password to every MariaDB/MySQL client and to mariabackup."""
    quoted = '"' + password.replace("\\", "\\\\").replace('"', '\\"') + '"'
    groups = ("client", "mariadb-client", "mariabackup", "mariadb-backup", "xtrabackup")
    return "".join(f"[{group}]\npassword={quoted}\n" for group in groups)


def _tail(data: bytes) -> str:
    text = data.decode("utf-8", "replace").strip()
    if len(text) > STDERR_LIMIT:
        text = "..." + text[-STDERR_LIMIT:]
    return text


def direct_program(name: str) -> str:
    """`name`, or the binary Debian's pg_wrapper would run for it when `name` is a bare
    PostgreSQL client name that resolves to pg_wrapper (/usr/bin/psql, pg_dump...).

    pg_wrapper is a Perl script that costs ~20 ms per call before the tool starts, five
    times per backup. Without a cluster chosen for it (PGCLUSTER, ~/.postgresqlrc,
    /etc/postgresql-common/user_clusters), it runs the newest installed version for a
    server over the network; so do we, from /usr/lib/postgresql/<version>/bin. A newer
    client works with an older server (pg_dump requires it). Anything else is left alone.
    """
    if os.sep in name or os.environ.get("PGCLUSTER") or _pg_clusters_configured():
        return name  # checked on every call: a daemon sees a ~/.postgresqlrc made after it started
    return _direct_program(name, os.environ.get("PATH", ""))


@functools.cache
def _direct_program(name: str, path: str) -> str:
    found = shutil.which(name, path=path)
    if found is None or os.path.basename(os.path.realpath(found)) != "pg_wrapper":
        return name
    candidates = []
    for binary in Path("/usr/lib/postgresql").glob(f"*/bin/{name}"):
        version = binary.parent.parent.name
        if re.fullmatch(r"\d+(\.\d+)?", version) and os.access(binary, os.X_OK):
            candidates.append((tuple(int(p) for p in version.split(".")), str(binary)))
    return max(candidates)[1] if candidates else name


def _pg_clusters_configured() -> bool:
    """Whether a user or the system chose clusters for pg_wrapper (then it decides)."""
    if (Path.home() / ".postgresqlrc").exists():
        return True
    try:
        text = Path("/etc/postgresql-common/user_clusters").read_text()
    except OSError:
        return False
    return any(line.strip() and not line.lstrip().startswith("#") for line in text.splitlines())


PIPE_SIZE = 1 << 20  # Linux's default /proc/sys/fs/pipe-max-size


def _widen_pipe(fd: int) -> None:
    """Give a tool's stdout pipe 1 MiB instead of 64 KiB (Linux), so the tool writes on for a
    few milliseconds while the reader thread waits for the GIL. Best effort: other systems,
    or a user over its pipe-user-pages quota, keep the default."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setsize, PIPE_SIZE)


class ToolProcess:
    """A child process whose stderr is captured in a temporary file.

    `check()` waits for it and raises SourceError with the tool's own (redacted) message
    when it exited non-zero; `kill()` stops it and its process group.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        secrets: Secrets | None = None,
        what: str | None = None,
        stdin: bool = False,
        stdout: bool = True,
        cwd: str | Path | None = None,
    ) -> None:
        self.argv = [direct_program(argv[0]), *argv[1:]]
        self.what = what or Path(argv[0]).name
        self._secrets = secrets
        self._stderr = unnamed_file()  # closed in _close_pipes
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=self._stderr,
                env=env if env is not None else child_env(),
                cwd=cwd,
                start_new_session=True,
            )
        except FileNotFoundError:
            self._stderr.close()
            raise SourceError(
                f"{self.what}: program {argv[0]!r} not found", hint="install the database client tools"
            ) from None
        self._result: tuple[int, str] | None = None
        if self.proc.stdout is not None:
            _widen_pipe(self.proc.stdout.fileno())

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def output(self) -> IO[bytes]:
        """stdout for a backup's stream: the tool is checked (`check()`) as soon as its output
        ends, by whoever reads that end (the engine's read-ahead thread). So a failed dump
        fails the backup at once, not after every later database was dumped, and a finished
        tool is reaped and its pipes and stderr file closed then, not when the whole backup
        finishes (a server with hundreds of databases would otherwise run out of file
        descriptors). finish() calls check() again and gets the same result."""
        return _CheckedAtEnd(self)  # type: ignore[return-value]

    def stderr_text(self) -> str:
        if self._stderr.closed:
            return self._result[1] if self._result else ""
        self._stderr.seek(0)
        text = _tail(self._stderr.read())
        return self._secrets.redact(text) if self._secrets else text

    def check(self, timeout: float | None = None) -> str:
        """Wait for the exit; return stderr on success, raise SourceError otherwise."""
        if self._result is None:
            if self.proc.stdout is not None and not self.proc.stdout.closed:
                # Drain so a tool blocked on a full pipe can exit (the reader stopped early).
                with contextlib.suppress(OSError, ValueError):
                    while self.proc.stdout.read(1 << 16):
                        pass
            try:
                rc = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise SourceError(f"{self.what} did not finish within {timeout} s") from None
            message = self.stderr_text()
            self._close_pipes()
            self._result = (rc, message)
        rc, message = self._result
        if rc != 0:
            reason = f"exit code {rc}" if rc > 0 else f"killed by signal {-rc}"
            raise SourceError(f"{self.what} failed ({reason}): {message or '(no error output)'}")
        return message

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self._close_pipes()

    def feed(self, chunks: Iterable[bytes]) -> None:
        """Write `chunks` to the tool's stdin (started with stdin=True) and close it.

        A tool that exits early (broken pipe) is left for `check()` to report with its own
        message; any other failure, an interrupt included, kills it.
        """
        assert self.proc.stdin is not None
        try:
            for chunk in chunks:
                self.proc.stdin.write(chunk)
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        except BaseException:
            self.kill()
            raise

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError, ValueError):
                    pipe.close()
        with contextlib.suppress(OSError, ValueError):
            self._stderr.close()


class _CheckedAtEnd:
    """ToolProcess.output(): read() returns the tool's stdout; at its end, checks the tool."""

    def __init__(self, tool: ToolProcess) -> None:
        self._tool = tool
        self._stream = tool.stdout

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        if not data and n != 0:
            self._tool.check()  # raises SourceError with the tool's message if it failed
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.close()


def run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    secrets: Secrets | None = None,
    what: str | None = None,
    input_chunks: Iterable[bytes] | None = None,
    timeout: float | None = None,
    cwd: str | Path | None = None,
) -> str:
    """Run a tool to completion, optionally feeding `input_chunks` to its stdin; return stdout.

    A tool that exits early (stdin closed) is reported with its own message, not as a
    broken pipe.
    """
    tool = ToolProcess(argv, env=env, secrets=secrets, what=what, stdin=input_chunks is not None, cwd=cwd)
    if input_chunks is None:
        try:
            out, _ = tool.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            tool.kill()
            raise SourceError(f"{tool.what} did not finish within {timeout} s") from None
        except BaseException:
            tool.kill()
            raise
        tool.check()
        return out.decode("utf-8", "replace")
    assert tool.proc.stdin is not None
    # Read stdout in a thread so a chatty tool never blocks on a full pipe while we write.
    out_parts: list[bytes] = []

    def drain() -> None:
        with contextlib.suppress(OSError, ValueError):
            for block in iter(lambda: tool.stdout.read(1 << 16), b""):
                out_parts.append(block)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        for chunk in input_chunks:
            try:
                tool.proc.stdin.write(chunk)
            except BrokenPipeError:
                break  # the tool exited; its exit code and stderr say why
        with contextlib.suppress(BrokenPipeError, OSError):
            tool.proc.stdin.close()
    except BaseException:
        tool.kill()
        raise
    reader.join()
    tool.check(timeout=timeout)
    return b"".join(out_parts).decode("utf-8", "replace")


# Variables the loaded configuration names as secrets (see note_config_secrets): database
# passwords of every deployment's sources, and the repository's own secrets (passphrase,
# destination keys).
_database_secrets: set[str] = set()
_repository_secrets: set[str] = set()
_config_lock = threading.Lock()
# Variable names that look like they hold a secret, whoever set them.
_SECRET_NAME = re.compile(
    r"PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|CREDENTIAL|ACCOUNT_KEY|CONNECTION_STRING|_PWD$", re.IGNORECASE
)
# The client tools' own variables: a source without a configured password lets the user's
# PGPASSWORD / MYSQL_PWD apply (a source with one drops them and uses its file instead).
_CLIENT_OWN = frozenset({"PGPASSWORD", "MYSQL_PWD"})


def note_config_secrets(*, database: Iterable[str], repository: Iterable[str]) -> None:
    """Record the secret variables a configuration names (called by the config loader)."""
    with _config_lock:
        _database_secrets.update(n for n in database if n)
        _repository_secrets.update(n for n in repository if n)


def child_env(
    extra: dict[str, str] | None = None, drop: Iterable[str] = (), *, repository_access: bool = False
) -> dict[str, str]:
    """The environment for a child process: ours minus every secret it does not need, plus
    `extra`, with C messages.

    Removed: `drop`; every database password variable the configuration names (another
    deployment's password must never reach pg_dump); and, unless `repository_access`, the
    repository's secret variables (passphrase, destination keys) and every variable whose
    name looks like a secret (`*PASSWORD*`, `*SECRET*`, `*TOKEN*`, ...) except the tools' own
    PGPASSWORD / MYSQL_PWD. A tool's own password reaches it through a file (PGPASSFILE,
    --defaults-extra-file) that the caller puts in `extra` or argv. `repository_access` is
    for a server whose restore_command runs `backupctl wal fetch`, which needs the repository.
    """
    with _config_lock:
        dropped = set(drop) | _database_secrets
        if not repository_access:
            dropped |= _repository_secrets
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in dropped and (repository_access or k in _CLIENT_OWN or not _SECRET_NAME.search(k))
    }
    env["LC_MESSAGES"] = "C"
    env.update(extra or {})
    return env


class ChunkReader:
    """A read-only file-like object over an iterator of byte chunks (for tarfile's stream mode)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while not self._eof and (n < 0 or len(self._buf) < n):
            try:
                self._buf += next(self._chunks)
            except StopIteration:
                self._eof = True
        if n < 0:
            data, self._buf = self._buf, b""
        else:
            data, self._buf = self._buf[:n], self._buf[n:]
        return data


def ensure_empty_dir(path: Path, *, what: str) -> None:
    """Refuse a non-empty directory; create a missing one (mode 0700)."""
    if path.exists():
        if not path.is_dir():
            raise SourceError(f"{what}: {path} exists and is not a directory")
        if any(path.iterdir()):
            raise SourceError(
                f"{what}: {path} is not empty",
                hint="restore into an empty or new directory; move the current data aside first",
            )
    else:
        path.mkdir(parents=True, mode=0o700)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid, follow_symlinks=False)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def write_stream(path: Path, chunks: Iterable[bytes], mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)


def safe_name(name: str) -> str:
    """A database name as one path component: '/', '%' and control characters escaped as %XX."""
    out: list[str] = []
    for ch in name:
        if ch in "/%\\" or ord(ch) < 32 or (ch == "." and not out):
            out.append(f"%{ord(ch):02X}")
        else:
            out.append(ch)
    return "".join(out) or "%00"


def target_names(backed_up: list[str], configured: list[str] | str, reporter: Any) -> dict[str, str]:
    """Where each backed-up database goes when the receiving deployment lists its databases.

    A deployment never has databases restored into it that it does not list: with the same
    names nothing is renamed; one database into a deployment of one other database
    (`restore --to`) is restored under that name; any other mismatch is refused.
    """
    if configured == "all" or not isinstance(configured, list) or set(backed_up) <= set(configured):
        return {}
    if len(backed_up) == 1 and len(configured) == 1:
        reporter.emit(InfoEvent(f"restoring database {backed_up[0]!r} as {configured[0]!r}"))
        return {backed_up[0]: configured[0]}
    outside = sorted(set(backed_up) - set(configured))
    raise SourceError(
        f"refusing to restore database(s) {', '.join(outside)}: the receiving deployment lists only "
        f"{', '.join(configured)}",
        hint="restore into a deployment that lists these databases, or use `backupctl backup clone`",
    )
