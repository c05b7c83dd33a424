"""Shell completion: the scripts (`backupctl completion SHELL`) and the dynamic values.

Protocol (as Click 8's): the shell runs `backupctl` with `_BACKUPCTL_COMPLETE=SHELL_complete`
and the words so far (bash: COMP_WORDS/COMP_CWORD; zsh and fish: COMP_WORDS/COMP_CWORD too,
set by the scripts below); `main()` hands that to `complete()` before anything else runs.
The answer is one candidate per line: bash `type,value`; zsh `type`, `value`, `help` lines;
fish `type,value<TAB>help`. Typer's older `complete_SHELL` instructions still work (Typer
handles them) for scripts installed by earlier versions; `--install-completion` now installs
these scripts (cli/completion_install.py).

Values offered: command and option names (Click), every option's fixed values, backup IDs
newest first with their date and deployment as the description (from the local state DB:
sqlite3, read-only), and deployment, destination, policy and channel names (from the config
file, read with a line scanner, not the YAML library). No network, no repository, no Rich or
Pydantic: a TAB press must answer well under 0.3 s (tests/cli/test_completion.py).
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys
from pathlib import Path
from typing import Any

SHELLS = ("bash", "zsh", "fish")
PROG = "backupctl"
COMPLETE_VAR = "_BACKUPCTL_COMPLETE"

# ---- what the config and the state hold ------------------------------------------------


def config_path(args: list[str]) -> Path:
    """The config a command with these words would read: --config, $BACKUPCTL_CONFIG, default."""
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            return Path(os.path.expanduser(args[i + 1]))
        if arg.startswith("--config="):
            return Path(os.path.expanduser(arg.split("=", 1)[1]))
    if os.environ.get("BACKUPCTL_CONFIG"):
        return Path(os.path.expanduser(os.environ["BACKUPCTL_CONFIG"]))
    from backupctl.config.paths import default_config_path

    return default_config_path()


_KEY = re.compile(r"^(\s*)(?:'([^']*)'|\"([^\"]*)\"|([^\s#'\":][^:#]*?))\s*:(?:\s|$)")


def config_sections(path: Path) -> dict[str, dict[str, str]]:
    """The names under the top-level mappings of a block-style YAML config, and scalar values
    (`section -> {name: value}`; nested `a.b` for notifications.channels and settings)."""
    out: dict[str, dict[str, str]] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return out
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    child_indent: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "-")):
            continue
        m = _KEY.match(line)
        if not m:
            continue
        indent = len(m.group(1))
        key = next(g for g in m.groups()[1:] if g is not None).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = ".".join(k for _, k in stack)
        if parent:
            # Only the first indentation level under a section names its entries.
            first = child_indent.setdefault(parent, indent)
            if indent == first:
                value = line[m.end() :].split(" #", 1)[0].strip().strip("'\"")
                out.setdefault(parent, {})[key] = value
        stack.append((indent, key))
    return out


def names(args: list[str], section: str) -> list[str]:
    return list(config_sections(config_path(args)).get(section, {}))


def state_db(args: list[str]) -> Path:
    settings = config_sections(config_path(args)).get("settings", {})
    if settings.get("state_dir"):
        return Path(os.path.expanduser(settings["state_dir"])) / "state.db"
    from backupctl.config.paths import state_dir

    return state_dir() / "state.db"


def backup_ids(args: list[str], incomplete: str) -> list[tuple[str, str]]:
    """(ID, "date deployment status") of the local job records matching the prefix, newest first."""
    path = state_db(args)
    if not path.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.2)
        try:
            rows = conn.execute(
                "SELECT id, deployment, started, status FROM jobs WHERE id LIKE ? ORDER BY started DESC LIMIT 200",
                (incomplete.replace("%", "").replace("_", "") + "%",),
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []
    return [(r[0], f"{(r[2] or '')[:16].replace('T', ' ')} {r[1]} {r[3]}".strip()) for r in rows]


# ---- which parameter completes what ------------------------------------------------------

# Option -> its fixed values (options whose values are checked in the command, not by Click).
FIXED: dict[str, tuple[str, ...]] = {
    "--format": ("table", "json", "yaml", "value", "csv"),
    "--output": ("table", "json", "yaml", "value", "csv"),
    "--progress": ("auto", "bar", "plain", "json", "none"),
    "--type": ("full", "incremental"),
    "--status": ("Completed", "Failed", "Running", "Queued"),
    "--part": ("all", "database", "files"),
    "--created-by": ("manual",),
}
_SHORT = {"-f": "--format", "-o": "--output", "-t": "--type"}
_EXPORT_FORMATS = ("crontab", "systemd", "kubernetes")


def _section_for_name(command_path: str) -> str | None:
    """The `name` argument of `destination ...`, `policy ...` and `notify ...` commands."""
    words = command_path.split()
    if "destination" in words:
        return "destinations"
    if "policy" in words:
        return "policies"
    if "notify" in words:
        return "notifications.channels"
    if "deployment" in words:
        return "deployments"
    return None


Candidates = list[tuple[str, str]]  # (value, description)


def values_for(param: Any, command_path: str, args: list[str], incomplete: str) -> Candidates | None:
    """The candidates of one parameter, or None: let Click complete it (choices, files...)."""
    name = getattr(param, "name", "") or ""
    opts = list(getattr(param, "opts", []))
    if name in ("backup_id", "backup_ids", "backup_a", "backup_b", "parent"):
        return backup_ids(args, incomplete)
    if name == "deployment":
        return [(n, "deployment") for n in names(args, "deployments")]
    if name == "destination":
        return [(n, "destination") for n in names(args, "destinations")]
    if name in ("policy", "channel") or (name == "name" and param.param_type_name == "argument"):
        section = {"policy": "policies", "channel": "notifications.channels"}.get(
            name, _section_for_name(command_path) or ""
        )
        return [(n, section.split(".")[-1].rstrip("s")) for n in names(args, section)] if section else None
    if name in ("format", "format_") and "export" in command_path.split():
        return [(f, "") for f in _EXPORT_FORMATS]
    if name == "created_by":
        return [("manual", "")] + [(n, "policy") for n in names(args, "policies")]
    for opt in opts:
        fixed = FIXED.get(_SHORT.get(opt, opt))
        if fixed and getattr(param, "param_type_name", "") == "option":
            return [(v, "") for v in fixed]
    return None


def global_values(option: str, args: list[str]) -> Candidates | None:
    """Values of a global option typed after a command (`backup list -f <TAB>`)."""
    option = _SHORT.get(option, option)
    if option in ("--format", "--output", "--progress"):
        return [(v, "") for v in FIXED[option]]
    return None


# ---- the protocol ------------------------------------------------------------------------


def _words() -> tuple[list[str], str]:
    import shlex

    line = os.environ.get("COMP_WORDS", "")
    try:
        words = shlex.split(line)
    except ValueError:  # an open quote: split on blanks
        words = line.split()
    if line.endswith((" ", "\t", "\n")) or not line:
        words.append("")
    try:
        cword = int(os.environ.get("COMP_CWORD", len(words) - 1))
    except ValueError:
        cword = len(words) - 1
    args = words[1:cword]
    incomplete = words[cword] if cword < len(words) else ""
    return args, incomplete


class _AsIs:
    """A parameter's coercion while completing: the words as typed. Typer coerces every value
    (defaults included) through Pydantic, ~0.3 s of imports; completion never uses them."""

    def coerce(self, value: Any, param: Any = None, ctx: Any = None) -> Any:
        return value


_AS_IS = _AsIs()


def _no_coercion() -> None:
    """For this process (it answers one TAB press and exits): no parameter coerces its value,
    the help options Typer makes on the fly included."""
    from typer import core as typer_core

    for cls in (typer_core.TyperOption, typer_core.TyperArgument):
        setattr(cls, "get_runtime_param", lambda self: _AS_IS)  # noqa: B010


def _resolve_context(cli: Any, args: list[str]) -> Any:
    """Click's shell_completion._resolve_context, without coercing any value."""
    _no_coercion()
    ctx = cli.make_context(PROG, list(args), resilient_parsing=True)
    rest = ctx._protected_args + ctx.args
    while rest and hasattr(ctx.command, "resolve_command"):
        name, cmd, rest = ctx.command.resolve_command(ctx, rest)
        if cmd is None:
            return ctx
        ctx = cmd.make_context(name, rest, parent=ctx, resilient_parsing=True)
        rest = ctx._protected_args + ctx.args
    return ctx


