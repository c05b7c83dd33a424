"""`schedule export`: crontab, systemd and Kubernetes renderings of the policies in use."""

from __future__ import annotations

import pytest
from ruamel.yaml import YAML

from backupctl.config.models import Config, DeploymentConfig
from backupctl.errors import BackupctlError
from backupctl.policy.export import export, on_calendar


@pytest.fixture
def config() -> Config:
    config = Config.model_validate(
        {
            "encryption": {"passphrase_env": "PW"},
            "policies": {
                "nightly": {
                    "schedules": [
                        {"daily": {"at": "21:00"}, "timezone": "Europe/Amsterdam"},
                        {"type": "incremental", "hourly": {"every": 6}, "timezone": "Europe/Amsterdam"},
                    ]
                },
                "csc": {"schedules": [{"interval": "24h"}]},
                "eom": {
                    "schedules": [{"monthly": {"day": "last", "at": "23:00"}, "timezone": "America/New_York"}]
                },
                "paused": {"status": "paused", "schedules": [{"cron": "0 1 * * *"}]},
                "unused": {"schedules": [{"cron": "0 2 * * *"}]},
            },
        }
    )
    config.deployments = {
        n: DeploymentConfig.model_construct(policy=p)
        for n, p in [
            ("app", "nightly"),
            ("db", "csc"),
            ("ledger", "eom"),
            ("web", None),
            ("tmp", "none"),
            ("p", "paused"),
        ]
    }
    return config


def test_crontab_is_one_run_due_line_per_minute(config: Config) -> None:
    text = export(config, "crontab", config_path="/etc/backupctl/config.yaml")
    active = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert active == ["BACKUPCTL_CONFIG=/etc/backupctl/config.yaml", "* * * * * backupctl schedule run-due"]
    assert "#   nightly/full [app]: TZ=Europe/Amsterdam 0 21 * * *" in text
    assert "#   default/incremental [web]: TZ=UTC 0 */2 * * *" in text
    assert "paused" not in text and "unused" not in text


def test_crontab_per_schedule_uses_cron_tz(config: Config) -> None:
    active = [
        ln for ln in export(config, "crontab", mode="per-schedule").splitlines() if not ln.startswith("#")
    ]
    assert active == [
        "CRON_TZ=America/New_York",
        "0 23 28-31 * * backupctl schedule run-due",
        "CRON_TZ=Europe/Amsterdam",
        "0 */6 * * * backupctl schedule run-due",
        "0 21 * * * backupctl schedule run-due",
        "CRON_TZ=UTC",
        "*/5 * * * * backupctl schedule run-due",
        "0 */2 * * * backupctl schedule run-due",
    ]


def test_systemd_timer_has_on_calendar_per_schedule_in_its_zone(config: Config) -> None:
    text = export(config, "systemd")
    assert "ExecStart=/usr/bin/env backupctl schedule run-due" in text
    calendars = [ln.split("=", 1)[1] for ln in text.splitlines() if ln.startswith("OnCalendar=")]
    assert calendars == [
        "*:0/5",
        "*-*-* 00,02,04,06,08,10,12,14,16,18,20,22:00:00 UTC",
        "*-*~01 23:00:00 America/New_York",
        "*-*-* 21:00:00 Europe/Amsterdam",
        "*-*-* 00,06,12,18:00:00 Europe/Amsterdam",
    ]
    assert "Persistent=true" in text and "WantedBy=timers.target" in text


def test_on_calendar_keeps_cron_or_semantics_of_days() -> None:
    assert on_calendar("30 5 * * mon-fri", "UTC") == ["Mon,Tue,Wed,Thu,Fri *-*-* 05:30:00 UTC"]
    assert on_calendar("0 5 1 * sun", "Europe/Berlin") == [
        "*-*-01 05:00:00 Europe/Berlin",
        "Sun *-*-* 05:00:00 Europe/Berlin",
    ]
    assert on_calendar("0 5 29 2 *", "UTC") == ["*-02-29 05:00:00 UTC"]


def test_kubernetes_cronjobs_forbid_concurrency_and_carry_time_zone(config: Config) -> None:
    docs = list(
        YAML(typ="safe").load_all(
            export(config, "kubernetes", image="ghcr.io/x/backupctl:1", namespace="ops")
        )
    )
    by_name = {d["metadata"]["name"]: d for d in docs}
    assert sorted(by_name) == [
        "backupctl-csc-full",
        "backupctl-default-incremental",
        "backupctl-eom-full",
        "backupctl-nightly-full",
        "backupctl-nightly-incremental",
    ]
    job = by_name["backupctl-nightly-full"]
    assert job["kind"] == "CronJob" and job["metadata"]["namespace"] == "ops"
    assert job["spec"]["schedule"] == "0 21 * * *"
    assert job["spec"]["timeZone"] == "Europe/Amsterdam"
    assert all(d["spec"]["concurrencyPolicy"] == "Forbid" for d in docs)
    container = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/x/backupctl:1" and container["args"] == ["schedule", "run-due"]
    assert by_name["backupctl-eom-full"]["spec"]["schedule"] == "0 23 28-31 * *"
    assert by_name["backupctl-csc-full"]["spec"]["schedule"] == "*/5 * * * *"


def test_unknown_format_is_an_error(config: Config) -> None:
    with pytest.raises(BackupctlError, match="unknown export format 'launchd'"):
        export(config, "launchd")
