"""Round-trip edits of a commented config: only the edited lines change, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from backupctl.errors import ConfigError, NotFoundError
from backupctl.policy import yaml_edit
from backupctl.policy.models import Policy

ORIGINAL = """\
# backupctl configuration
encryption:
  key_file: ~/.config/backupctl/key   # keep this safe

destinations:
  local:
    type: local
    path: /var/backups/backupctl

# Policies: when to back up and what to keep.
policies:
  nightly:
    # Mendix-like GFS
    schedules:
      - daily: {at: "21:00"}
        timezone: Europe/Amsterdam   # local time
    retention:
      keep_daily: 14     # two weeks
      keep_weekly: 13
      keep_monthly: 12

  hourly:
    schedules:
    - hourly: {every: 2}
    status: active    # Active or paused

deployments:
  app:
    sources:
      - type: files
        paths: ["/srv/app"]
    destinations: [local]
    policy: nightly   # see above
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(ORIGINAL)
    return path


def replaced(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_pause_changes_one_value_and_keeps_its_comment(config: Path) -> None:
    diff = yaml_edit.update_policy_fields(config, "hourly", {"status": "paused"})
    assert config.read_text() == replaced(ORIGINAL, "status: active    #", "status: paused    #")
    assert "-    status: active    # Active or paused" in diff
    assert "+    status: paused    # Active or paused" in diff
    assert (config.parent / "config.yaml.bak").read_text() == ORIGINAL


def test_nested_change_and_new_key_touch_nothing_else(config: Path) -> None:
    yaml_edit.update_policy_fields(config, "nightly", {"retention": {"keep_daily": 7}, "status": "paused"})
    expected = replaced(ORIGINAL, "keep_daily: 14     #", "keep_daily: 7     #")
    expected = replaced(expected, "      keep_monthly: 12\n", "      keep_monthly: 12\n    status: paused\n")
    assert config.read_text() == expected


def test_replacing_schedules_rewrites_only_that_list(config: Path) -> None:
    yaml_edit.update_policy_fields(
        config, "hourly", {"schedules": [{"cron": "0 5 * * *", "timezone": "UTC"}]}
    )
    expected = replaced(
        ORIGINAL, "    - hourly: {every: 2}\n", "    - cron: 0 5 * * *\n      timezone: UTC\n"
    )
    assert config.read_text() == expected


def test_new_policy_is_appended_and_validates(config: Path) -> None:
    yaml_edit.set_policy(
        config, "csc", {"schedules": [{"interval": "24h"}], "retention": {"keep_within": "90d"}}
    )
    text = config.read_text()
    addition = "  csc:\n    schedules:\n      - interval: 24h\n    retention:\n      keep_within: 90d\n"
    assert text == replaced(ORIGINAL, "# Active or paused\n", "# Active or paused\n" + addition)
    data = YAML(typ="safe").load(text)
    assert Policy.model_validate(data["policies"]["csc"]).schedules[0].interval == "24h"


def test_set_policy_on_an_existing_one_keeps_unchanged_lines(config: Path) -> None:
    yaml_edit.set_policy(
        config,
        "nightly",
        {
            "schedules": [{"daily": {"at": "21:00"}, "timezone": "Europe/Amsterdam"}],
            "retention": {"keep_daily": 14, "keep_weekly": 13},
        },
    )
    assert config.read_text() == replaced(ORIGINAL, "      keep_monthly: 12\n", "")


def test_delete_policy_removes_its_block_only(config: Path) -> None:
    yaml_edit.delete_policy(config, "hourly")
    block = (
        "\n  hourly:\n    schedules:\n    - hourly: {every: 2}\n    status: active    # Active or paused\n"
    )
    assert config.read_text() == replaced(ORIGINAL, block, "")
    with pytest.raises(NotFoundError):
        yaml_edit.delete_policy(config, "hourly")


def test_deployment_key_and_new_deployment(config: Path) -> None:
    yaml_edit.set_deployment_key(config, "app", "policy", "hourly")
    assert config.read_text() == replaced(ORIGINAL, "policy: nightly   #", "policy: hourly   #")
    yaml_edit.set_deployment_key(config, "app", "upload", False)
    assert config.read_text().endswith("policy: hourly   # see above\n    upload: false\n")
    before = config.read_text()
    yaml_edit.add_deployment(
        config, "app-clone", {"sources": [{"type": "files", "paths": ["/srv/x"]}], "destinations": ["local"]}
    )
    assert config.read_text().startswith(before)
    assert YAML(typ="safe").load(config.read_text())["deployments"]["app-clone"]["destinations"] == ["local"]
    with pytest.raises(ConfigError, match="already exists"):
        yaml_edit.add_deployment(config, "app", {"destinations": ["local"]})


def test_dry_run_and_no_op_write_nothing(config: Path) -> None:
    diff = yaml_edit.update_policy_fields(config, "hourly", {"status": "paused"}, dry_run=True)
    assert diff and config.read_text() == ORIGINAL
    assert yaml_edit.update_policy_fields(config, "hourly", {"status": "active"}) == ""
    assert not (config.parent / "config.yaml.bak").exists()


def test_policies_section_created_when_missing(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    start = "# mine\nencryption:\n    passphrase_env: PW   # four-space indent\n"
    path.write_text(start)
    yaml_edit.set_policy(path, "p", {"schedules": [{"cron": "0 1 * * *"}]})
    text = path.read_text()
    assert text.startswith(start)
    assert text[len(start) :] == "policies:\n    p:\n        schedules:\n          - cron: 0 1 * * *\n"
