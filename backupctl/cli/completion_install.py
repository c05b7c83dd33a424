"""`backupctl --install-completion [SHELL]` and `--show-completion [SHELL]`.

Typer adds both options, but its scripts speak its older `complete_SHELL` protocol, which
completes command names only (no backup IDs, names or option values). These two install
and show the scripts of `backupctl completion SHELL` instead, in the places Typer uses (so
an earlier installation is replaced in place): bash `~/.bash_completions/backupctl.sh`
sourced from `~/.bashrc`; zsh `~/.zfunc/_backupctl` with `fpath+=~/.zfunc` in `~/.zshrc`;
fish `~/.config/fish/completions/backupctl.fish`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from backupctl.cli.completion import PROG, SHELLS, script

OPTIONS = ("--install-completion", "--show-completion")


def _shell(given: str | None) -> str:
    name = given or Path(os.environ.get("SHELL", "")).name
    if name not in SHELLS:
        raise ValueError(
            f"completion for shell {name or '(unknown: $SHELL is not set)'!r} is not available: "
            f"give one of {', '.join(SHELLS)}, e.g. backupctl --install-completion bash"
        )
    return name


def _append_line(rc: Path, line: str) -> None:
    text = rc.read_text() if rc.is_file() else ""
    if line not in text.splitlines():
        rc.parent.mkdir(parents=True, exist_ok=True)
        rc.write_text(text + ("" if not text or text.endswith("\n") else "\n") + line + "\n")


def install(shell: str) -> Path:
    home = Path.home()
    if shell == "bash":
        path = home / ".bash_completions" / f"{PROG}.sh"
        _append_line(home / ".bashrc", f"source '{path}'")
    elif shell == "zsh":
        path = home / ".zfunc" / f"_{PROG}"
        _append_line(home / ".zshrc", "fpath+=~/.zfunc; autoload -Uz compinit; compinit")
    else:
        path = home / ".config" / "fish" / "completions" / f"{PROG}.fish"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script(shell))
    return path


def run(args: list[str]) -> int | None:
    """Handle the two options when `args` (the whole command line) starts with one of them;
    None when it does not (then the command line goes to Click as usual)."""
    if not args or args[0] not in OPTIONS:
        return None
    given = args[1] if len(args) > 1 and not args[1].startswith("-") else None
    try:
        shell = _shell(given)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if args[0] == "--show-completion":
        sys.stdout.write(script(shell))
        return 0
    path = install(shell)
    sys.stdout.write(f"{shell} completion installed in {path}; it works in shells started from now on\n")
    return 0
