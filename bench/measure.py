"""Shared helpers of the benchmark runners: timed child processes, sizes, tables."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

MB = 1_000_000
MIB = 1 << 20


class StepFailed(RuntimeError):
    pass


@dataclass
class Timed:
    """One measured command (or pipeline): wall time and resource use of its processes."""

    wall_s: float
    # Peak resident set of each process of the step, MiB (from wait4's ru_maxrss).
    rss_mib: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    stdout: str = ""

    @property
    def peak_rss_mib(self) -> float:
        return max(self.rss_mib, default=0.0)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("stdout")
        d["peak_rss_mib"] = self.peak_rss_mib
        return d


# ru_maxrss of a child counts the pages it shared with its parent before exec (Linux
# carries the old mm's high-water mark over exec, and subprocess forks with vfork), so a
# big benchmark process would inflate every reading. GNU time, a small C program, forks
# the tool and reports the tool's own high-water mark; it is in Debian's `time` package.
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def _wait(proc: subprocess.Popen[bytes], rss_file: Path | None) -> tuple[int, float, float]:
    """Reap one child with wait4: (exit code, peak RSS MiB, CPU seconds incl. its children)."""
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss = ru.ru_maxrss / 1024
    if rss_file is not None:
        text = rss_file.read_text().split()
        rss = int(text[-1]) / 1024 if text and text[-1].isdigit() else float("nan")
        rss_file.unlink(missing_ok=True)
    return proc.returncode, rss, ru.ru_utime + ru.ru_stime


def run_pipeline(
    cmds: Sequence[Sequence[str]],
    env: Mapping[str, str] | None = None,
    stdout: int | IO[Any] | None = subprocess.PIPE,
    log: Path | None = None,
    check: bool = True,
    cwd: Path | None = None,
    stdin: IO[Any] | None = None,
) -> Timed:
    """Run cmds[0] | cmds[1] | ... and time it from the first start to the last exit.

    Each process is reaped with os.wait4, so its own ru_maxrss is known (a shell around
    the pipeline would only report the largest child). stderr of every process goes to
    `log` (appended) so that a failure can be explained.
    """
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    procs: list[subprocess.Popen[bytes]] = []
    rss_files: list[Path | None] = []
    with contextlib.ExitStack() as stack:
        err: IO[Any] | int = stack.enter_context(open(log, "ab")) if log else subprocess.DEVNULL
        try:
            t0 = time.perf_counter()
            prev: IO[bytes] | None = None
            for i, cmd in enumerate(cmds):
                last = i == len(cmds) - 1
                argv = list(cmd)
                rss_file: Path | None = None
                if GNU_TIME:
                    fd, name = tempfile.mkstemp(prefix="bench-rss-")
                    os.close(fd)
                    rss_file = Path(name)
                    argv = [GNU_TIME, "-q", "-f", "%M", "-o", name, "--", *argv]
                rss_files.append(rss_file)
                p = subprocess.Popen(
                    argv,
                    stdin=prev if prev is not None else (stdin if stdin is not None else subprocess.DEVNULL),
                    stdout=stdout if last else subprocess.PIPE,
                    stderr=err,
                    env=full_env,
                    cwd=cwd,
                )
                if prev is not None:
                    prev.close()  # the child holds it now; lets the writer see SIGPIPE
                prev = p.stdout if not last else None
                procs.append(p)
            out = b""
            if procs[-1].stdout is not None:
                out = procs[-1].stdout.read()
                procs[-1].stdout.close()
            results = [_wait(p, f) for p, f in zip(procs, rss_files, strict=True)]
            wall = time.perf_counter() - t0
        finally:
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    p.wait()
    timed = Timed(wall, [r[1] for r in results], sum(r[2] for r in results), out.decode(errors="replace"))
    if check:
        for cmd, (code, _, _) in zip(cmds, results, strict=True):
            if code != 0:
                tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
                raise StepFailed(f"{' '.join(cmd)} exited with {code}\n{tail}")
    return timed


def backupctl_command() -> str:
    """The backupctl script installed beside this interpreter, else `backupctl` on PATH.

    On a machine whose `backupctl` on PATH is a version manager's shim (pyenv's runs ~20
    bash processes, ~70 ms per call), the shim's time is not backupctl's: a pip or venv
    install puts the script itself on PATH. The runners use this as the default --backupctl.
    """
    beside = Path(sys.executable).with_name("backupctl")
    return str(beside) if os.access(beside, os.X_OK) else "backupctl"


def run(cmd: Sequence[str], **kw: Any) -> Timed:
    return run_pipeline([cmd], **kw)


def sync() -> None:
    """Flush dirty pages so one step's write-back does not slow the next step down."""
    os.sync()


def tree_bytes(path: Path) -> tuple[int, int]:
    """(files, apparent bytes) under path, like `du -sb --apparent-size` but files only."""
    files = total = 0
    for root, _dirs, names in os.walk(path):
        for n in names:
            st = os.lstat(os.path.join(root, n))
            files += 1
            total += st.st_size
    return files, total


def warm(path: Path, threads: int = 2) -> float:
    """Read every file once so that the measured runs are cache-warm; returns seconds."""
    t0 = time.perf_counter()
    # Regular files only: a tree such as /usr/share/doc holds dangling symlinks and sockets.
    paths = [
        p
        for r, _d, ns in os.walk(path)
        for n in ns
        if stat.S_ISREG(os.lstat(p := os.path.join(r, n)).st_mode)
    ]

    def read(p: str) -> None:
        with open(p, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(read, paths, chunksize=64))
    return time.perf_counter() - t0


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def git_commit() -> str:
    """The commit of the checkout this benchmark runs from ("-dirty" if it has changes)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def json_doc(text: str) -> Any:
    """The JSON document in a command's stdout, skipping any banner before it (py-spy prints one)."""
    start = text.find("\n{") + 1 if not text.lstrip().startswith("{") else text.find("{")
    return json.JSONDecoder().raw_decode(text[start:])[0]
