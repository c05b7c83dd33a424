"""Secret references: `*_env: VAR` and `*_file: PATH`, resolved only when needed.

Secrets never live in the config object as plain values, so `config show` and
`-o json` cannot leak them; resolution errors name the reference, never the value.
"""

from __future__ import annotations

import os
from pathlib import Path

from backupctl.errors import ConfigError

REDACTED = "<redacted>"
# Option names that hold secrets inline in SDK-style strings; redacted in `config show`.
# The last four: HTTP header names that carry credentials (notifications.channels.*.headers).
SECRET_KEY_PARTS: tuple[str, ...] = (
    "password",
    "secret",
    "token",
    "passphrase",
    "connection_string",
    "account_key",
    "sas",
    "authorization",
    "api-key",
    "api_key",
    "apikey",
)


def resolve_secret(
    *, env: str | None = None, file: Path | str | None = None, what: str = "secret"
) -> str | None:
    """Return the secret named by an env var or file reference, or None if neither is set.

    A trailing newline in a file is stripped (editors add one).
    """
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"{what}: environment variable {env} is not set", hint=f"export {env}=...")
        return value
    if file:
        path = Path(os.path.expanduser(str(file)))
        try:
            return path.read_text().rstrip("\r\n")
        except FileNotFoundError:
            raise ConfigError(f"{what}: file {path} does not exist") from None
        except PermissionError:
            raise ConfigError(f"{what}: file {path} is not readable (permission denied)") from None
    return None


def is_secret_key(key: str) -> bool:
    """True for keys whose *value* is a secret (not for *_env / *_file references)."""
    if key.endswith("_env") or key.endswith("_file"):
        return False
    lowered = key.lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


def redact(value: object) -> object:
    """Copy of a JSON-like structure with secret values replaced by REDACTED."""
    if isinstance(value, dict):
        return {
            k: (REDACTED if is_secret_key(str(k)) and v not in (None, "") else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
