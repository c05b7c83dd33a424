"""Destination `ftp`: a directory on an FTP or explicit-FTPS server, via ftplib.

An object is STORed under a hidden temporary name in its directory, then renamed into
place with RNFR/RNTO, so a reader never sees a partial object (on servers whose RNTO is
a rename(2), which replaces the target atomically). FTP has no create-if-absent, so an
exclusive put is check-then-rename: ``conditional_create=False``. Range reads use REST.
Listing needs MLSD (RFC 3659). An FTP control connection serves one transfer at a time,
so each thread borrows a connection from a small pool.
"""

from __future__ import annotations

import builtins
import datetime as dt
import ftplib
import io
import posixpath
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from backupctl.destinations._common import TMP_SUFFIX, ConnectionPool, Scrubber, check_name, secret, temp_name
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
)
from backupctl.errors import BackupctlError, DestinationError


class FTPOptions(DestinationOptions):
    type: Literal["ftp"] = "ftp"
    host: str = Field(description="FTP server host name or address.")
    port: int = Field(21, ge=1, le=65535, description="Control connection port.")
    user: str = Field("anonymous", description="User to log in as.")
    password_env: str | None = Field(None, description="Environment variable holding the password.")
    password_file: Path | None = Field(None, description="File holding the password.")
    path: str = Field("/", description="Repository directory on the server.")
    tls: bool = Field(False, description="Explicit FTPS (AUTH TLS), with the data connections encrypted too.")
    ca_file: Path | None = Field(None, description="CA bundle to verify the server's certificate (tls).")
    verify_tls: bool = Field(True, description="Verify the server's certificate and host name (tls).")
    passive: bool = Field(True, description="Passive mode (the client opens data connections).")
    timeout: float = Field(30.0, gt=0, description="Seconds to wait for the connection and each reply.")

    @model_validator(mode="after")
    def _check(self) -> FTPOptions:
        if self.password_env and self.password_file:
            raise ValueError("set password_env or password_file, not both")
        return self


