"""The light WAL entry point (wal.py, raw YAML) and the engine (Service, Pydantic config)
must open the same repository the same way: same deployment, same primary destination, same
destination options, same key, same compression level, same wrapping, same errors. Both go
through backupctl/repo/opening.py; these tests catch a copy creeping back in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helpers
import pytest

from backupctl import wal
from backupctl.destinations.base import open_destination
from backupctl.destinations.retry import RetryingDestination
from backupctl.errors import ConfigError
from backupctl.repo.crypto import generate_key_file
from backupctl.repo.opening import wrap_destination

S3 = {"type": "s3", "bucket": "b", "endpoint": "http://127.0.0.1:9", "region": "us-east-1"}


def _config(
    tmp_path: Path, destinations: dict[str, Any], order: list[str], encryption: dict[str, Any]
) -> Path:
    doc = {
        "destinations": destinations,
        "deployments": {
            "db": {
                "sources": [{"type": "postgres", "host": "127.0.0.1", "databases": ["x"]}],
                "destinations": order,
            },
            "files": {"sources": [{"type": "files", "paths": [str(tmp_path)]}], "destinations": order},
        },
        "encryption": encryption,
        "settings": {"compression_level": 7},
    }
    path = tmp_path / "config.yaml"
    helpers.dump_yaml(doc, path)
    return path


@pytest.mark.parametrize(
    ("order", "primary"),
    [(["local", "offsite"], "local"), (["offsite", "local"], "local"), (["offsite"], "offsite")],
)
def test_light_and_full_config_open_the_same_repository(
    tmp_path: Path, order: list[str], primary: str
) -> None:
    key = tmp_path / "repo.key"
    generate_key_file(key)
    path = _config(
        tmp_path,
        {"local": {"type": "local", "path": str(tmp_path / "repo")}, "offsite": S3},
        order,
        {"key_file": str(key)},
    )
    light = wal.LightConfig.load(str(path))
    svc = helpers.service(path)
    try:
        assert light.deployment(None) == "db"  # the only deployment with a postgres source
        dests = dict(light.destinations("db"))
        assert list(dests) == order
        for name, options in dests.items():
            assert options.model_dump() == svc.config.destinations[name].model_dump()
            assert type(wrap_destination(open_destination(name, options))) is type(svc.destination(name))
        wrapped = wrap_destination(open_destination("offsite", dests["offsite"]))
        assert isinstance(wrapped, RetryingDestination)
        assert wrapped.attempts == 6  # the default `retries: 5`, plus the first attempt
        fewer = dests["offsite"].model_copy(update={"retries": 0})
        once = wrap_destination(open_destination("offsite", fewer))
        assert isinstance(once, RetryingDestination) and once.attempts == 1
        assert svc.primary_destination("db") == primary
        assert light.key_material() == svc.key_material()
        assert light.compression_level() == svc.config.settings.compression_level == 7
    finally:
        svc.close()


def test_passphrase_by_reference_and_its_errors_agree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = {"local": {"type": "local", "path": str(tmp_path / "repo")}}
    path = _config(tmp_path, local, ["local"], {"passphrase_env": "WAL_TEST_PASS"})
    monkeypatch.setenv("WAL_TEST_PASS", "correct horse")
    svc = helpers.service(path)
    try:
        assert wal.LightConfig.load(str(path)).key_material() == svc.key_material()
        for value in (None, ""):  # unset, then empty: the same error from both
            if value is None:
                monkeypatch.delenv("WAL_TEST_PASS")
            else:
                monkeypatch.setenv("WAL_TEST_PASS", value)
            with pytest.raises(ConfigError) as light_error:
                wal.LightConfig.load(str(path)).key_material()
            with pytest.raises(ConfigError) as full_error:
                svc.key_material()
            assert light_error.value.message == full_error.value.message
            assert "WAL_TEST_PASS" in light_error.value.message or "empty" in light_error.value.message
    finally:
        svc.close()


def test_a_key_file_others_can_read_is_refused_by_both(tmp_path: Path) -> None:
    key = tmp_path / "repo.key"
    generate_key_file(key)
    path = _config(
        tmp_path,
        {"local": {"type": "local", "path": str(tmp_path / "repo")}},
        ["local"],
        {"key_file": str(key)},
    )
    svc = helpers.service(path)
    key.chmod(0o644)
    try:
        with pytest.raises(Exception) as light_error:
            wal.LightConfig.load(str(path)).key_material()
        with pytest.raises(Exception) as full_error:
            svc.key_material()
        assert type(light_error.value) is type(full_error.value)
        assert str(light_error.value) == str(full_error.value) and "chmod" in str(full_error.value)
    finally:
        svc.close()
