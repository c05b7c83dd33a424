"""Shared helpers for commands: loading the config, building the service, confirming."""

from __future__ import annotations

import sys

import typer

from backupctl.cli import output
from backupctl.cli.progress import CliReporter
from backupctl.config.loader import load_config
from backupctl.config.models import Config
from backupctl.engine.service import Service
from backupctl.errors import AbortedError


def config() -> Config:
    return load_config(output.OPTS.config)


def service(reporter: CliReporter | None = None) -> Service:
    return Service(config(), reporter or CliReporter())


def confirm(prompt: str, *, yes: bool) -> None:
    """Ask before destroying data. --yes skips; with no terminal to ask on, refuse."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise AbortedError(
            f"{prompt.rstrip('?. ')}: refusing without confirmation (no terminal)", hint="pass --yes"
        )
    if not typer.confirm(prompt, default=False, err=True):
        raise AbortedError("cancelled; nothing was changed")