class FTPDestination(Destination):
    Options = FTPOptions
    capabilities = Capabilities(
        conditional_create=False,
        range_reads=True,
        notes=("exclusive put is check-then-rename: two writers racing for one name can both succeed",),
    )

    def __init__(self, name: str, options: DestinationOptions) -> None:
        super().__init__(name, options)
        assert isinstance(options, FTPOptions)
        self.opts = options
        self._scrub = Scrubber()
        self._password = self._scrub.add(secret(options.password_env, options.password_file, "ftp password"))
        self._root = "/" + options.path.strip("/") if options.path.strip("/") else ""
        self._made_dirs: set[str] = set()
        self._pool: ConnectionPool[ftplib.FTP] = ConnectionPool(
            self._connect, _quit, options.connections, healthy=_still_usable
        )

    @property
    def location(self) -> str:
        scheme = "ftps" if self.opts.tls else "ftp"
        port = "" if self.opts.port == 21 else f":{self.opts.port}"
        return f"{scheme}://{self.opts.user}@{self.opts.host}{port}{self._root or '/'}"

    @property
    def _where(self) -> str:
        return f"destination {self.name!r} ({self.location})"

    def _connect(self) -> ftplib.FTP:
        ftp: ftplib.FTP
        try:
            if self.opts.tls:
                context = ssl.create_default_context(
                    cafile=str(self.opts.ca_file) if self.opts.ca_file else None
                )
                if not self.opts.verify_tls:
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                ftp = ftplib.FTP_TLS(context=context, timeout=self.opts.timeout)
            else:
                ftp = ftplib.FTP(timeout=self.opts.timeout)
            ftp.connect(self.opts.host, self.opts.port)
            ftp.login(self.opts.user, self._password or "")
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.prot_p()
            ftp.set_pasv(self.opts.passive)
            ftp.voidcmd("TYPE I")  # binary: exact bytes, and SIZE is allowed
        except Exception as exc:
            raise self._error(exc, "") from None
        return ftp

    def _error(self, exc: BaseException, name: str) -> BackupctlError:
        where = self._where + (f": {name}" if name else "")
        if isinstance(exc, BackupctlError):
            return exc
        reply = self._scrub(str(exc).strip())
        code = reply[:3]
        if isinstance(exc, ftplib.error_perm):
            if code == "530":
                return PermissionDenied(
                    f"{where}: login refused for user {self.opts.user!r}",
                    hint="check user and the password reference",
                )
            if code == "550":
                return NotFound(f"{where}: no such object")
            if code == "552":
                return StorageFull(f"{where}: storage allocation exceeded ({reply})")
            return DestinationError(f"{where}: server replied {reply}")
        if isinstance(exc, ftplib.error_temp):
            if code == "452":
                return StorageFull(f"{where}: insufficient storage on the server ({reply})")
            return Transient(f"{where}: server replied {reply}")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return PermissionDenied(
                f"{where}: TLS certificate not trusted ({exc.verify_message})",
                hint="set ca_file, or fix the certificate",
            )
        if isinstance(exc, ftplib.error_reply | ftplib.error_proto):
            return DestinationError(f"{where}: unexpected reply {reply}")
        if isinstance(exc, OSError | EOFError):
            return Transient(f"{where}: {type(exc).__name__}: {reply or 'connection lost'}")
        return DestinationError(f"{where}: {type(exc).__name__}: {reply}")

    def _path(self, name: str) -> str:
        check_name(name)
        return f"{self._root}/{name}"

    def _makedirs(self, ftp: ftplib.FTP, directory: str) -> None:
        if not directory or directory == "/" or directory in self._made_dirs:
            return
        self._makedirs(ftp, posixpath.dirname(directory))
        try:
            ftp.mkd(directory)
        except ftplib.error_perm:
            pass  # exists already (or cannot be made: the STOR that follows says so)
        self._made_dirs.add(directory)

    def put(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        final = self._path(name)
        tmp = temp_name(final)
        try:
            with self._pool.borrow() as ftp:
                self._makedirs(ftp, posixpath.dirname(final))
                ftp.storbinary(f"STOR {tmp}", io.BytesIO(data))
                try:
                    if exclusive and _size(ftp, final) is not None:
                        raise AlreadyExists(f"{self._where}: {name}: already exists")
                    try:
                        ftp.rename(tmp, final)
                    except ftplib.error_perm:
                        # Some servers refuse RNTO onto an existing file: replace it.
                        if exclusive or _size(ftp, final) is None:
                            raise
                        ftp.delete(final)
                        ftp.rename(tmp, final)
                except BaseException:
                    _try_delete(ftp, tmp)
                    raise
        except Exception as exc:
            err = self._error(exc, name)
            if isinstance(err, NotFound):  # 550 on STOR/RNTO: the directory is not writable
                err = PermissionDenied(f"{self._where}: {name}: cannot write ({str(exc).strip()})")
            raise err from None

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        path = self._path(name)
        if length == 0:
            self.stat(name)
            return b""
        try:
            with self._pool.borrow() as ftp:
                if offset == 0 and length is None:
                    chunks: builtins.list[bytes] = []
                    ftp.retrbinary(f"RETR {path}", chunks.append)
                    return b"".join(chunks)
                return _read_range(ftp, path, offset, length)
        except Exception as exc:
            raise self._error(exc, name) from None

    def stat(self, name: str) -> ObjectInfo:
        try:
            with self._pool.borrow() as ftp:
                size = _size(ftp, self._path(name))
        except Exception as exc:
            raise self._error(exc, name) from None
        if size is None:
            raise NotFound(f"{self._where}: {name}: no such object")
        return ObjectInfo(name, size)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        found: builtins.list[ObjectInfo] = []
        try:
            with self._pool.borrow() as ftp:
                self._walk(ftp, base, prefix, found)
        except Exception as exc:
            raise self._error(exc, prefix) from None
        yield from found

    def _walk(
        self,
        ftp: ftplib.FTP,
        rel_dir: str,
        prefix: str,
        found: builtins.list[ObjectInfo],
        temps: bool = False,
    ) -> None:
        directory = f"{self._root}/{rel_dir}" if rel_dir else (self._root or "/")
        try:
            entries = builtins.list(ftp.mlsd(directory, facts=["type", "size", "modify"]))
        except ftplib.error_perm as exc:
            if str(exc).startswith(("550", "501")):  # pyftpdlib: "501 No such directory."
                return  # no such directory: nothing stored under it yet
            raise
        for filename, facts in entries:
            rel = f"{rel_dir}/{filename}" if rel_dir else filename
            kind = facts.get("type", "")
            if kind == "dir":
                if rel.startswith(prefix) or prefix.startswith(rel + "/"):
                    self._walk(ftp, rel, prefix, found, temps)
            elif kind == "file" and filename.endswith(TMP_SUFFIX) == temps and rel.startswith(prefix):
                found.append(ObjectInfo(rel, int(facts.get("size", 0)), _mlsd_time(facts.get("modify", ""))))

    def temporaries(self) -> Iterator[ObjectInfo]:
        # put()'s temp names (_common.temp_name), left behind by a killed write.
        found: builtins.list[ObjectInfo] = []
        try:
            with self._pool.borrow() as ftp:
                self._walk(ftp, "", "", found, temps=True)
        except Exception as exc:
            raise self._error(exc, "") from None
        yield from found

    def delete_temporary(self, name: str) -> None:
        if not name.endswith(TMP_SUFFIX):
            raise DestinationError(f"{name}: not a temporary file")
        try:
            with self._pool.borrow() as ftp:
                ftp.delete(self._path(name))
        except Exception as exc:
            raise self._error(exc, name) from None

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            with self._pool.borrow() as ftp:
                try:
                    ftp.delete(path)
                except ftplib.error_perm:
                    if _size(ftp, path) is None:
                        raise NotFound(f"{self._where}: {name}: no such object") from None
                    raise
        except Exception as exc:
            raise self._error(exc, name) from None

    def close(self) -> None:
        self._pool.close()


def _size(ftp: ftplib.FTP, path: str) -> int | None:
    """Size of a regular file, or None when there is none (SIZE answers 550)."""
    try:
        size = ftp.size(path)
    except ftplib.error_perm as exc:
        if str(exc).startswith("550"):
            return None
        raise
    return int(size) if size is not None else None


def _read_range(ftp: ftplib.FTP, path: str, offset: int, length: int | None) -> bytes:
    buf = bytearray()
    with ftp.transfercmd(f"RETR {path}", rest=offset) as conn:
        while length is None or len(buf) < length:
            chunk = conn.recv(65536 if length is None else min(65536, length - len(buf)))
            if not chunk:
                if isinstance(conn, ssl.SSLSocket):
                    conn.unwrap()
                break
            buf += chunk
    # Closing the data connection early makes the server answer 426 (aborted) or, if it
    # had already sent everything, 226; either way the control connection is in step.
    reply = _final_reply(ftp)
    if not reply.startswith(("2", "426", "450", "451")):
        raise ftplib.error_reply(reply)
    return bytes(buf)


def _final_reply(ftp: ftplib.FTP) -> str:
    try:
        return ftp.getresp()
    except (ftplib.error_temp, ftplib.error_perm) as exc:
        return str(exc)


def _try_delete(ftp: ftplib.FTP, path: str) -> None:
    try:
        ftp.delete(path)
    except Exception:
        pass


def _quit(ftp: ftplib.FTP) -> None:
    try:
        ftp.quit()
    except Exception:
        ftp.close()


def _still_usable(ftp: ftplib.FTP, exc: BaseException) -> bool:
    # A 5xx reply or one of our own typed answers leaves the control connection in step.
    return isinstance(exc, ftplib.error_perm | AlreadyExists | NotFound) and ftp.sock is not None


def _mlsd_time(value: str) -> float | None:
    """MLSD's `modify` fact (YYYYMMDDHHMMSS[.sss], UTC) as epoch seconds; None if absent."""
    try:
        return dt.datetime.strptime(value[:14], "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None