def candidates(cli: Any, args: list[str], incomplete: str) -> list[tuple[str, str, str]]:
    """(type, value, help) for the word being completed after `args`."""
    from typer._click.shell_completion import _resolve_incomplete

    from backupctl.cli.globalopts import GLOBAL_WITH_VALUE, hoist_global_options

    if args and args[-1] in GLOBAL_WITH_VALUE and not incomplete.startswith("-"):
        fixed = global_values(args[-1], args)
        if fixed is not None:
            return [("plain", v, h) for v, h in fixed if v.startswith(incomplete)]
        if args[-1] == "--config":
            return [("file", incomplete, "")]
        return []  # a global option's free value (--column, --max-width): nothing to offer
    hoisted = hoist_global_options(args)
    ctx = _resolve_context(cli, hoisted)
    obj, incomplete = _resolve_incomplete(ctx, hoisted, incomplete)
    path = ctx.command_path
    if getattr(obj, "param_type_name", None) in ("option", "argument"):
        found = values_for(obj, path, args, incomplete)
        if found is not None:
            return [("plain", v, h) for v, h in found if v.startswith(incomplete)]
    items = obj.shell_complete(ctx, incomplete)
    return [(item.type, item.value, item.help or "") for item in items]


def _format(shell: str, kind: str, value: str, help: str) -> str:
    if shell == "bash":
        return f"{kind},{value}"
    if shell == "zsh":
        return f"{kind}\n{value}\n{help or '_'}"
    return f"{kind},{value}\t{help}" if help else f"{kind},{value}"


