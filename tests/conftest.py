"""Core test fixtures: every test runs in its own XDG world under tmp_path.

Also loads the fixture plugins other test areas commit (servers, databases) when
those modules exist, so a single `pytest` run sees all fixtures.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

import helpers  # noqa: E402

pytest_plugins = [
    name for name in ("conftest_servers", "conftest_db") if importlib.util.find_spec(name) is not None
]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """XDG config/data/state dirs under tmp_path; no BACKUPCTL_CONFIG from the caller."""
    dirs = {
        "XDG_CONFIG_HOME": tmp_path / "xdg-config",
        "XDG_DATA_HOME": tmp_path / "xdg-data",
        "XDG_STATE_HOME": tmp_path / "xdg-state",
    }
    for var, path in dirs.items():
        path.mkdir()
        monkeypatch.setenv(var, str(path))
    monkeypatch.delenv("BACKUPCTL_CONFIG", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    return dirs


@pytest.fixture
def cli() -> Any:
    """`cli(*args, env=..., input=...)` runs backupctl in a subprocess -> helpers.CliResult."""
    return helpers.run_cli


class Deployment:
    """A config with one deployment `app` of the given sources to a local repository."""

    def __init__(
        self, root: Path, sources: list[dict[str, Any]], settings: dict[str, Any] | None = None
    ) -> None:
        self.root = root
        self.repository = root / "repo"
        self.key_file = root / "repo.key"
        self.config = helpers.write_config(
            root / "config.yaml",
            sources=sources,
            repository=self.repository,
            key_file=self.key_file,
            settings=settings,
        )
        self.env = {"BACKUPCTL_CONFIG": str(self.config)}

    def run(self, *args: Any, **kwargs: Any) -> helpers.CliResult:
        env = {**self.env, **kwargs.pop("env", {})}
        return helpers.run_cli(*args, env=env, **kwargs)

    def ok(self, *args: Any, **kwargs: Any) -> helpers.CliResult:
        env = {**self.env, **kwargs.pop("env", {})}
        return helpers.run_ok(*args, env=env, **kwargs)

    def create(self, *args: Any) -> str:
        """Take a backup; returns its full ID (exit 0 required)."""
        result = self.ok("backup", "create", "app", *args)
        return result.stdout.strip().splitlines()[-1]

    def list(self) -> list[dict[str, Any]]:
        return self.ok("backup", "list", "--all", "-o", "json").json()

    def show(self, backup_id: str) -> dict[str, Any]:
        return self.ok("backup", "show", backup_id, "-o", "json").json()

    def packs(self) -> set[str]:
        data = self.repository / "data"
        return (
            {p.name for p in data.rglob("*") if p.is_file() and not p.name.endswith(".tmp-backupctl")}
            if data.exists()
            else set()
        )


@pytest.fixture
def make_deployment(tmp_path: Path) -> Any:
    """`make_deployment(sources, settings=None)` -> Deployment (config under tmp_path/deploy-N)."""
    counter = iter(range(1000))

    def make(sources: list[dict[str, Any]], settings: dict[str, Any] | None = None) -> Deployment:
        root = tmp_path / f"deploy-{next(counter)}"
        root.mkdir()
        return Deployment(root, sources, settings)

    return make


@pytest.fixture
def sample_tree(tmp_path: Path) -> Path:
    return helpers.make_sample_tree(tmp_path / "src")


@pytest.fixture
def files_deployment(make_deployment: Any, sample_tree: Path) -> Iterator[Deployment]:
    yield make_deployment([{"type": "files", "paths": [str(sample_tree)]}])
