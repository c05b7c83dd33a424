"""How a filesystem restore that stops part-way is reported.

For FsRestorer (sources/restore_fs.py). Whatever stops it - a failed entry (`EntryFailed`,
raised around the OSError or damaged-data error of one path, in the reading thread or the
writer), Ctrl-C, an error of the engine - becomes one RestoreIncompleteError
(`stopped_error`) that says how many entries were written and why it stopped, naming the
path (under the restore root) where that is known; the exit code is the cause's own.
"""

from __future__ import annotations

from pathlib import Path

from backupctl.errors import BackupctlError, ExitCode, RestoreIncompleteError


class EntryFailed(Exception):
    """Writing one entry failed (OSError, or damaged data while reading its content)."""

    def __init__(self, path: str, error: OSError | BackupctlError) -> None:
        super().__init__(path, error)
        self.path = path
        self.error = error


def stopped_error(
    exc: BaseException, current: str, root: Path, in_place: bool, written: int
) -> RestoreIncompleteError:
    """The error that says how far the restore got and why it stopped (`current`: the entry
    being written by the reading thread, "" when none)."""
    code = ExitCode.FAILED
    if isinstance(exc, KeyboardInterrupt):
        cause, code = "interrupted", ExitCode.INTERRUPTED
    elif isinstance(exc, EntryFailed):
        error = exc.error
        if isinstance(error, BackupctlError):
            cause, code = f"{root / exc.path}: {error.message}", error.exit_code
        else:
            cause = f"{root / exc.path}: {error.strerror or error}"
    elif isinstance(exc, RestoreIncompleteError):
        return exc
    elif isinstance(exc, BackupctlError):
        cause, code = exc.message, exc.exit_code
        if current:
            cause = f"{root / current}: {cause}"
    elif isinstance(exc, OSError):
        cause = f"{exc.filename or root}: {exc.strerror or exc}"
    else:
        cause = f"internal error: {type(exc).__name__}: {exc}"
    where = f"into {root}" if not in_place else "in place"
    verb = "interrupted" if code == ExitCode.INTERRUPTED else "stopped"
    return RestoreIncompleteError(
        f"restore {verb} after writing {written} entries {where}: {cause}",
        written=written,
        cause=cause,
        exit_code=code,
    )
