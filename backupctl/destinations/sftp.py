"""Destination `sftp`: a directory on an SSH server, via paramiko.

An object is written to a hidden temporary file next to its final name, then renamed:
``posix-rename@openssh.com`` (atomic replace) for a plain put, and the plain SFTP
RENAME for an exclusive put, which the SFTP v3 protocol defines to fail when the target
exists (OpenSSH implements it with link(2) + unlink(2), so it is atomic).

The server's host key must already be in known_hosts: an unknown key is refused with
the command that adds it, a changed key is refused outright. SFTP sessions are not
thread-safe, so each thread borrows a connection from a small pool.
"""

from __future__ import annotations

import builtins
import errno
import os
import posixpath
import socket
import stat as stat_mod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from backupctl.destinations._common import (
    TMP_SUFFIX,
    ConnectionPool,
    Scrubber,
    check_name,
    secret,
    temp_name,
)
from backupctl.destinations.base import (
    AlreadyExists,
    Capabilities,
    Destination,
    DestinationOptions,
    NotFound,
    ObjectInfo,
    PermissionDenied,
    StorageFull,
    Transient,
    require_module,
)
from backupctl.errors import BackupctlError, DestinationError


class SFTPOptions(DestinationOptions):
    type: Literal["sftp"] = "sftp"
    host: str = Field(description="SSH server host name or address.")
    port: int = Field(22, ge=1, le=65535, description="SSH port.")
    user: str = Field(description="User to log in as.")
    path: str = Field(
        ".", description="Repository directory on the server (relative to the login directory)."
    )
    key_file: Path | None = Field(None, description="Private key file (OpenSSH format).")
    key_passphrase_env: str | None = Field(
        None, description="Environment variable holding the key's passphrase."
    )
    key_passphrase_file: Path | None = Field(None, description="File holding the key's passphrase.")
    password_env: str | None = Field(None, description="Environment variable holding the password.")
    password_file: Path | None = Field(None, description="File holding the password.")
    known_hosts: Path = Field(
        Path("~/.ssh/known_hosts"), description="known_hosts file the server's host key is checked against."
    )
    timeout: float = Field(30.0, gt=0, description="Seconds to wait for the connection and each reply.")

    @model_validator(mode="after")
    def _check(self) -> SFTPOptions:
        if self.password_env and self.password_file:
            raise ValueError("set password_env or password_file, not both")
        return self


