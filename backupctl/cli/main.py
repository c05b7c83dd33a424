"""Entry point: the root Typer app, global options, and error -> exit code mapping.

Start-up contract (tests/cli/test_startup.py): importing this module and running
`--version`, `--help` or a shell completion of the command names imports no command
module, no engine code and no heavy library (Rich, Pydantic, croniter, cryptography,
cloud SDKs). Commands are registered lazily: `COMMANDS` names each one, the module that
implements it and its short help, and a command's module is imported only when that
command is resolved (run, or its own help or completion asked for); `_SUBCOMMANDS` does the
same for subcommands registered by other modules. How building is deferred: cli/fast_start.py.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import signal
import sys
import traceback
from typing import Annotated, Any

import typer

from backupctl import __version__
from backupctl.cli import fast_start, output, progress_mode
from backupctl.cli.fast_start import LazyCommands, ListingGroup, skip_trivial_coercion
from backupctl.cli.globalopts import asks_for_json, hoist_global_options
from backupctl.cli.safestream import guard_stderr
from backupctl.errors import BackupctlError, ExitCode, UsageError

# name -> (module in backupctl.cli, first paragraph of its help), in `--help` order.
# The help text is repeated here so that `backupctl --help` and TAB completion of the
# command names need not import the modules; tests/cli/test_startup.py checks it against them.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": (
        "cmd_init",
        "Write a commented starter config and create a new repository key (mode 0600).",
    ),
    "backup": ("cmd_backup", "Create, list, inspect, restore, verify and delete backups."),
    "config": ("cmd_config", "Inspect and check the configuration file."),
    "destination": ("cmd_destination", "List and check the places backups are stored."),
    "policy": (
        "cmd_policy",
        "Backup policies: when deployments are backed up and which backups are kept.",
    ),
    "schedule": (
        "cmd_schedule",
        "Run scheduled backups: from cron, as a daemon, or exported to other schedulers.",
    ),
    "wal": ("cmd_wal", "Archive and fetch PostgreSQL WAL files (archive_command / restore_command)."),
    "pitr": (
        "cmd_pitr",
        "Point-in-time recovery: archive set-up, the recoverable window, verification.",
    ),
    "binlog": (
        "cmd_binlog",
        "Archive MariaDB/MySQL binary logs into the deployment's repository (point-in-time recovery).",
    ),
    "repository": ("cmd_repository", "Check, repair, unlock and measure the repository at a destination."),
    "status": (
        "cmd_status",
        "Show whether every deployment is protected: last backup, next run, last drill, RPO, problems.",
    ),
    "metrics": (
        "cmd_metrics",
        "Prometheus metrics of every deployment: to stdout, to a node_exporter textfile, or served over HTTP.",
    ),
    "notify": (
        "cmd_notify",
        "Notifications: send a test event to a channel, list channels and undelivered events.",
    ),
    "completion": ("cmd_completion", "Print the shell completion script for bash, zsh or fish."),
}
# Commands that a module registers on another command's Typer app when imported: command ->
# {subcommand: (module, first paragraph of its help)}. Loaded on first access too, so
# `backup list` does not import the code of the other backup commands; `backup <TAB>` lists
# them from here.
_SUBCOMMANDS: dict[str, dict[str, tuple[str, str]]] = {
    "backup": {
        "create": ("cmd_backup_create_restore", "Take a backup of DEPLOYMENT now and print its ID."),
        "restore": (
            "cmd_backup_create_restore",
            "Restore a backup in place (after confirmation) or into an empty --target directory.",
        ),
        "ls": (
            "cmd_backup_browse",
            "List the entries stored in a backup, in path order: type, mode, owner, size, mtime.",
        ),
        "diff": (
            "cmd_backup_browse",
            "Show what was added, removed and changed from backup A to backup B, in path order.",
        ),
        "delete": ("cmd_backup_manage", "Delete a backup and the data only it referenced."),
        "verify": (
            "cmd_backup_manage",
            "Read back every chunk of a backup and check authentication and hashes.",
        ),
        "upload": (
            "cmd_backup_manage",
            "Upload a backup to its deployment's remote destinations, or retry a failed upload.",
        ),
        "download": (
            "cmd_backup_manage",
            "Write a backup in standard formats: a tar for files, the native dump for databases\n"
            "(a tar of the dumps when a backup holds several, e.g. every pg_dump backup).",
        ),
        "prune": (
            "cmd_backup_manage",
            "Apply the retention rules of each deployment's policy; list what is kept and why.",
        ),
        "clone": (
            "cmd_clone",
            "Create a new deployment NAME from a database backup, leaving the original untouched.",
        ),
        "drill": (
            "cmd_drill",
            "Prove that a backup restores: restore it into a throwaway place and check what came back.",
        ),
    }
}
# The order `--help` and TAB list a group's subcommands in, the group's own and those above mixed.
_LISTING_ORDER: dict[str, tuple[str, ...]] = {
    "backup": (
        "create",
        "list",
        "show",
        "restore",
        "ls",
        "diff",
        "delete",
        "verify",
        "upload",
        "download",
        "prune",
        "clone",
        "drill",
    )
}


# Shown under every command's --help (issue 15: subcommand help lists the global options).
GLOBAL_EPILOG = (
    "Global options (anywhere on the command line; see backupctl --help): -f/--format "
    "table|json|yaml|value|csv, -c/--column NAME, --sort-column NAME, --sort-ascending, "
    "--sort-descending, --max-width N, --fit-width, --wide, --utc, --config PATH, --progress "
    "auto|bar|plain|json|none, -q/--quiet, -v/--verbose, --no-color."
)
# Under `backupctl --help`: the exit codes (errors.ExitCode; the table in docs/cli.md).
EXIT_CODES_EPILOG = (
    "\b\nExit codes: 0 ok, 1 failed, 2 usage, 3 completed with warnings, 4 configuration,\n"
    "5 not found, 6 destination, 7 damaged or missing objects, 8 drill failed,\n"
    "9 status found problems, 10 no repository, 11 locked, 12 wrong key,\n"
    "13 repository from a newer backupctl, 14 aborted (declined, or no TTY), 130 interrupted."
)


def _with_epilog(command: Any) -> Any:
    """The global options under the help, and arguments in capitals as usage lines name
    them (`BACKUP_ID`, `[PATH]`) instead of Typer's `{backup_id}`."""
    if getattr(command, "epilog", None) is None:
        command.epilog = GLOBAL_EPILOG
    for param in getattr(command, "params", []):
        if param.param_type_name == "argument" and param.metavar is None and param.name:
            param.metavar = param.name.upper()
    return command