def complete(cli: Any, instruction: str) -> int:
    """Answer one completion request (`SHELL_complete`) or print a script (`SHELL_source`)."""
    shell, _, action = instruction.partition("_")
    if shell not in SHELLS:
        sys.stderr.write(f"Shell {shell} not supported.\n")
        return 1
    if action == "source":
        sys.stdout.write(script(shell))
        return 0
    args, incomplete = _words()
    try:
        found = candidates(cli, args, incomplete)
    except Exception:  # a broken config or state must never print a traceback at a TAB press
        found = []
    sys.stdout.write("".join(_format(shell, k, v, h) + "\n" for k, v, h in found))
    return 0


def is_click_style(instruction: str) -> bool:
    shell, _, action = instruction.partition("_")
    return shell in SHELLS and action in ("complete", "source")


# ---- the scripts (Click 8's, for `backupctl`) --------------------------------------------

_BASH = """\
# bash completion for backupctl (generated by `backupctl completion bash`)
_backupctl_completion() {
    local IFS=$'\\n'
    local response
    response=$(env COMP_WORDS="${COMP_WORDS[*]}" COMP_CWORD=$COMP_CWORD \\
        _BACKUPCTL_COMPLETE=bash_complete "$1")
    for completion in $response; do
        IFS=',' read type value <<< "$completion"
        if [[ $type == 'dir' ]]; then
            COMPREPLY=()
            compopt -o dirnames
        elif [[ $type == 'file' ]]; then
            COMPREPLY=()
            compopt -o default
        elif [[ $type == 'plain' ]]; then
            COMPREPLY+=("$value")
        fi
    done
    return 0
}

complete -o nosort -F _backupctl_completion backupctl
"""

_ZSH = """\
#compdef backupctl
# zsh completion for backupctl (generated by `backupctl completion zsh`)
_backupctl_completion() {
    local -a completions
    local -a completions_with_descriptions
    local -a response
    (( ! $+commands[backupctl] )) && return 1
    response=("${(@f)$(env COMP_WORDS="${words[*]}" COMP_CWORD=$((CURRENT-1)) \\
        _BACKUPCTL_COMPLETE=zsh_complete backupctl)}")
    for type key descr in ${response}; do
        if [[ "$type" == "plain" ]]; then
            if [[ "$descr" == "_" ]]; then
                completions+=("$key")
            else
                completions_with_descriptions+=("$key":"$descr")
            fi
        elif [[ "$type" == "dir" ]]; then
            _path_files -/
        elif [[ "$type" == "file" ]]; then
            _path_files -f
        fi
    done
    if [ -n "$completions_with_descriptions" ]; then
        _describe -V unsorted completions_with_descriptions -U
    fi
    if [ -n "$completions" ]; then
        compadd -U -V unsorted -a completions
    fi
}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
    _backupctl_completion "$@"
else
    compdef _backupctl_completion backupctl
fi
"""

_FISH = """\
# fish completion for backupctl (generated by `backupctl completion fish`)
function _backupctl_completion
    set -l response (env COMP_WORDS=(commandline -cp) _BACKUPCTL_COMPLETE=fish_complete backupctl)
    for completion in $response
        set -l metadata (string split "," -- $completion)
        if test $metadata[1] = "dir"
            __fish_complete_directories $metadata[2]
        else if test $metadata[1] = "file"
            __fish_complete_path $metadata[2]
        else if test $metadata[1] = "plain"
            echo (string join "," -- $metadata[2..-1])
        end
    end
end

complete --no-files --command backupctl --arguments "(_backupctl_completion)"
"""

_SCRIPTS: dict[str, str] = {"bash": _BASH, "zsh": _ZSH, "fish": _FISH}
# The shipped copies in completions/ (docgen writes them), installed by the wheel where each
# shell looks (pyproject.toml [tool.setuptools.data-files]); zsh wants `_backupctl`.
FILES: dict[str, str] = {"bash": "backupctl.bash", "zsh": "_backupctl", "fish": "backupctl.fish"}


def script(shell: str) -> str:
    return _SCRIPTS[shell]


__all__: list[str] = ["FILES", "SHELLS", "complete", "script", "candidates", "is_click_style"]
