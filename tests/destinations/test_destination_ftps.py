"""Explicit FTPS (AUTH TLS) against a real pyftpdlib TLS server with a throwaway certificate."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from backupctl.destinations.base import AlreadyExists, NotFound
from backupctl.destinations.ftp import FTPDestination, FTPOptions
from backupctl.errors import DestinationError


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def ftps_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    # pyftpdlib serves TLS through pyopenssl (in the [test] extra); in CI its absence fails.
    if not os.environ.get("CI"):
        pytest.importorskip("OpenSSL", reason="pyftpdlib needs pyopenssl to serve TLS")
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import TLS_FTPHandler
    from pyftpdlib.servers import ThreadedFTPServer

    root = tmp_path_factory.mktemp("ftps")
    home = root / "home"
    home.mkdir()
    cert, key = _self_signed(root)
    authorizer = DummyAuthorizer()
    authorizer.add_user("backup", "s3cret-ftps", str(home), perm="elradfmwMT")
    handler: Any = type(
        "Handler",
        (TLS_FTPHandler,),
        {
            "authorizer": authorizer,
            "certfile": str(cert),
            "keyfile": str(key),
            "tls_control_required": True,
            "tls_data_required": True,
            "passive_ports": range(30300, 30400),
        },
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedFTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.2}, daemon=True)
    thread.start()
    yield port, cert
    server.close_all()


def _dest(port: int, cert: Path, monkeypatch: pytest.MonkeyPatch, **extra: object) -> FTPDestination:
    monkeypatch.setenv("TEST_FTPS_PASSWORD", "s3cret-ftps")
    options = FTPOptions.model_validate(
        {"type": "ftp", "host": "127.0.0.1", "port": port, "user": "backup", "password_env": "TEST_FTPS_PASSWORD",
         "tls": True, "ca_file": str(cert), "path": "/repo", **extra}
    )  # fmt: skip
    return FTPDestination("ftps", options)


def test_ftps_round_trip_verified_against_the_server_certificate(
    ftps_server: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, cert = ftps_server
    dest = _dest(port, cert, monkeypatch)
    data = os.urandom(3 << 20)
    dest.put("data/ab/abcdef", data)
    assert dest.get("data/ab/abcdef") == data
    assert dest.get("data/ab/abcdef", 1000, 4096) == data[1000:5096]
    assert dest.stat("data/ab/abcdef").size == len(data)
    assert [i.name for i in dest.list("data/")] == ["data/ab/abcdef"]
    dest.put("config", b"one", exclusive=True)
    with pytest.raises(AlreadyExists):
        dest.put("config", b"two", exclusive=True)
    dest.delete("data/ab/abcdef")
    with pytest.raises(NotFound):
        dest.get("data/ab/abcdef")
    dest.close()


def test_ftps_refuses_an_unverified_certificate(
    ftps_server: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, _cert = ftps_server
    monkeypatch.setenv("TEST_FTPS_PASSWORD", "s3cret-ftps")
    options = FTPOptions.model_validate(
        {"type": "ftp", "host": "127.0.0.1", "port": port, "user": "backup", "password_env": "TEST_FTPS_PASSWORD",
         "tls": True, "path": "/repo2"}
    )  # fmt: skip
    dest = FTPDestination("ftps", options)
    with pytest.raises(DestinationError) as err:
        dest.put("x", b"data")
    assert "s3cret-ftps" not in str(err.value)
    assert "certificate" in str(err.value).lower()
