"""Fixtures for the throwaway database servers (see tests/dbservers.py).

tests/conftest.py loads this module as a plugin, so every test module can use them.
A server that cannot start skips its tests on a workstation and fails them when the `CI`
environment variable is set, so CI never passes by skipping.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from dbservers import MariaDBServer, PostgresServer, ServerUnavailable
from pitr_helpers import PitrDeployment, light_command

S = TypeVar("S", PostgresServer, MariaDBServer)


def _start(factory: Callable[[], S]) -> S:
    try:
        server = factory()
    except ServerUnavailable as exc:
        _unavailable(str(exc))
        raise
    try:
        server.start()
    except Exception as exc:
        server.stop()
        _unavailable(f"{type(server).__name__} would not start: {exc}")
        raise
    return server


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = _start(PostgresServer)
    yield server
    server.stop()


@pytest.fixture
def fresh_pg_server() -> Iterator[PostgresServer]:
    """A server of its own, for tests that kill it."""
    server = _start(PostgresServer)
    yield server
    server.stop()


@pytest.fixture
def second_fresh_pg_server() -> Iterator[PostgresServer]:
    """Another server of its own, e.g. the target of a server-wide `restore --to`."""
    server = _start(PostgresServer)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    server = _start(MariaDBServer)
    yield server
    server.stop()


@pytest.fixture
def fresh_mariadb_server() -> Iterator[MariaDBServer]:
    server = _start(MariaDBServer)
    yield server
    server.stop()


@pytest.fixture
def default_mariadb_server() -> Iterator[MariaDBServer]:
    """A server set up as a default `mariadb-install-db` (Debian's) and started with
    --skip-name-resolve: it holds an account at this machine's host name it cannot resolve."""
    server = _start(lambda: MariaDBServer(default_install=True))
    yield server
    server.stop()


@pytest.fixture
def pitr_pg(fresh_pg_server: PostgresServer) -> Iterator[Any]:
    """(server, deployment `app`): a throwaway PostgreSQL whose archive_command is backupctl's
    light entry point (run as postgres), set up with `pitr setup --apply`."""
    server = fresh_pg_server
    dep = PitrDeployment([server.options(method="pg_basebackup")])
    prefix = light_command()
    dep.ok("pitr", "setup", "app", "--command", prefix)  # creates the repository
    dep.hand_over()
    applied = dep.ok("pitr", "setup", "app", "--apply", "--command", prefix, "-o", "json").json()
    assert applied["applied"] and applied["restart_needed"] is False, applied
    assert "push %p" in applied["settings"]["archive_command"]
    assert server.password not in str(applied)
    yield server, dep
    dep.cleanup()
