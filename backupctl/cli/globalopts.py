"""Which command-line words are global options, and moving them in front of the command.

A leaf module (standard library only): cli/main.py hoists the global options before Click
parses, and cli/completion.py needs the same rules to complete their values; neither may
import the other (tests/test_import_cycles.py).
"""

from __future__ import annotations

# Global options are accepted anywhere on the command line (`backupctl backup list -f json`);
# they are moved in front of the subcommand before Click parses. `--format`/`-f` is global
# only with an output format as its value: `schedule export --format systemd` keeps its own.
GLOBAL_WITH_VALUE = {
    "--config",
    "--output",
    "-o",
    "--format",
    "-f",
    "--column",
    "-c",
    "--sort-column",
    "--max-width",
    "--progress",
}
_FORMAT_OPTIONS = {"--format", "-f"}
_SHORT_WITH_VALUE = {"-c", "-o", "-f"}
_GLOBAL_FLAGS = {
    "--quiet",
    "-q",
    "--no-color",
    "--verbose",
    "-v",
    "--sort-ascending",
    "--sort-descending",
    "--fit-width",
    "--wide",
    "--utc",
}


# Bundles made only of these are split (`-vq`); a bundle with a command's own flag (`-yq`) is
# left to the command, whose flags this module does not know.
_GLOBAL_SHORT_FLAGS = {"v", "q"}
# `schedule export --format FORMAT` has formats of its own; any other value of -f/--format is
# the global option's (and a typo there gets the global option's error).
_COMMAND_FORMATS = {"crontab", "systemd", "kubernetes"}


def _is_output_format(arg: str, following: list[str]) -> bool:
    """`-f json`/`--format=csv`: the global option; `--format systemd`: a command's own."""
    value = arg.split("=", 1)[1] if "=" in arg else (following[0] if following else "")
    return value not in _COMMAND_FORMATS


def hoist_global_options(argv: list[str]) -> list[str]:
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        name = arg.split("=", 1)[0]
        if name in _FORMAT_OPTIONS and not _is_output_format(arg, argv[i + 1 : i + 2]):
            rest.append(arg)
        elif name in GLOBAL_WITH_VALUE and "=" in arg:
            front.append(arg)
        elif arg in GLOBAL_WITH_VALUE and i + 1 < len(argv):
            front.extend(argv[i : i + 2])
            i += 1
        elif arg in _GLOBAL_FLAGS:
            front.append(arg)
        elif len(arg) > 2 and arg[0] == "-" and arg[1] != "-" and set(arg[1:]) <= _GLOBAL_SHORT_FLAGS:
            front.extend(f"-{c}" for c in arg[1:])  # -vq: a bundle of global flags only
        elif arg[:2] in _SHORT_WITH_VALUE and len(arg) > 2 and arg[2:] not in _COMMAND_FORMATS:
            front.append(arg)  # a value attached to the short option: -fjson, -cid
        else:
            rest.append(arg)
        i += 1
    return front + rest


def asks_for_json(args: list[str]) -> bool:
    """The command line (global options hoisted to the front) asks for JSON output: for an
    error found before the root callback ran (an unknown command)."""
    for i, arg in enumerate(args):
        if arg in ("-fjson", "-ojson", "--format=json", "--output=json"):
            return True
        if arg in ("-f", "-o", "--format", "--output") and args[i + 1 : i + 2] == ["json"]:
            return True
    return False
