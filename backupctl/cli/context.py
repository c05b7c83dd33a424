"""Shared helpers for commands: loading the config, building the service, confirming.

Every command module imports this one when it is loaded, so it imports nothing heavy at
module level: the config loader (Pydantic models), the engine and the progress display
(Rich) are imported by the functions that need them (tests/cli/test_startup.py).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from backupctl.cli import fast_start, output
from backupctl.errors import AbortedError

if TYPE_CHECKING:
    from backupctl.backups.service import Service
    from backupctl.cli.progress import CliReporter
    from backupctl.config.models import Config


def config() -> Config:
    from backupctl.config.loader import load_config

    try:
        return load_config(output.OPTS.config)
    finally:
        fast_start.startup_done()  # the modules a command needs are loaded by now


def service(reporter: CliReporter | None = None) -> Service:
    from backupctl.backups.service import Service

    cfg = config()  # first, as before: a config error comes before any progress display
    if reporter is None:
        from backupctl.cli.progress import CliReporter

        reporter = CliReporter()
    return Service(cfg, reporter)


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
