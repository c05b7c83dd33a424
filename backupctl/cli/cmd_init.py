"""`backupctl init`: a starter config and a new key, ready for a first backup."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from backupctl.cli import output
from backupctl.config.loader import resolve_config_path
from backupctl.config.paths import config_dir, data_dir
from backupctl.config.starter import starter_config
from backupctl.errors import ConfigError
from backupctl.repo.crypto import generate_key_file


def init(
    example_path: Annotated[
        Path | None,
        typer.Option(
            "--example-path", help="Directory the example deployment backs up (default: ~/.config)."
        ),
    ] = None,
    repository: Annotated[
        Path | None,
        typer.Option("--repository", help="Path of the local repository (default: under ~/.local/share)."),
    ] = None,
    key_file: Annotated[
        Path | None, typer.Option("--key-file", help="Where to create the key (default: next to the config).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing config file (never an existing key).")
    ] = False,
) -> None:
    """Write a commented starter config and create a new repository key (mode 0600).

    The defaults need no server: a local destination under the XDG data directory and
    an example deployment. Example: backupctl init && backupctl backup create example
    """
    path = resolve_config_path(output.OPTS.config)
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists", hint="edit it, or pass --force to replace it")
    key = key_file or (path.parent / "repo.key" if output.OPTS.config else config_dir() / "repo.key")
    key = Path(os.path.expanduser(str(key)))
    created_key = False
    if not key.exists():
        generate_key_file(key)
        created_key = True
    repo = repository or data_dir() / "repository"
    # A relative --example-path means relative to here, now: the config must not depend on
    # the directory later commands run in (relative `paths:` are refused).
    example = (
        Path(os.path.abspath(os.path.expanduser(str(example_path)))) if example_path else Path("~/.config")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(starter_config(repository=repo, key_file=key, example_path=example))
    os.replace(tmp, path)
    result = {"config": str(path), "key_file": str(key), "key_created": created_key, "repository": str(repo)}
    if output.structured():
        output.emit_document(result)
        return
    output.message(f"Wrote {path}")
    if created_key:
        output.message(f"Created key {key} (mode 0600).")
        output.message(
            "IMPORTANT: store a copy of this key somewhere else (password manager, another machine). "
            "Without it no backup can be read.",
            style="bold yellow",
        )
    else:
        output.message(f"Kept existing key {key}.")
    # With --config, the next commands need it too (or BACKUPCTL_CONFIG): say it in the hint.
    cfg = f"--config {shlex.quote(os.path.abspath(path))} " if output.OPTS.config else ""
    output.message(f"Next: backupctl {cfg}backup create example && backupctl {cfg}backup list")
    sys.stdout.flush()
