"""Find, read and validate the configuration file.

Resolution order: an explicit path (`--config`), then `$BACKUPCTL_CONFIG`, then
`$XDG_CONFIG_HOME/backupctl/config.yaml`. Every error names the file, the key path
and the problem in one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from ruamel.yaml.events import CollectionEndEvent, CollectionStartEvent

from backupctl.config.models import Config
from backupctl.config.paths import default_config_path
from backupctl.destinations.base import options_model
from backupctl.errors import BackupctlError, ConfigError
from backupctl.sources.base import source_class
from backupctl.sources.dbutil import note_config_secrets
from backupctl.tempdir import sweep as sweep_temporary

# Deeper than any real configuration; bounds the recursive YAML composer and pydantic.
MAX_DEPTH = 64


def resolve_config_path(explicit: str | Path | None = None) -> Path:
    if explicit:
        return Path(os.path.expanduser(str(explicit)))
    env = os.environ.get("BACKUPCTL_CONFIG")
    if env:
        return Path(os.path.expanduser(env))
    return default_config_path()


def _loc(parts: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _first_error(path: Path, exc: ValidationError, prefix: tuple[Any, ...] = ()) -> ConfigError:
    errors = exc.errors()
    err = errors[0]
    loc = _loc(prefix + tuple(p for p in err["loc"] if p not in ("function-after",)))
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see docs/config.md)"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return ConfigError(f"{path}: {loc}: {msg}{more}")


def read_yaml(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"no configuration file at {path}",
            hint="run `backupctl init` to create one, or pass --config / set BACKUPCTL_CONFIG",
        ) from None
    except (PermissionError, IsADirectoryError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x})",
            hint="save the file as UTF-8",
        ) from None
    try:
        _check_depth(text, path)
        return YAML(typ="safe").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    except RecursionError:  # belt and braces: _check_depth should have refused it
        raise ConfigError(f"{path}: nested too deeply (more than {MAX_DEPTH} levels)") from None


def _check_depth(text: str, path: Path) -> None:
    """Refuse nesting deeper than MAX_DEPTH before composing (the composer recurses per level).

    The event parser keeps its own stack, so walking its events is safe at any depth.
    """
    depth = 0
    for event in YAML(typ="safe").parse(text):
        if isinstance(event, CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise ConfigError(
                    f"{path}: line {mark.line + 1}, column {mark.column + 1}: nested too deeply "
                    f"(more than {MAX_DEPTH} levels)"
                )
        elif isinstance(event, CollectionEndEvent):
            depth -= 1


def parse_config(raw: Any, path: Path) -> Config:
    """Validate a YAML document (already parsed) into a Config."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (destinations, deployments, ...)")
    raw = dict(raw)
    # Plugin parts first, so their errors carry the full key path.
    destinations: dict[str, Any] = {}
    for name, spec in _mapping(path, raw, "destinations", "name -> destination").items():
        destinations[name] = _plugin_options(path, ("destinations", name), spec, kind="destination")
    deployments: dict[str, Any] = {}
    for dep_name, dep in _mapping(path, raw, "deployments", "name -> deployment").items():
        if not isinstance(dep, dict):
            raise ConfigError(f"{path}: deployments.{dep_name}: must be a mapping")
        dep = dict(dep)
        sources = dep.get("sources")
        if isinstance(sources, list):
            dep["sources"] = [
                _plugin_options(path, ("deployments", dep_name, "sources", i), spec, kind="source")
                for i, spec in enumerate(sources)
            ]
        deployments[dep_name] = dep
    raw["destinations"] = destinations
    raw["deployments"] = deployments
    try:
        config = Config.model_validate(raw)
    except ValidationError as exc:
        raise _first_error(path, exc) from None
    config.path = path
    # Child processes (pg_dump, mariadb-dump, ...) never see a secret the config names.
    note_config_secrets(
        database=_secret_references(raw.get("deployments")),
        repository=_secret_references({k: v for k, v in raw.items() if k != "deployments"}),
    )
    return config


def _secret_references(value: Any) -> list[str]:
    """Every environment variable named by a `*_env` key anywhere in the document."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and key.endswith("_env") and isinstance(item, str):
                found.append(item)
            else:
                found += _secret_references(item)
    elif isinstance(value, list):
        for item in value:
            found += _secret_references(item)
    elif isinstance(value, BaseModel):
        found += _secret_references(value.model_dump())
    return found


def _mapping(path: Path, raw: dict[str, Any], key: str, what: str) -> dict[Any, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {key}: must be a mapping of {what}, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    return {dict: "a mapping", list: "a list", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _plugin_options(path: Path, loc: tuple[Any, ...], spec: Any, *, kind: str) -> Any:
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"{path}: {_loc(loc)}: needs a `type` key")
    if not isinstance(spec["type"], str):
        raise ConfigError(f"{path}: {_loc(loc)}.type: must be a {kind} type name, not {_kind(spec['type'])}")
    try:
        model = options_model(spec["type"]) if kind == "destination" else source_class(spec["type"]).Options
    except ConfigError as exc:
        raise ConfigError(f"{path}: {_loc(loc)}.type: {exc}") from None
    except BackupctlError as exc:  # plugin module failed to import
        raise ConfigError(f"{path}: {_loc(loc)}: {exc}") from None
    try:
        return model.model_validate(spec)
    except ValidationError as exc:
        raise _first_error(path, exc, loc) from None


def load_config(explicit: str | Path | None = None) -> Config:
    path = resolve_config_path(explicit)
    config = parse_config(read_yaml(path), path)
    # Every command that reads the configuration removes the temporary files (credential
    # files, database copies) of this user's runs that were killed (backupctl/tempdir.py).
    sweep_temporary()
    return config