def load_command(name: str) -> Any:
    """Import the module of command `name` and build its Click command, exactly as
    `app.add_typer(module.app, name=name)` (or `app.command(name)`) would have."""
    module_name, _ = COMMANDS[name]
    module = importlib.import_module(f"backupctl.cli.{module_name}")
    holder = typer.Typer()
    if not hasattr(module, "app"):  # a single command: the function named like the command
        holder.command(name)(getattr(module, name))
        return _with_epilog(_build_command(holder.registered_commands[0]))
    holder.add_typer(module.app, name=name, cls=ListingGroup)
    group = typer.main.get_group_from_info(
        holder.registered_groups[0],
        pretty_exceptions_short=app.pretty_exceptions_short,
        rich_markup_mode=app.rich_markup_mode,
        suggest_commands=app.suggest_commands,
    )
    lazy = {
        sub: (functools.partial(_load_subcommand, module.app, sub, sub_module), short)
        for sub, (sub_module, short) in _SUBCOMMANDS.get(name, {}).items()
    }
    for command in group.commands.values():
        _with_epilog(command)
    group.commands = LazyCommands(group.commands, lazy, _LISTING_ORDER.get(name, ()))
    return _with_epilog(group)


def _build_command(info: Any) -> Any:
    return typer.main.get_command_from_info(
        info, pretty_exceptions_short=app.pretty_exceptions_short, rich_markup_mode=app.rich_markup_mode
    )


