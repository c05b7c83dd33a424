"""Fast start (issue 13 item 5), checked on the import graph, not on time.

`backupctl --version`, `--help` and a TAB completion of the command names run the real CLI
in a subprocess that lists sys.modules at exit; none of them may import a command module,
the engine or a heavy library. The static table of command names and short helps in
cli/main.py (what `--help` and completion show without importing the commands) must match
the commands themselves. bench/startup.py measures the resulting times.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from backupctl.cli import main as cli_main

# Top-level packages and package prefixes none of the light paths may import.
FORBIDDEN = (
    "rich",
    "pydantic",
    "pydantic_core",
    "croniter",
    "cryptography",
    "boto3",
    "botocore",
    "google",
    "azure",
    "paramiko",
    "ruamel",
    "zstandard",
    "blake3",
    "fastcdc",
    "typer.rich_utils",
    "typer._adapters",
    "backupctl.backups",
    "backupctl.repo",
    "backupctl.sources",
    "backupctl.destinations",
    "backupctl.policy",
    "backupctl.config.models",
    "backupctl.config.loader",
    "backupctl.cli.cmd_",
    "backupctl.cli.progress",
)


# Runs the real entry point (`python -m backupctl ARGS`) and, at exit, writes the names in
# sys.modules to a file. (`-X importtime` would miss modules loaded by importlib.import_module,
# which is how the lazy commands are loaded.)
_RUNNER = """
import atexit, json, runpy, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["backupctl", *sys.argv[2:]]
{body}
"""


def imported_modules(
    *args: str, env: dict[str, str] | None = None, code: str | None = None, returncode: int = 0
) -> set[str]:
    """Names of the modules a run of `backupctl ARGS` (or of `code`) has imported."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "modules.json"
        body = code or 'runpy.run_module("backupctl", run_name="__main__", alter_sys=True)'
        argv = [sys.executable, "-c", _RUNNER.format(body=body), str(out), *args]
        full_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("_BACKUPCTL", "COMP_", "_TYPER"))
        }
        full_env.update(env or {})
        proc = subprocess.run(argv, capture_output=True, text=True, env=full_env, stdin=subprocess.DEVNULL)
        assert proc.returncode == returncode, proc.stderr[-3000:]
        names = set(json.loads(out.read_text()))
    assert "backupctl" in names
    return names


def forbidden_in(names: set[str]) -> list[str]:
    return sorted(
        n for n in names if any(n == f or n.startswith(f if f.endswith("_") else f + ".") for f in FORBIDDEN)
    )


LIGHT_RUNS = {
    "--version": (["--version"], {}),
    "--help": (["--help"], {}),
    "no arguments (help, exit 2)": ([], {}),
    "bash TAB": ([], {"_BACKUPCTL_COMPLETE": "complete_bash", "COMP_WORDS": "backupctl ", "COMP_CWORD": "1"}),
    "zsh TAB": ([], {"_BACKUPCTL_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "backupctl b"}),
    "fish TAB": (
        [],
        {
            "_BACKUPCTL_COMPLETE": "complete_fish",
            "_TYPER_COMPLETE_ARGS": "backupctl ",
            "_TYPER_COMPLETE_FISH_ACTION": "get-args",
        },
    ),
    "TAB on a global option": (
        [],
        {"_BACKUPCTL_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "backupctl -o json --"},
    ),
}


@pytest.mark.parametrize("case", list(LIGHT_RUNS))
def test_light_paths_import_nothing_heavy(case: str) -> None:
    args, env = LIGHT_RUNS[case]
    names = imported_modules(*args, env=env, returncode=2 if not args and not env else 0)
    assert "backupctl.cli.main" in names
    found = forbidden_in(names)
    if env.get("_BACKUPCTL_COMPLETE", "").startswith(("complete_zsh", "complete_fish")):
        # Typer's zsh/fish/PowerShell completion classes pass every help text through
        # Rich to strip markup whenever Rich is installed (typer/_completion_classes.py,
        # _sanitize_help_text): Typer's cost, not ours; everything else stays forbidden.
        found = [n for n in found if n.split(".")[0] != "rich" and n != "typer.rich_utils"]
    assert found == [], f"{case} imports heavy modules"


def test_the_forbidden_check_can_fail() -> None:
    """The same check flags a command that does load its module (and Pydantic through it)."""
    names = imported_modules("config", "--help")
    assert "backupctl.cli.cmd_config" in names
    assert forbidden_in(names)


def test_importing_the_cli_and_light_config_modules_is_cheap() -> None:
    assert forbidden_in(imported_modules(code="import backupctl.cli.main")) == []
    names = imported_modules(code="import backupctl.config.secrets, backupctl.config.paths")
    assert "backupctl.config.secrets" in names
    assert "pydantic" not in names and "backupctl.config.loader" not in names


def test_completion_lists_every_command_with_its_help() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_BACKUPCTL", "COMP_", "_TYPER"))}
    env.update(
        {
            "_BACKUPCTL_COMPLETE": "complete_fish",
            "_TYPER_COMPLETE_ARGS": "backupctl ",
            "_TYPER_COMPLETE_FISH_ACTION": "get-args",
        }
    )
    proc = subprocess.run([sys.executable, "-m", "backupctl"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    names = [line.split("\t")[0] for line in proc.stdout.splitlines()]
    assert names == list(cli_main.COMMANDS)
    assert "init\tWrite a commented starter config and..." in proc.stdout.splitlines()


def test_static_command_table_matches_the_command_modules() -> None:
    """COMMANDS (name, module, first paragraph of the help) is what `--help` and TAB show
    without importing the modules: it must say what the modules say."""
    for name, (module_name, short) in cli_main.COMMANDS.items():
        command = cli_main.load_command(name)
        assert command.name == name
        assert command.help.split("\n\n")[0].strip() == short, name
        assert not command.hidden
        assert (Path(cli_main.__file__).parent / f"{module_name}.py").exists()
    # Every command module is reachable: a top-level command or registered by one.
    modules = {p.stem for p in Path(cli_main.__file__).parent.glob("cmd_*.py")}
    listed = {m for m, _ in cli_main.COMMANDS.values()}
    listed |= {m for subs in cli_main._SUBCOMMANDS.values() for m, _ in subs.values()}
    assert modules == listed
    for name, subs in cli_main._SUBCOMMANDS.items():
        group = cli_main.load_command(name)
        for sub, (_, short) in subs.items():
            assert group.commands[sub].help.split("\n\n")[0].strip() == short, (name, sub)


def test_a_lazily_loaded_command_runs_and_has_its_subcommands() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("_BACKUPCTL", "COMP_", "_TYPER"))}
    proc = subprocess.run(
        [sys.executable, "-m", "backupctl", "backup", "--help"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    for sub in ("create", "list", "restore", "clone"):  # clone comes from cmd_clone
        assert f"\n  {sub} " in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "backupctl", "bakup"], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2
    assert "No such command 'bakup'. Did you mean 'backup'?" in proc.stderr


def test_backup_list_and_backup_tab_do_not_load_the_clone_command() -> None:
    """`backup clone` is registered by its own module, loaded only when clone is used."""
    env = {"_BACKUPCTL_COMPLETE": "complete_bash", "COMP_WORDS": "backupctl backup ", "COMP_CWORD": "2"}
    names = imported_modules(env=env)
    assert "backupctl.cli.cmd_backup" in names
    assert "backupctl.cli.cmd_clone" not in names
    names = imported_modules("backup", "clone", "--help")
    assert "backupctl.cli.cmd_clone" in names
