"""Entry point: the root Typer app, global options, and error -> exit code mapping."""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from typing import Annotated

import typer

from backupctl import __version__
from backupctl.cli import output
from backupctl.errors import BackupctlError, ExitCode

app = typer.Typer(
    name="backupctl",
    help="Back up PostgreSQL, MariaDB/MySQL, SQLite and file trees into encrypted, deduplicated repositories "
    "on local and cloud storage; list, restore, clone and verify them.",
    no_args_is_help=True,
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
            "-c",
            help="Config file (default: $BACKUPCTL_CONFIG, then ~/.config/backupctl/config.yaml).",
            metavar="PATH",
        ),
    ] = None,
    output_format: Annotated[
        str, typer.Option("--output", "-o", help="Output format: table, json or yaml.", metavar="FORMAT")
    ] = "table",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only results and errors.")] = False,
    no_color: Annotated[bool, typer.Option("--no-color", help="No colours (also: NO_COLOR env).")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug details.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    if output_format not in ("table", "json", "yaml"):
        raise typer.BadParameter("must be table, json or yaml", param_hint="--output")
    output.OPTS.config = config
    output.OPTS.output = output_format
    output.OPTS.quiet = quiet
    output.OPTS.color = not no_color and sys.stdout.isatty()
    output.OPTS.verbose = verbose


def _register() -> None:
    from backupctl.cli import cmd_backup, cmd_clone, cmd_config, cmd_init  # noqa: F401 (cmd_clone registers `backup clone`)

    app.add_typer(cmd_backup.app, name="backup")
    app.add_typer(cmd_config.app, name="config")
    app.command("init")(cmd_init.init)
    for module_name, name in (
        ("cmd_destination", "destination"),
        ("cmd_policy", "policy"),
        ("cmd_schedule", "schedule"),
        ("cmd_wal", "wal"),
        ("cmd_pitr", "pitr"),
        ("cmd_binlog", "binlog"),
        ("cmd_repository", "repository"),
    ):
        try:
            module = __import__(f"backupctl.cli.{module_name}", fromlist=["app"])
        except ImportError:
            continue
        app.add_typer(module.app, name=name)


_register()

# Global options are accepted anywhere on the command line (`backupctl backup list -o json`);
# they are moved in front of the subcommand before Click parses.
_GLOBAL_WITH_VALUE = {"--config", "-c", "--output", "-o"}
_GLOBAL_FLAGS = {"--quiet", "-q", "--no-color", "--verbose", "-v"}


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
        if name in _GLOBAL_WITH_VALUE and "=" in arg:
            front.append(arg)
        elif arg in _GLOBAL_WITH_VALUE and i + 1 < len(argv):
            front.extend(argv[i : i + 2])
            i += 1
        elif arg in _GLOBAL_FLAGS:
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


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
    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    signal.signal(signal.SIGTERM, _sigterm)
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
        # Typer may vendor Click, so Click's exceptions are recognised by shape, not by class.
        kind = type(exc).__name__
        if isinstance(exc, typer.Exit) or kind == "Exit":
            return int(getattr(exc, "exit_code", 0) or 0)
        if isinstance(exc, typer.Abort) or kind == "Abort":
            sys.stderr.write("aborted\n")
            return ExitCode.ABORTED
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # UsageError, BadParameter...
            exc.show()
            return ExitCode.USAGE
        # A bug: one line, traceback with -v.
        if output.OPTS.verbose:
            traceback.print_exc()
        _report_error(
            BackupctlError(f"internal error: {type(exc).__name__}: {exc}", hint="run with -v for details")
        )
        return ExitCode.FAILED
    return ExitCode.OK


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