def _load_subcommand(parent: typer.Typer, name: str, module_name: str) -> Any:
    """Import `module_name`, which registers command `name` on `parent`, and build it."""
    importlib.import_module(f"backupctl.cli.{module_name}")
    return _with_epilog(_build_command(next(c for c in parent.registered_commands if c.name == name)))


class LazyGroup(ListingGroup):
    """The root group: every command in `COMMANDS` is built when first used."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        lazy = {name: (functools.partial(load_command, name), short) for name, (_, short) in COMMANDS.items()}
        self.commands = LazyCommands(self.commands, lazy)

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for param in params:  # the global options, --help and the completion flags
            skip_trivial_coercion(param)
        return params


app = typer.Typer(
    cls=LazyGroup,
    name="backupctl",
    help="Back up PostgreSQL, MariaDB/MySQL, SQLite and file trees into encrypted, deduplicated repositories "
    "on local and cloud storage; list, restore, clone and verify them.",
    no_args_is_help=True,
    epilog=EXIT_CODES_EPILOG,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"backupctl {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="Config file (default: $BACKUPCTL_CONFIG, then ~/.config/backupctl/config.yaml).",
            metavar="PATH",
        ),
    ] = None,
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            "--output",
            "-o",
            help="Output format: table, json, yaml, value (values only, one record per line) or csv.",
            metavar="FORMAT",
        ),
    ] = "table",
    column: Annotated[
        list[str] | None,
        typer.Option(
            "--column",
            "-c",
            help="Show only this column: a table header or any key of the record (repeatable).",
            metavar="NAME",
        ),
    ] = None,
    sort_column: Annotated[
        list[str] | None,
        typer.Option("--sort-column", help="Sort lists by this column (repeatable).", metavar="NAME"),
    ] = None,
    sort_descending: Annotated[
        bool,
        typer.Option("--sort-descending/--sort-ascending", help="Direction of --sort-column."),
    ] = False,
    max_width: Annotated[
        str | None,
        typer.Option("--max-width", help="Fit tables into N columns (0: no limit).", metavar="N"),
    ] = None,
    fit_width: Annotated[
        bool, typer.Option("--fit-width", help="Fit tables to the terminal width also in a pipe.")
    ] = False,
    wide: Annotated[
        bool, typer.Option("--wide", help="Tables: every column, nothing dropped or wrapped.")
    ] = False,
    utc: Annotated[
        bool, typer.Option("--utc", help="Tables show times in UTC instead of local time.")
    ] = False,
    progress: Annotated[
        str,
        typer.Option(
            "--progress",
            help="Progress on stderr: auto (a bar on a terminal, nothing otherwise), bar, plain, json "
            "(one JSON object per line, docs/progress.md) or none.",
            metavar="MODE",
        ),
    ] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only results and errors.")] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="No colours (also: NO_COLOR env).")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug details.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    if output_format not in output.FORMATS:
        # `backup download ID -o x.tar`: -o is the global format's alias (as the OpenStack
        # CLI's); the file is -O/--out.
        file_hint = (
            "; a file to write is -O/--out FILE" if "." in output_format or "/" in output_format else ""
        )
        raise typer.BadParameter(f"must be {', '.join(output.FORMATS)}{file_hint}", param_hint="--format")
    if progress not in progress_mode.MODES:
        raise typer.BadParameter(f"must be {', '.join(progress_mode.MODES)}", param_hint="--progress")
    progress_mode.mode = progress
    width: int | None = None
    if max_width is not None:
        if not max_width.isdigit():
            raise typer.BadParameter("must be a number of columns (0: no limit)", param_hint="--max-width")
        width = int(max_width)
    output.OPTS.config = config
    output.OPTS.output = output_format
    output.OPTS.columns = list(column or [])
    output.OPTS.sort_columns = list(sort_column or [])
    output.OPTS.sort_descending = sort_descending
    output.OPTS.max_width = width
    output.OPTS.fit_width = fit_width
    output.OPTS.wide = wide
    output.OPTS.utc = utc
    output.OPTS.quiet = quiet
    output.OPTS.color = not no_color and sys.stdout.isatty()
    output.OPTS.verbose = verbose


# Global options anywhere on the command line: backupctl/cli/globalopts.py.


def _report_error(exc: BackupctlError) -> None:
    if output.OPTS.output == "json":
        doc = {
            "error": {"kind": exc.kind, "message": exc.message, "hint": exc.hint, "exit_code": exc.exit_code}
        }
        sys.stderr.write(json.dumps(doc) + "\n")
    else:
        text = f"error: {exc.message}"
        if exc.hint:
            text += f" ({exc.hint})"
        sys.stderr.write(text + "\n")


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _limit_malloc_arenas() -> None:
    """glibc gives each thread its own malloc arena; with the compression workers' large,
    short-lived buffers that fragments into a much higher peak RSS. Two arenas keep the
    peak bounded at no measurable speed cost. Must run before any thread starts."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    _limit_malloc_arenas()
    guard_stderr()
    # On its first model Pydantic looks for plugins in the entry points of every installed
    # distribution (40-90 ms here, for every command that reads the config); backupctl's
    # models are meant to run without any. A setting of the caller's wins.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    instruction = os.environ.get("_BACKUPCTL_COMPLETE", "")
    if instruction:
        from backupctl.cli import completion

        if completion.is_click_style(instruction):  # `bash_complete`...; Typer's `complete_bash` below
            return completion.complete(typer.main.get_command(app), instruction)
    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    if args and args[0] in ("--install-completion", "--show-completion"):
        from backupctl.cli import completion_install

        done = completion_install.run(args)
        if done is not None:
            return done
    signal.signal(signal.SIGTERM, _sigterm)
    return _run(args)


