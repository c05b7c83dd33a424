"""Session fixtures for the real storage servers (see tests/servers.py).

tests/conftest.py loads this module as a plugin. Each fixture starts its server once per
session, on 127.0.0.1 and a free port, and stops it at the end. A server that cannot
start skips its tests on a workstation and fails them when `CI` is set, so CI never
passes by skipping. `make_destination(type)` gives a fresh, empty destination of any type.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from servers import (
    BUCKET,
    AzureServer,
    FTPServer,
    GCSServer,
    S3Server,
    ServerUnavailable,
    SSHServer,
    make_bucket,
    make_container,
    make_gcs_bucket,
    run_azurite,
    run_fake_gcs,
    run_ftpd,
    run_moto,
    run_moto_with_auth,
    run_sshd,
)

from backupctl.destinations.base import Destination, DestinationOptions, open_destination, options_model

T = TypeVar("T")
DESTINATION_TYPES = ("local", "s3", "gcs", "azure", "sftp", "ftp")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def _serve(
    run: Callable[[], contextlib.AbstractContextManager[T]], setup: Callable[[T], None] | None = None
) -> Iterator[T]:
    try:
        cm = run()
        facts = cm.__enter__()
    except ServerUnavailable as exc:
        _unavailable(str(exc))
        raise
    try:
        if setup is not None:
            setup(facts)
        yield facts
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with _serve(run_moto, make_bucket) as facts:
        yield facts


@pytest.fixture(scope="session")
def s3_auth_server() -> Iterator[S3Server]:
    """moto with credential checks on: every request with unknown keys is refused."""
    with _serve(run_moto_with_auth) as facts:
        yield facts


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GCSServer]:
    with _serve(run_fake_gcs, make_gcs_bucket) as facts:
        yield facts


@pytest.fixture(scope="session")
def azure_server() -> Iterator[AzureServer]:
    with _serve(run_azurite, make_container) as facts:
        yield facts


@pytest.fixture(scope="session")
def ssh_server() -> Iterator[SSHServer]:
    with _serve(run_sshd) as facts:
        yield facts


@pytest.fixture(scope="session")
def ftp_server() -> Iterator[FTPServer]:
    with _serve(run_ftpd) as facts:
        yield facts


def destination_config(
    type_name: str, request: pytest.FixtureRequest, tmp_path: Path, **overrides: Any
) -> dict[str, Any]:
    """Config (as a YAML-like dict) of a fresh, empty destination of `type_name`.

    Secrets go through `*_env` references, as users are told to; the variables are set
    with monkeypatch. Each call gets its own prefix / directory.
    """
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    unique = f"t-{uuid.uuid4().hex[:10]}"
    cfg: dict[str, Any]
    if type_name == "local":
        cfg = {"type": "local", "path": str(tmp_path / unique), "fsync": False}
    elif type_name == "s3":
        s3: S3Server = request.getfixturevalue("s3_server")
        monkeypatch.setenv("TEST_S3_KEY_ID", s3.access_key)
        monkeypatch.setenv("TEST_S3_SECRET", s3.secret_key)
        cfg = {
            "type": "s3", "bucket": BUCKET, "prefix": unique, "endpoint": s3.endpoint, "region": s3.region,
            "force_path_style": True, "access_key_id_env": "TEST_S3_KEY_ID",
            "secret_access_key_env": "TEST_S3_SECRET", "multipart_threshold_mib": 8, "part_size_mib": 5,
        }  # fmt: skip
    elif type_name == "gcs":
        gcs: GCSServer = request.getfixturevalue("gcs_server")
        cfg = {
            "type": "gcs",
            "bucket": BUCKET,
            "prefix": unique,
            "endpoint": gcs.endpoint,
            "resumable_chunk_mib": 4,
        }
    elif type_name == "azure":
        az: AzureServer = request.getfixturevalue("azure_server")
        monkeypatch.setenv("TEST_AZURE_KEY", az.account_key)
        cfg = {
            "type": "azure", "container": BUCKET, "prefix": unique, "account_url": az.account_url,
            "account_key_env": "TEST_AZURE_KEY", "max_single_put_mib": 4, "block_size_mib": 4,
        }  # fmt: skip
    elif type_name == "sftp":
        ssh: SSHServer = request.getfixturevalue("ssh_server")
        cfg = {
            "type": "sftp", "host": ssh.host, "port": ssh.port, "user": ssh.user, "key_file": str(ssh.client_key),
            "known_hosts": str(ssh.known_hosts), "path": str(ssh.root / unique),
        }  # fmt: skip
    elif type_name == "ftp":
        ftp: FTPServer = request.getfixturevalue("ftp_server")
        monkeypatch.setenv("TEST_FTP_PASSWORD", ftp.password)
        cfg = {
            "type": "ftp", "host": ftp.host, "port": ftp.port, "user": ftp.user,
            "password_env": "TEST_FTP_PASSWORD", "path": f"/{unique}",
        }  # fmt: skip
    else:
        raise ValueError(type_name)
    cfg.update(overrides)
    return cfg


def build_destination(cfg: dict[str, Any], name: str = "test") -> Destination:
    model: type[DestinationOptions] = options_model(cfg["type"])
    return open_destination(name, model.model_validate(cfg))


@pytest.fixture
def make_destination(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Destination]]:
    """`make_destination(type, **option_overrides)` -> a fresh destination, closed afterwards."""
    made: list[Destination] = []

    def make(type_name: str, **overrides: Any) -> Destination:
        dest = build_destination(destination_config(type_name, request, tmp_path, **overrides))
        made.append(dest)
        return dest

    yield make
    for dest in made:
        dest.close()