class SFTPDestination(Destination):
    Options = SFTPOptions
    capabilities = Capabilities(
        conditional_create=True,
        range_reads=True,
        notes=("exclusive put relies on SFTP RENAME refusing an existing target (true for OpenSSH)",),
    )

    def __init__(self, name: str, options: DestinationOptions) -> None:
        super().__init__(name, options)
        assert isinstance(options, SFTPOptions)
        self.opts = options
        self._paramiko = require_module("paramiko", "sftp")
        self._scrub = Scrubber()
        self._password = self._scrub.add(secret(options.password_env, options.password_file, "sftp password"))
        self._passphrase = self._scrub.add(
            secret(options.key_passphrase_env, options.key_passphrase_file, "sftp key passphrase")
        )
        self._known_hosts = Path(os.path.expanduser(str(options.known_hosts)))
        self._root = options.path.rstrip("/") or "/"
        self._made_dirs: set[str] = set()
        self._pool: ConnectionPool[Any] = ConnectionPool(
            self._connect, self._disconnect, options.connections, healthy=_session_still_usable
        )

    @property
    def location(self) -> str:
        port = "" if self.opts.port == 22 else f":{self.opts.port}"
        return f"sftp://{self.opts.user}@{self.opts.host}{port}/{self._root.lstrip('/')}"

    @property
    def _where(self) -> str:
        return f"destination {self.name!r} ({self.location})"

    # --- connections ----------------------------------------------------------------------

    def _host_key_name(self) -> str:
        return self.opts.host if self.opts.port == 22 else f"[{self.opts.host}]:{self.opts.port}"

    def _connect(self) -> Any:
        paramiko = self._paramiko
        client = paramiko.SSHClient()
        if self._known_hosts.is_file():
            client.load_system_host_keys(str(self._known_hosts))  # read-only: never written back
        client.set_missing_host_key_policy(_RefuseUnknownHost(self))
        pkey = None
        if self.opts.key_file:
            key_path = Path(os.path.expanduser(str(self.opts.key_file)))
            try:
                pkey = paramiko.PKey.from_path(key_path, password=self._passphrase)
            except FileNotFoundError:
                raise DestinationError(f"{self._where}: key_file {key_path} does not exist") from None
            except (paramiko.SSHException, ValueError) as exc:
                raise DestinationError(
                    f"{self._where}: cannot load key_file {key_path} ({type(exc).__name__})",
                    hint="is it an OpenSSH private key, and is the passphrase reference right?",
                ) from None
        agent = pkey is None and self._password is None
        try:
            client.connect(
                self.opts.host,
                port=self.opts.port,
                username=self.opts.user,
                pkey=pkey,
                password=self._password,
                look_for_keys=agent,
                allow_agent=agent,
                timeout=self.opts.timeout,
                banner_timeout=self.opts.timeout,
                auth_timeout=self.opts.timeout,
            )
            sftp = client.open_sftp()
            sftp.get_channel().settimeout(self.opts.timeout)
        except BaseException as exc:
            client.close()
            if isinstance(exc, Exception):
                raise self._error(exc, "") from None
            raise
        return (client, sftp)

    @staticmethod
    def _disconnect(conn: Any) -> None:
        client, sftp = conn
        sftp.close()
        client.close()

    def _error(self, exc: BaseException, name: str) -> BackupctlError:
        where = self._where + (f": {name}" if name else "")
        paramiko = self._paramiko
        if isinstance(exc, BackupctlError):
            return exc
        if isinstance(exc, paramiko.BadHostKeyException):
            return PermissionDenied(
                f"{where}: the server's host key does not match {self._known_hosts} (possible man-in-the-middle)",
                hint=f"if the server's key really changed: ssh-keygen -R '{self._host_key_name()}' "
                f"-f {self._known_hosts}, then add the new one",
            )
        if isinstance(exc, paramiko.AuthenticationException):
            return PermissionDenied(
                f"{where}: authentication failed for user {self.opts.user!r}",
                hint="check key_file / password reference and the server's authorized_keys",
            )
        if isinstance(exc, FileNotFoundError) or getattr(exc, "errno", None) == errno.ENOENT:
            return NotFound(f"{where}: no such object")
        if isinstance(exc, PermissionError) or getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
            return PermissionDenied(
                f"{where}: permission denied", hint="check the remote directory's owner and mode"
            )
        if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            return StorageFull(f"{where}: no space left on the server")
        if isinstance(exc, socket.gaierror):
            return DestinationError(f"{where}: cannot resolve host {self.opts.host!r}")
        if isinstance(
            exc, paramiko.SSHException | EOFError | ConnectionError | TimeoutError | socket.timeout | OSError
        ):
            return Transient(f"{where}: {type(exc).__name__}: {self._scrub(str(exc)) or 'connection lost'}")
        return DestinationError(f"{where}: {type(exc).__name__}: {self._scrub(str(exc))}")

    # --- paths ----------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        check_name(name)
        return f"{self._root}/{name}"

    def _makedirs(self, sftp: Any, directory: str) -> None:
        if directory in self._made_dirs or directory in ("", "/", "."):
            return
        try:
            sftp.stat(directory)
        except FileNotFoundError:
            self._makedirs(sftp, posixpath.dirname(directory))
            try:
                sftp.mkdir(directory)
            except OSError:
                sftp.stat(directory)  # made by another thread meanwhile; else raise
        self._made_dirs.add(directory)

    # --- operations -----------------------------------------------------------------------

    def put(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        final = self._path(name)
        tmp = temp_name(final)
        try:
            with self._pool.borrow() as (_client, sftp):
                self._makedirs(sftp, posixpath.dirname(final))
                try:
                    with sftp.open(tmp, "wbx") as fh:
                        fh.set_pipelined(True)
                        fh.write(data)
                    if not exclusive:
                        sftp.posix_rename(tmp, final)
                        return
                    try:
                        sftp.rename(tmp, final)
                    except OSError:
                        if _exists(sftp, final):
                            raise AlreadyExists(f"{self._where}: {name}: already exists") from None
                        raise
                except BaseException:
                    try:
                        sftp.remove(tmp)
                    except Exception:
                        pass
                    raise
        except AlreadyExists:
            raise
        except Exception as exc:
            raise self._error(exc, name) from None

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(name)
        try:
            with self._pool.borrow() as (_client, sftp), sftp.open(path, "rb") as fh:
                if length is None:
                    size = fh.stat().st_size
                    if offset == 0:
                        fh.prefetch(size)
                    fh.seek(offset)
                    return bytes(fh.read())
                fh.seek(offset)
                return bytes(fh.read(length))
        except Exception as exc:
            raise self._error(exc, name) from None

    def stat(self, name: str) -> ObjectInfo:
        try:
            with self._pool.borrow() as (_client, sftp):
                st = sftp.stat(self._path(name))
        except Exception as exc:
            raise self._error(exc, name) from None
        if not stat_mod.S_ISREG(st.st_mode or 0):
            raise NotFound(f"{self._where}: {name}: no such object (not a regular file)")
        return ObjectInfo(name, int(st.st_size or 0))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the directory that can hold the prefix; collect first so that no
        # connection is held while the caller consumes the iterator.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        found: builtins.list[ObjectInfo] = []
        try:
            with self._pool.borrow() as (_client, sftp):
                self._walk(sftp, base, prefix, found)
        except Exception as exc:
            raise self._error(exc, prefix) from None
        yield from found

    def _walk(
        self, sftp: Any, rel_dir: str, prefix: str, found: builtins.list[ObjectInfo], temps: bool = False
    ) -> None:
        directory = f"{self._root}/{rel_dir}" if rel_dir else self._root
        try:
            entries = sftp.listdir_attr(directory)
        except FileNotFoundError:
            return
        for entry in entries:
            rel = f"{rel_dir}/{entry.filename}" if rel_dir else entry.filename
            mode = entry.st_mode or 0
            if stat_mod.S_ISDIR(mode):
                if rel.startswith(prefix) or prefix.startswith(rel + "/"):
                    self._walk(sftp, rel, prefix, found, temps)
            elif (
                stat_mod.S_ISREG(mode)
                and entry.filename.endswith(TMP_SUFFIX) == temps
                and rel.startswith(prefix)
            ):
                mtime = float(entry.st_mtime) if entry.st_mtime is not None else None
                found.append(ObjectInfo(rel, int(entry.st_size or 0), mtime))

    def temporaries(self) -> Iterator[ObjectInfo]:
        # put()'s temp names (_common.temp_name), left behind by a killed write.
        found: builtins.list[ObjectInfo] = []
        try:
            with self._pool.borrow() as (_client, sftp):
                self._walk(sftp, "", "", found, temps=True)
        except Exception as exc:
            raise self._error(exc, "") from None
        yield from found

    def delete_temporary(self, name: str) -> None:
        if not name.endswith(TMP_SUFFIX):
            raise DestinationError(f"{name}: not a temporary file")
        try:
            with self._pool.borrow() as (_client, sftp):
                sftp.remove(self._path(name))
        except Exception as exc:
            raise self._error(exc, name) from None

    def delete(self, name: str) -> None:
        try:
            with self._pool.borrow() as (_client, sftp):
                sftp.remove(self._path(name))
        except Exception as exc:
            raise self._error(exc, name) from None

    def close(self) -> None:
        self._pool.close()


def _session_still_usable(conn: Any, exc: BaseException) -> bool:
    # paramiko reports an SFTP status reply (no such file, permission denied, failure) as
    # an OSError; after one the session is fine if its transport is still up.
    client, _sftp = conn
    transport = client.get_transport()
    return isinstance(exc, AlreadyExists | OSError) and transport is not None and transport.is_active()


def _exists(sftp: Any, path: str) -> bool:
    try:
        sftp.stat(path)
    except FileNotFoundError:
        return False
    return True


class _RefuseUnknownHost:
    """paramiko MissingHostKeyPolicy: never trust a host key that is not in known_hosts."""

    def __init__(self, dest: SFTPDestination) -> None:
        self.dest = dest

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        opts = self.dest.opts
        fingerprint = key.fingerprint if hasattr(key, "fingerprint") else key.get_name()
        known = self.dest._known_hosts
        raise PermissionDenied(
            f"{self.dest._where}: host key of {self.dest._host_key_name()} ({fingerprint}) is not in {known}; "
            "refusing to connect",
            hint=f"check the fingerprint with the server's admin, then run: "
            f"ssh-keyscan -p {opts.port} {opts.host} >> {known}",
        )