def _run(args: list[str]) -> int:
    """Run the command line `args` (global options hoisted); every outcome becomes an exit code."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="backupctl", standalone_mode=False)
        if isinstance(result, int):  # Click returns the exit code of typer.Exit here
            if result == ExitCode.INTERRUPTED:  # Typer turns Ctrl-C into a silent exit(130)
                sys.stderr.write("interrupted: nothing half-written is visible\n")
            return result
    except BackupctlError as exc:
        if output.OPTS.verbose:
            traceback.print_exc()
        _report_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OK
    except Exception as exc:
        return _exit_code_of(exc, args)
    return ExitCode.OK


def _exit_code_of(exc: Exception, args: list[str]) -> int:
    """The exit code of any other exception, reported on stderr. Called while it is handled
    (the traceback of -v is the current exception's)."""
    # Typer may vendor Click, so Click's exceptions are recognised by shape, not by class.
    kind = type(exc).__name__
    if isinstance(exc, typer.Exit) or kind == "Exit":
        return int(getattr(exc, "exit_code", 0) or 0)
    if isinstance(exc, typer.Abort) or kind == "Abort":
        sys.stderr.write("aborted\n")
        return ExitCode.ABORTED
    if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # UsageError, BadParameter...
        _report_usage_error(exc, args)
        return ExitCode.USAGE
    # A bug: one line, traceback with -v.
    if output.OPTS.verbose:
        traceback.print_exc()
    _report_error(
        BackupctlError(f"internal error: {type(exc).__name__}: {exc}", hint="run with -v for details")
    )
    return ExitCode.FAILED


def _report_usage_error(exc: Any, args: list[str]) -> None:
    """A Click usage error: Click's own text, or in JSON mode a JSON error as every other."""
    if output.OPTS.output == "json" or asks_for_json(args):  # as every error in JSON mode
        output.OPTS.output = "json"  # (the root callback may not have run: no such command)
        ctx = getattr(exc, "ctx", None)
        where = f"backupctl {ctx.command_path.partition(' ')[2]}".strip() if ctx else "backupctl"
        format_message = getattr(exc, "format_message", None)
        message = str(format_message()) if format_message else str(exc)
        _report_error(UsageError(message, hint=f"see `{where} --help`"))
    else:
        exc.show()


def run() -> None:
    """The `backupctl` console script (and `python -m backupctl`)."""
    fast_start.pause_gc()
    try:
        code = main()
    finally:
        fast_start.exiting()
    sys.exit(code)


if __name__ == "__main__":
    run()
