"""Configuration models of notifications: the channels and a deployment's / policy's choice.

Only Pydantic and the standard library here: config/models.py and policy/models.py import
this module, so it must not import them (nor anything that does). Secrets are references
(`*_env` / `*_file`, resolved at send time by backupctl.config.secrets), never values.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SecretRef(_Strict):
    """`{value_env: VAR}` or `{value_file: PATH}`: a value kept out of the configuration file.

    Named `*_env` like every other secret reference, so the loader keeps the variable out of
    the environment of child processes (config/loader.py)."""

    value_env: str | None = Field(None, description="Environment variable holding the value.")
    value_file: str | None = Field(
        None, description="File holding the value (a trailing newline is dropped)."
    )

    @model_validator(mode="after")
    def _one(self) -> SecretRef:
        if (self.value_env is None) == (self.value_file is None):
            raise ValueError("give exactly one of value_env, value_file")
        return self


def _check_url(v: str | None) -> str | None:
    if v is not None and not v.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return v


class _UrlChannel(_Strict):
    url: str | None = Field(None, description="The URL (use url_env / url_file when it holds a token).")
    url_env: str | None = Field(None, description="Environment variable holding the URL.")
    url_file: str | None = Field(None, description="File holding the URL.")
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds before a delivery attempt gives up.")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return _check_url(v)

    @model_validator(mode="after")
    def _one_url(self) -> _UrlChannel:
        given = [n for n in ("url", "url_env", "url_file") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of url, url_env, url_file")
        return self


class WebhookChannel(_UrlChannel):
    """POST of a JSON document (docs/monitoring.md) with Slack `text` and Discord `content`."""

    type: Literal["webhook"]
    headers: dict[str, str | SecretRef] = Field(
        default_factory=dict,
        description="Extra HTTP headers; a value may be `{value_env: VAR}` or `{value_file: PATH}` (tokens).",
    )


class PingChannel(_UrlChannel):
    """healthchecks.io-style pings: URL/start at backup start, URL on success, URL/fail on failure."""

    type: Literal["ping"]


class EmailChannel(_Strict):
    """Mail through an SMTP server (smtplib) with STARTTLS, implicit TLS or neither."""

    type: Literal["email"]
    host: str = Field(description="SMTP server host name.")
    port: int | None = Field(
        None, ge=1, le=65535, description="Default: 587 (starttls), 465 (tls), 25 (none)."
    )
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="`starttls`, `tls` (implicit TLS, SMTPS) or `none` (local relays only)."
    )
    username: str | None = Field(None, description="Login user name (omitted: no login).")
    password_env: str | None = Field(None, description="Environment variable holding the password.")
    password_file: str | None = Field(None, description="File holding the password.")
    from_: str = Field(alias="from", description="Sender address.")
    to: list[str] = Field(min_length=1, description="Recipient addresses.")
    ca_file: str | None = Field(
        None, description="CA certificate file to verify the server with (default: the system's)."
    )
    subject_prefix: str = Field("[backupctl]", description="Put before every subject.")
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds before a delivery attempt gives up.")

    @model_validator(mode="after")
    def _password(self) -> EmailChannel:
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("set at most one of password_env, password_file")
        if self.username is None and (self.password_env or self.password_file):
            raise ValueError("a password needs a username")
        return self

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return {"starttls": 587, "tls": 465, "none": 25}[self.security]


Channel = Annotated[WebhookChannel | EmailChannel | PingChannel, Field(discriminator="type")]


class NotifyRule(_Strict):
    """One channel a deployment or policy notifies: `{channel: NAME, on: failure|always}`."""

    channel: str = Field(description="Name under notifications.channels.")
    on: Literal["failure", "always"] = Field(
        "failure", description="`failure`: problems only; `always`: also completed backups (and pings)."
    )


class NotificationsConfig(_Strict):
    """The `notifications:` section (docs/monitoring.md)."""

    channels: dict[str, Channel] = Field(
        default_factory=dict, description="Name -> channel: `type: webhook | email | ping`."
    )
    overdue_grace: str = Field(
        "1h",
        description="A deployment is overdue when no backup completed within its policy's interval "
        "plus this duration, e.g. 30m.",
    )
    pitr_lag: str | None = Field(
        None,
        description="Notify (`pitr_lag`) when the newest archived WAL / binary log of a deployment is "
        "older than this, or its archive has a gap, e.g. 15m (absent: no such notification).",
    )
    retry_for: str = Field(
        "7d", description="Undelivered notifications are retried on later runs for this long, then dropped."
    )
    # The two durations are checked by config/models.py (parse_duration lives in policy/, which
    # imports this module).
