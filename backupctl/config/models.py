"""Pydantic models of the configuration file.

Destination and source entries are validated by their plugin's own `Options` model
(see backupctl.destinations.base / backupctl.sources.base); this module validates the
skeleton around them. Unknown keys are rejected everywhere.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator, model_validator

from backupctl.config.notifications import NotificationsConfig, NotifyRule
from backupctl.destinations.base import DestinationOptions
from backupctl.policy.models import Policy, parse_duration
from backupctl.sources.base import SourceOptions


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EncryptionConfig(_Strict):
    """Where the repository key comes from: exactly one of the three."""

    key_file: Path | None = Field(None, description="Key file created by `backupctl init` (mode 0600).")
    passphrase_env: str | None = Field(
        None, description="Environment variable holding a passphrase (scrypt)."
    )
    passphrase_file: Path | None = Field(None, description="File holding a passphrase (scrypt).")

    @model_validator(mode="after")
    def _exactly_one(self) -> EncryptionConfig:
        given = [n for n in ("key_file", "passphrase_env", "passphrase_file") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of key_file, passphrase_env, passphrase_file")
        return self


class PitrConfig(_Strict):
    """Point-in-time recovery run by the scheduler (docs/pitr.md, docs/scheduling.md)."""

    binlog_sync: str | None = Field(
        None,
        description="How often `schedule run-due` archives the MariaDB/MySQL binary logs, e.g. 5m "
        "(absent: never; run `binlog sync` yourself).",
    )
    flush: bool = Field(
        True,
        description="FLUSH BINARY LOGS before each scheduled sync, so the archive reaches up to it "
        "(false: only logs the server closed by itself).",
    )

    @field_validator("binlog_sync")
    @classmethod
    def _interval(cls, v: str | None) -> str | None:
        # run-due is woken once a minute: a shorter interval could never be kept.
        if v is not None and parse_duration(v) < dt.timedelta(minutes=1):
            raise ValueError(f"binlog_sync {v!r} is shorter than one minute")
        return v

    @property
    def binlog_sync_every(self) -> dt.timedelta | None:
        return None if self.binlog_sync is None else parse_duration(self.binlog_sync)


class DeploymentConfig(_Strict):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    sources: list[SerializeAsAny[SourceOptions]] = Field(
        min_length=1, description="What to back up: a list of sources (files, sqlite, postgres, mariadb)."
    )
    destinations: list[str] = Field(
        min_length=1,
        description="Destination names; backups are written to the first local one, then uploaded.",
    )
    policy: str | None = Field(
        None, description="Policy name; omitted = the `default` policy; `none` = no scheduled backups."
    )
    upload: bool = Field(
        True,
        description="Upload to remote destinations right after each backup (false: `backup upload` later).",
    )
    description: str = Field("", description="Free text shown in listings.")
    pitr: PitrConfig | None = Field(
        None, description="Point-in-time recovery the scheduler runs: `binlog_sync`, `flush`."
    )
    notify: list[NotifyRule] = Field(
        default_factory=list,
        description="Channels told about this deployment: `[{channel: NAME, on: failure|always}]` "
        "(docs/monitoring.md); added to its policy's.",
    )

    @model_validator(mode="after")
    def _pitr_engine(self) -> DeploymentConfig:
        if self.pitr is None or self.pitr.binlog_sync is None:
            return self
        types = {s.type for s in self.sources}
        if "mariadb" in types:
            return self
        if "postgres" in types:
            raise ValueError(
                "pitr.binlog_sync is for MariaDB/MySQL; PostgreSQL archives its WAL through "
                "archive_command: remove the key (`backupctl pitr setup` prints the archive_command)"
            )
        raise ValueError("pitr.binlog_sync needs a mariadb source: there are no binary logs to archive")


class Settings(_Strict):
    """Engine tuning; the defaults suit most machines."""

    compression_level: int = Field(3, ge=1, le=19, description="zstd level for compressible data.")
    pack_size_mib: int = Field(16, ge=1, le=512, description="Size at which a pack object is closed.")
    workers: int = Field(0, ge=0, le=64, description="Threads that compress and encrypt; 0 = one per CPU.")
    max_parallel_backups: int = Field(
        2, ge=1, le=64, description="Backups of different deployments the scheduler may run at once."
    )
    state_dir: Path | None = Field(None, description="Local job state (default: $XDG_STATE_HOME/backupctl).")


class Config(_Strict):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    destinations: dict[str, SerializeAsAny[DestinationOptions]] = Field(
        default_factory=dict, description="Name -> destination (see Destinations)."
    )
    deployments: dict[str, DeploymentConfig] = Field(default_factory=dict, description="Name -> deployment.")
    encryption: EncryptionConfig = Field(description="Where the repository key comes from.")
    policies: dict[str, Policy] = Field(
        default_factory=dict,
        description="Name -> backup policy: schedules and retention (docs/scheduling.md).",
    )
    settings: Settings = Field(default_factory=Settings)
    notifications: NotificationsConfig = Field(
        default_factory=NotificationsConfig,
        description="Notification channels (webhook, email, ping) and overdue grace (docs/monitoring.md).",
    )
    # Where the file was read from; not part of the YAML.
    path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _references(self) -> Config:
        for dep_name, dep in self.deployments.items():
            if dep.policy not in (None, "none", "default") and dep.policy not in self.policies:
                known = ", ".join(sorted({"default", "none", *self.policies}))
                raise ValueError(
                    f"deployments.{dep_name}.policy: unknown policy {dep.policy!r} (defined: {known})"
                )
            for dest in dep.destinations:
                if dest not in self.destinations:
                    known = ", ".join(sorted(self.destinations)) or "none defined"
                    raise ValueError(
                        f"deployments.{dep_name}.destinations: unknown destination {dest!r} (defined: {known})"
                    )
        self._check_notifications()
        return self

    def _check_notifications(self) -> None:
        for key in ("overdue_grace", "retry_for", "pitr_lag"):
            if getattr(self.notifications, key) is None:
                continue
            try:
                parse_duration(getattr(self.notifications, key))
            except ValueError as exc:
                raise ValueError(f"notifications.{key}: {exc}") from None
        known = ", ".join(sorted(self.notifications.channels)) or "none defined"
        owners = [(f"deployments.{n}", d.notify) for n, d in self.deployments.items()]
        owners += [(f"policies.{n}", getattr(p, "notify", None) or []) for n, p in self.policies.items()]
        for where, rules in owners:
            for i, rule in enumerate(rules):
                if rule.channel not in self.notifications.channels:
                    raise ValueError(
                        f"{where}.notify[{i}].channel: unknown notification channel {rule.channel!r} "
                        f"(defined: {known})"
                    )
