"""Policy model validation, the default policy, and resolving a deployment's policy."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from backupctl.config.models import Config, DeploymentConfig
from backupctl.errors import NotFoundError
from backupctl.policy.models import DEFAULT_POLICY, Policy, Schedule, parse_duration
from backupctl.policy.resolve import deployments_using, effective_policy, get_policy, policies_in_use


def error_of(model, data) -> str:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"cron": "0 5 * *"}, "bad cron expression '0 5 * *'"),
        ({"cron": "61 5 * * *"}, "bad cron expression"),
        ({"cron": "0 5 30 2 *"}, "never matches"),
        ({"cron": "0 5 * * *", "timezone": "Europe/Berln"}, "unknown time zone 'Europe/Berln'"),
        ({"interval": "24 hours"}, "bad duration '24 hours'"),
        ({"interval": "0h"}, "must be longer than zero"),
        ({"daily": {"at": "25:00"}}, "bad time '25:00'"),
        ({"daily": {"at": "05:00", "days": ["mon", "funday"]}}, "unknown weekday 'funday'"),
        ({"hourly": {"every": 5}}, "does not divide a day"),
        ({"monthly": {"day": 32}}, "day 32"),
        (
            {"cron": "0 5 * * *", "daily": {"at": "05:00"}},
            "exactly one of cron, hourly, daily, monthly, interval",
        ),
        ({"type": "differential", "cron": "0 5 * * *"}, "'full' or 'incremental'"),
        ({"cron": "0 5 * * *", "tz": "UTC"}, "Extra inputs are not permitted"),
    ],
)
def test_schedule_errors_name_the_problem(data, message) -> None:
    assert message in error_of(Schedule, data)


def test_policy_and_retention_errors() -> None:
    assert "bad duration '90 days'" in error_of(Policy, {"retention": {"keep_within": "90 days"}})
    assert "unknown weekday 'sonday'" in error_of(Policy, {"retention": {"weekly_day": "sonday"}})
    assert "give a time zone offset" in error_of(Policy, {"created": "2026-11-20T05:00:00"})
    assert "Input should be 'active' or 'paused'" in error_of(Policy, {"status": "stopped"})


def test_durations() -> None:
    assert parse_duration("90d") == timedelta(days=90)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(weeks=2)


def test_default_policy_backs_up_every_two_hours_and_keeps_gfs() -> None:
    assert DEFAULT_POLICY.status == "active"
    assert [s.cron_expression() for s in DEFAULT_POLICY.schedules] == ["0 */2 * * *"]
    r = DEFAULT_POLICY.retention
    assert (r.keep_daily, r.keep_weekly, r.keep_monthly) == (14, 8, 12)


def _config(policies: dict[str, Any], deployments: dict[str, str | None]) -> Config:
    config = Config.model_validate({"encryption": {"passphrase_env": "PW"}, "policies": policies})
    config.deployments = {
        n: DeploymentConfig.model_construct(policy=p, sources=[], destinations=[])
        for n, p in deployments.items()
    }
    return config


def test_config_validates_policies_and_deployments_resolve_them() -> None:
    config = _config(
        {"nightly": {"schedules": [{"daily": {"at": "21:00"}}]}}, {"a": "nightly", "b": None, "c": "none"}
    )
    assert isinstance(config.policies["nightly"], Policy)
    assert effective_policy(config, "a") == ("nightly", config.policies["nightly"])
    assert effective_policy(config, "b") == ("default", DEFAULT_POLICY)
    assert effective_policy(config, "c") is None
    assert deployments_using(config, "default") == ["b"]
    assert list(policies_in_use(config)) == ["default", "nightly"]
    with pytest.raises(NotFoundError, match="no policy named 'weekly'"):
        get_policy(config, "weekly")
    # A user-defined `default` replaces the built-in one.
    own = _config({"default": {"schedules": [{"interval": "24h"}]}}, {"b": None})
    assert effective_policy(own, "b") == ("default", own.policies["default"])


def test_config_rejects_a_bad_policy_with_its_path() -> None:
    with pytest.raises(ValidationError) as info:
        Config.model_validate(
            {"encryption": {"passphrase_env": "PW"}, "policies": {"p": {"schedules": [{"cron": "x"}]}}}
        )
    assert info.value.errors()[0]["loc"][:4] == ("policies", "p", "schedules", 0)
