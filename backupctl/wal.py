"""The light entry point PostgreSQL runs for every WAL file: `python -m backupctl.wal`.

    python -m backupctl.wal [--config CFG] [--deployment D] push PATH            (archive_command, %p)
    python -m backupctl.wal [--config CFG] [--deployment D] fetch NAME PATH      (restore_command, %f %p)

It reads only what it needs from the config (the deployment's destinations and the
encryption key), opens the primary destination's repository and stores or fetches one
object through pitr.logarchive; no CLI framework, no job database, no full config
validation, so a push costs a fraction of a `backupctl` command (docs/pitr.md).
`backupctl wal push|fetch` runs the same code.

Run from pg_wal (archive_command), a push also archives up to --ahead more files that
PostgreSQL has marked ready and leaves a marker for each; their own calls then find the
marker and return at once, before any heavy import (pitr.walspool). So a backlog is
archived at the speed of the archiving, not of starting Python.

The deployment: --deployment, else $BACKUPCTL_DEPLOYMENT, else the only deployment with a
postgres source. Exit codes: 0 stored (or already archived with the same content) /
fetched; non-zero otherwise, so PostgreSQL retries a push and ends recovery at a missing file.
"""

from __future__ import annotations

import os
import sys

from backupctl.errors import BackupctlError, ConfigError, NotFoundError
from backupctl.pitr import walspool

# The fast path (a file archived ahead) imports nothing but os, sys and walspool: pathlib,
# typing and argparse alone would double its ~20 ms. The rest imports them when it runs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# How many more ready WAL files one push archives while it is at it (pitr.walspool): a
# call's start-up (~0.4 s) is shared by this many files; two are archived at a time, so a
# call lasts up to ~3 s on a busy 2-core machine (32 against 16: +14% segments/s draining a
# backlog of 34, docs/performance.md).
AHEAD = 32


def config_path(explicit: str | None) -> str:
    if explicit:
        return os.path.expanduser(explicit)
    if os.environ.get("BACKUPCTL_CONFIG"):
        return os.path.expanduser(os.environ["BACKUPCTL_CONFIG"])
    # backupctl.config.paths, without importing backupctl.config (its loader is heavy)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = xdg if xdg and os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "backupctl", "config.yaml")


class LightConfig:
    """The parts of the config file a log push/fetch needs, validated piecemeal."""

    def __init__(self, path: str, raw: dict[str, Any]) -> None:
        self.path = path
        self.raw = raw

    @classmethod
    def load(cls, explicit: str | None) -> LightConfig:
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError

        path = config_path(explicit)
        try:
            with open(path) as fh:
                raw = YAML(typ="safe").load(fh.read())
        except FileNotFoundError:
            raise ConfigError(f"no configuration file at {path}") from None
        except PermissionError:
            raise ConfigError(f"{path}: cannot read (permission denied for uid {os.getuid()})") from None
        except YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: not a backupctl config")
        return cls(path, raw)

    def deployment(self, name: str | None, engine: str = "postgres") -> str:
        deps = self.raw.get("deployments") or {}
        name = name or os.environ.get("BACKUPCTL_DEPLOYMENT")
        if name:
            if name not in deps:
                raise NotFoundError(f"no deployment named {name!r} in {self.path}")
            return name
        matching = [
            d
            for d, spec in deps.items()
            if any(isinstance(s, dict) and s.get("type") == engine for s in (spec or {}).get("sources") or [])
        ]
        if len(matching) != 1:
            raise ConfigError(
                f"cannot tell which deployment to use ({len(matching)} have a {engine} source)",
                hint="pass --deployment NAME or set BACKUPCTL_DEPLOYMENT",
            )
        return str(matching[0])

    def destinations(self, deployment: str) -> list[tuple[str, Any]]:
        from backupctl.destinations.base import options_model

        dep = (self.raw.get("deployments") or {})[deployment] or {}
        out = []
        for name in dep.get("destinations") or []:
            spec = (self.raw.get("destinations") or {}).get(name)
            if not isinstance(spec, dict) or "type" not in spec:
                raise ConfigError(f"{self.path}: destination {name!r} of {deployment!r} is not defined")
            try:
                out.append((name, options_model(spec["type"]).model_validate(spec)))
            except ValueError as exc:
                raise ConfigError(f"{self.path}: destinations.{name}: {exc}") from None
        if not out:
            raise ConfigError(f"{self.path}: deployment {deployment!r} has no destinations")
        return out

    def key_material(self) -> Any:
        from backupctl.repo.opening import key_material

        enc = self.raw.get("encryption") or {}
        if not isinstance(enc, dict):
            raise ConfigError(f"{self.path}: encryption: not a mapping")
        return key_material(
            key_file=enc.get("key_file"),
            passphrase_env=enc.get("passphrase_env"),
            passphrase_file=enc.get("passphrase_file"),
        )

    def compression_level(self) -> int:
        return int((self.raw.get("settings") or {}).get("compression_level", 3))


