"""Safety hygiene (issue 11, items 11, 12, 14, 15): malformed configs, secrets in URLs and in
children's environments, temporary files of killed runs, ownership of repository objects.

Every test drives the real CLI in a subprocess against a real filesystem (and, where the
item is about PostgreSQL, the throwaway server of tests/conftest_db.py).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import helpers
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from backupctl.config.loader import parse_config, read_yaml
from backupctl.errors import ConfigError

# ---- item 12: every malformed config is a config error (exit 4, one line naming the place) ----

_VALID: dict[str, Any] = {
    "destinations": {
        "local": {"type": "local", "path": "/tmp/repo"},
        "offsite": {"type": "s3", "bucket": "b", "endpoint": "http://127.0.0.1:9000"},
    },
    "deployments": {
        "app": {
            "sources": [
                {"type": "files", "paths": ["/srv"]},
                {"type": "sqlite", "path": "/srv/db.sqlite"},
                {"type": "postgres", "databases": ["app"], "password_env": "PGPW"},
            ],
            "destinations": ["local", "offsite"],
            "policy": "nightly",
        }
    },
    "encryption": {"key_file": "/etc/backupctl.key"},
    "policies": {"nightly": {"schedules": [{"type": "full", "every": "1d"}]}},
    "settings": {"workers": 2},
}

_MALFORMED = {
    "destinations as a list": "destinations: [a, b]\nencryption: {key_file: /k}\n",
    "destinations as a string": "destinations: foo\nencryption: {key_file: /k}\n",
    "destinations as a bool": "destinations: true\nencryption: {key_file: /k}\n",
    "deployments as a list": "deployments: [a]\nencryption: {key_file: /k}\n",
    "deployments as a string": "deployments: app\nencryption: {key_file: /k}\n",
    "deployments as a bool": "deployments: false\nencryption: {key_file: /k}\n",
    "destination type a list": "destinations: {x: {type: [local]}}\nencryption: {key_file: /k}\n",
    "destination type a map": "destinations: {x: {type: {a: 1}}}\nencryption: {key_file: /k}\n",
    "source type a map": "deployments: {d: {sources: [{type: {a: 1}}], destinations: [x]}}\n",
    "source type a list": "deployments: {d: {sources: [{type: [files]}], destinations: [x]}}\n",
    "deep flow nesting": "destinations: " + "[" * 2000 + "]" * 2000 + "\n",
    "deep block nesting": "settings:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(2000)),
}


def _config_error_or_valid(raw: Any, path: Path) -> None:
    try:
        parse_config(raw, path)
    except ConfigError as exc:
        assert "\n" not in str(exc), str(exc)
        assert str(path) in str(exc)


@pytest.mark.parametrize("name", sorted(_MALFORMED))
def test_malformed_config_is_exit_4_naming_the_place(name: str, tmp_path: Path, cli: Any) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(_MALFORMED[name])
    result = cli("config", "validate", env={"BACKUPCTL_CONFIG": str(config)}, timeout=30)
    helpers.assert_one_line_error(result, 4, str(config))
    assert "internal error" not in result.stderr, str(result)


def test_config_that_is_not_utf8_is_exit_4(tmp_path: Path, cli: Any) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(b"destinations:\n  caf\xe9: {type: local, path: /x}\n")
    result = cli("config", "validate", env={"BACKUPCTL_CONFIG": str(config)})
    helpers.assert_one_line_error(result, 4, str(config), "UTF-8")


_JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.sampled_from(["", "local", "files", "s3", "1d", "x" * 40, "/tmp", "{", "*"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["type", "a", "path"]), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out += _paths(value, (*prefix, i))
    return out


@seed(20261203)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_configs_are_config_errors(data: st.DataObject, tmp_path: Path) -> None:
    """Replace one to three places of a valid config with junk: the loader either accepts the
    result or raises one ConfigError line naming the file; nothing else escapes."""
    doc = copy.deepcopy(_VALID)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(_paths(doc)))
        junk = data.draw(_JUNK)
        if not where:
            doc = junk
            continue
        parent = doc
        for part in where[:-1]:
            parent = parent[part]
        parent[where[-1]] = junk
    _config_error_or_valid(doc, tmp_path / "fuzz.yaml")


@seed(20261203)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.sampled_from(list("[]{}:-, \n\tab1&*!|>'\"#%@`")), max_size=200))
def test_fuzzed_yaml_text_is_a_config_error(text: str, tmp_path: Path) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_text("encryption: {key_file: /k}\n" + text)
    try:
        raw = read_yaml(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    _config_error_or_valid(raw, path)
