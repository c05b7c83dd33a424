"""Error hierarchy. Every error carries the exit code documented in docs/cli.md.

The CLI turns a BackupctlError into one line on stderr (or a JSON object with
`-o json`) and exits with `exit_code`; anything else is a bug and shows a traceback
only with `-v`.
"""

from __future__ import annotations

from backupctl.redact import url_credentials


class ExitCode:
    OK = 0
    FAILED = 1  # a backup, restore or other operation failed
    USAGE = 2  # bad command-line usage (Typer/Click also use 2)
    PARTIAL = 3  # completed, but with warnings (files vanished, unreadable...)
    CONFIG = 4  # missing or invalid configuration
    NOT_FOUND = 5  # unknown deployment, backup ID, destination or policy
    DESTINATION = 6  # destination unreachable, not writable, full, or refused credentials
    INTEGRITY = 7  # verify found damaged or missing objects
    DRILL_FAILED = 8  # a restore drill ran and a check failed (the backup did not restore as recorded)
    PROBLEMS = 9  # `status`: at least one deployment has a problem (overdue, failed run...)
    NO_REPOSITORY = 10  # no repository at the destination (run `backupctl init` / a first backup)
    LOCKED = 11  # repository locked by another process
    WRONG_KEY = 12  # wrong key file or passphrase
    FORMAT = 13  # repository written by a newer backupctl
    ABORTED = 14  # the user declined a confirmation, or no TTY to ask on
    INTERRUPTED = 130  # SIGINT / SIGTERM


class BackupctlError(Exception):
    """Base class: a failure the user can act on, described in one line."""

    exit_code = ExitCode.FAILED
    kind = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        # A password inside a URL (an endpoint, a location) never reaches the user.
        message = url_credentials(message)
        hint = url_credentials(hint) if hint else hint
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class UsageError(BackupctlError):
    """A bad option value or a missing option, found after parsing (exit 2, like Click's)."""

    exit_code = ExitCode.USAGE
    kind = "usage"


class ConfigError(BackupctlError):
    exit_code = ExitCode.CONFIG
    kind = "config"


class NotFoundError(BackupctlError):
    exit_code = ExitCode.NOT_FOUND
    kind = "not_found"


class AmbiguousIdError(NotFoundError):
    kind = "ambiguous_id"


class DestinationError(BackupctlError):
    exit_code = ExitCode.DESTINATION
    kind = "destination"


class IntegrityError(BackupctlError):
    exit_code = ExitCode.INTEGRITY
    kind = "integrity"


class NoRepositoryError(BackupctlError):
    exit_code = ExitCode.NO_REPOSITORY
    kind = "no_repository"


class LockedError(BackupctlError):
    exit_code = ExitCode.LOCKED
    kind = "locked"


class WrongKeyError(BackupctlError):
    exit_code = ExitCode.WRONG_KEY
    kind = "wrong_key"


class FormatVersionError(BackupctlError):
    exit_code = ExitCode.FORMAT
    kind = "format_version"


class AbortedError(BackupctlError):
    exit_code = ExitCode.ABORTED
    kind = "aborted"


class DrillFailedError(BackupctlError):
    """A restore drill ran and at least one of its checks failed (backupctl.drill)."""

    exit_code = ExitCode.DRILL_FAILED
    kind = "drill_failed"


class BackupFailedError(BackupctlError):
    exit_code = ExitCode.FAILED
    kind = "backup_failed"


class SourceError(BackupctlError):
    """A source could not be read: a dump exited non-zero, a database is unreachable..."""

    exit_code = ExitCode.FAILED
    kind = "source"


class InterruptedError_(BackupctlError):
    exit_code = ExitCode.INTERRUPTED
    kind = "interrupted"


class RestoreIncompleteError(BackupctlError):
    """A restore stopped part-way: `written` entries were written before `cause`, the rest
    were not. Keeps the exit code of its cause (130 interrupted, 7 damaged data...)."""

    exit_code = ExitCode.FAILED
    kind = "restore_incomplete"

    def __init__(
        self, message: str, *, hint: str | None = None, written: int = 0, cause: str = "", exit_code: int = 1
    ) -> None:
        super().__init__(message, hint=hint)
        self.written = written
        self.cause = cause
        self.exit_code = exit_code
