"""XDG base directories for config, data and state."""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(var: str, default: str) -> Path:
    value = os.environ.get(var)
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / default


def config_dir() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "backupctl"


def data_dir() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "backupctl"


def state_dir() -> Path:
    return _xdg("XDG_STATE_HOME", ".local/state") / "backupctl"


def default_config_path() -> Path:
    return config_dir() / "config.yaml"
