"""`backupctl completion SHELL`: print the shell completion script (as restic and oasisctl do).

Light on purpose (no Rich, no config): the script is static text from cli/completion.py.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from backupctl.cli.completion import SHELLS, script


def completion(
    shell: Annotated[str, typer.Argument(help="bash, zsh or fish.", metavar="SHELL")],
) -> None:
    """Print the shell completion script for bash, zsh or fish.

    Completes commands, options, every option's fixed values, backup IDs (newest first, from
    the local state) and the names in the config. Load it for this shell, or install it:
    Example: source <(backupctl completion bash)
    Example: backupctl completion zsh > "${fpath[1]}/_backupctl"
    Example: backupctl completion fish > ~/.config/fish/completions/backupctl.fish
    """
    if shell not in SHELLS:
        raise typer.BadParameter(f"must be {', '.join(SHELLS)}", param_hint="SHELL")
    sys.stdout.write(script(shell))