def open_archive(
    config: str | None, deployment: str | None, engine: str = "postgres"
) -> tuple[Any, str, list[Any]]:
    """(repository on the primary destination, deployment name, the other destinations)."""
    from backupctl.destinations.base import open_destination
    from backupctl.repo.opening import primary_destination, wrap_destination
    from backupctl.repo.repository import Repository

    cfg = LightConfig.load(config)
    dep = cfg.deployment(deployment, engine)
    dests = dict(cfg.destinations(dep))
    primary = primary_destination([(n, o.type) for n, o in dests.items()])
    repo = Repository.open(
        wrap_destination(open_destination(primary, dests[primary])),
        cfg.key_material(),
        cfg.compression_level(),
    )
    others = [wrap_destination(open_destination(n, o)) for n, o in dests.items() if n != primary]
    return repo, dep, others


def push(config: str | None, deployment: str | None, path: str, ahead: int = AHEAD) -> dict[str, Any]:
    """Archive one WAL file (and, from pg_wal, up to `ahead` more that are ready: see
    pitr.walspool). The document's `ahead` maps each of those to its state."""
    cfg_path = config_path(config)
    named = deployment or os.environ.get("BACKUPCTL_DEPLOYMENT")
    if named:  # archived ahead into a local primary: done without opening the repository
        marker = walspool.trusted_local_marker(path, named, cfg_path)
        if marker is not None:
            return _archived_ahead(walspool.spool_dir(path, named), path, marker)

    from pathlib import Path

    from backupctl.pitr.logarchive import copy_to_others, push_ahead, wal_object, wal_push

    file = Path(path)
    if not file.is_absolute() and not file.exists():
        raise NotFoundError(f"{path}: no such file (archive_command runs in the data directory)")
    repo, dep, others = open_archive(config, deployment)
    spool = walspool.spool_dir(file, dep)
    if spool is not None:
        marker = walspool.matching_marker(spool, file, cfg_path)
        if (
            marker is not None
            and marker["object"] == wal_object(dep, file.name)
            and _stored_size(repo.dest, marker["object"]) == marker["stored_size"]
        ):  # archived ahead into a primary that is not local: checked with a stat, no upload
            return _archived_ahead(spool, path, marker)
    result = wal_push(repo, dep, file)
    if others:
        result.copies = copy_to_others(repo, result.name, others)
    doc = result.to_doc()
    doc["ahead"] = {}
    if spool is not None:
        walspool.drop_marker(spool, file.name)  # one that did not match (stale)
        walspool.prune_markers(spool, file.parent)
        if ahead > 0:
            doc["ahead"] = push_ahead(repo, dep, others, file.parent, file.name, spool, Path(cfg_path), ahead)
    return doc


def _archived_ahead(spool: str | None, path: str, marker: dict[str, Any]) -> dict[str, Any]:
    """The push of a file archived ahead (copies to the other destinations were made then)."""
    if spool is not None:
        walspool.drop_marker(spool, os.path.basename(path))
    return {
        "object": marker["object"],
        "state": "archived ahead",
        "size": marker["size"],
        "copies": {},
        "ahead": {},
    }


def _fast_push(argv: list[str]) -> bool:
    """True when argv is a push of a file archived ahead into a local primary, now done.
    Recognises only the shape `pitr setup` writes ([--config C] [--deployment D] push
    [--ahead N] PATH) without argparse; anything else goes the normal way (which also
    honours markers)."""
    opts: dict[str, str] = {}
    i = 0
    while i + 1 < len(argv) and argv[i] in ("--config", "-c", "--deployment", "-d"):
        opts[argv[i].lstrip("-")[0]] = argv[i + 1]
        i += 2
    rest = argv[i:]
    if rest[:2] == ["push", "--ahead"]:
        rest = rest[:1] + rest[3:]
    if len(rest) != 2 or rest[0] != "push" or rest[1].startswith("-"):
        return False
    deployment = opts.get("d") or os.environ.get("BACKUPCTL_DEPLOYMENT")
    if not deployment:
        return False
    marker = walspool.trusted_local_marker(rest[1], deployment, config_path(opts.get("c")))
    if marker is None:
        return False
    _archived_ahead(walspool.spool_dir(rest[1], deployment), rest[1], marker)
    return True


def _stored_size(dest: Any, name: str) -> int | None:
    from backupctl.destinations.base import NotFound

    try:
        return int(dest.stat(name).size)
    except NotFound:
        return None


def fetch(config: str | None, deployment: str | None, filename: str, target: str) -> dict[str, Any]:
    """The primary destination's copy, else each other destination's in the deployment's order
    (the local disk may have died, or lost or damaged its copy). LogNotFoundError (exit 1, which
    ends recovery there) only when no destination has the file; when some could not be asked,
    their errors are part of the message."""
    from pathlib import Path

    from backupctl.destinations.base import open_destination
    from backupctl.pitr.logarchive import LogNotFoundError, wal_fetch, wal_object
    from backupctl.repo.repository import Repository

    cfg = LightConfig.load(config)
    dep = cfg.deployment(deployment, "postgres")
    dests = cfg.destinations(dep)
    primary = next((d for d in dests if d[1].type == "local"), dests[0])
    key = cfg.key_material()  # a key problem is the same everywhere: raised, not skipped
    errors: list[str] = []
    for name, options in [primary, *[d for d in dests if d[0] != primary[0]]]:
        try:
            dest = open_destination(name, options)
            if options.type != "local":
                from backupctl.destinations.retry import RetryingDestination

                dest = RetryingDestination(dest)
            repo = Repository.open(dest, key, cfg.compression_level())
            size = wal_fetch(repo, dep, filename, Path(target))
        except LogNotFoundError:
            continue
        except BackupctlError as exc:  # unreachable, no repository there, a damaged copy
            errors.append(f"{name}: {exc.message}")
            continue
        return {"object": wal_object(dep, filename), "size": size, "target": target, "destination": name}
    message = f"{wal_object(dep, filename)} is not in the archive"
    raise LogNotFoundError(message + (f" ({'; '.join(errors)})" if errors else ""))


def main(argv: list[str] | None = None) -> int:
    if _fast_push(sys.argv[1:] if argv is None else argv):
        return 0
    import argparse

    parser = argparse.ArgumentParser(prog="python -m backupctl.wal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", "-c")
    parser.add_argument("--deployment", "-d")
    sub = parser.add_subparsers(dest="action", required=True)
    p_push = sub.add_parser("push")
    p_push.add_argument("path")
    p_push.add_argument("--ahead", type=int, default=AHEAD, help="more ready WAL files to archive (0: none)")
    p_fetch = sub.add_parser("fetch")
    p_fetch.add_argument("filename")
    p_fetch.add_argument("target")
    args = parser.parse_args(argv)
    try:
        if args.action == "push":
            doc = push(args.config, args.deployment, args.path, args.ahead)
            if doc["copies"] and any(v.startswith("failed") for v in doc["copies"].values()):
                sys.stderr.write(f"backupctl wal push: {doc['object']} stored; copies: {doc['copies']}\n")
            failed = {k: v for k, v in doc["ahead"].items() if "failed" in v}
            if failed:  # each is retried by its own archive_command call
                sys.stderr.write(f"backupctl wal push: {doc['object']} stored; ahead: {failed}\n")
        else:
            fetch(args.config, args.deployment, args.filename, args.target)
    except BackupctlError as exc:
        from backupctl.pitr.logarchive import LogNotFoundError

        if isinstance(exc, LogNotFoundError):
            sys.stderr.write(f"backupctl wal fetch: {exc.message}\n")
            return 1
        sys.stderr.write(f"backupctl wal {args.action}: error: {exc}\n")
        return exc.exit_code or 1
    except OSError as exc:
        sys.stderr.write(f"backupctl wal {args.action}: error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
