"""What the database benchmark runners (run_postgres.py, run_mariadb.py) share.

Each runner keeps its server, its data set, its commands and its targets; this module has
the rest: the common options, the scratch directory, restic's repository, backupctl's
config/init, the timed steps (alternating order, backupctl failures kept), the medians and
the Markdown/JSON report. The report format is quoted by docs/performance.md: keep it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from measure import (
    StepFailed,
    Timed,
    backupctl_command,
    git_commit,
    json_doc,
    log,
    median,
    run,
    run_pipeline,
    sync,
    tree_bytes,
)

# backupctl's backup may take at most this many times the dump tool alone.
TARGET_VS_DUMP = 1.25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def add_common_args(ap: argparse.ArgumentParser, json_default: str) -> None:
    """The options every database runner has, after its own data-size option."""
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path, default=Path(json_default))
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--backupctl", default=backupctl_command())
    ap.add_argument("--restic", default="restic")


@contextlib.contextmanager
def scratch(work: Path | None, prefix: str, keep: bool) -> Iterator[Path]:
    """--work or a new directory under /tmp; removed at the end unless --keep."""
    path = work or Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


class Restic:
    """A restic repository in the scratch directory (password in a file, never in argv)."""

    def __init__(self, work: Path, binary: str) -> None:
        self.binary = binary
        self.repo = work / "restic-repo"
        self.log = work / "restic.log"
        self.env = {
            "RESTIC_REPOSITORY": str(self.repo),
            "RESTIC_PASSWORD_FILE": str(work / "restic-password"),
            "RESTIC_CACHE_DIR": str(work / "restic-cache"),
        }
        (work / "restic-password").write_text("bench-password-not-secret\n")
        (work / "restic-password").chmod(0o600)
        run([binary, "init", "--repository-version", "2"], env=self.env, log=self.log)

    def backup_stdin(self, filename: str) -> list[str]:
        return [self.binary, "backup", "--quiet", "--host", "bench", "--stdin", "--stdin-filename", filename]


Server = TypeVar("Server")


class Backupctl(Generic[Server]):
    """backupctl with its own repository, key, config and XDG directories under work/backupctl.

    A runner subclass gives `source_type` and `sources()`: its deployments, each with one
    source backed up to a local destination without retention.
    """

    source_type = ""

    def __init__(self, work: Path, server: Server, binary: str) -> None:
        self.work = work / "backupctl"
        self.work.mkdir(parents=True, exist_ok=True)
        self.server = server
        self.binary = binary
        self.config = self.work / "backupctl.yaml"
        self.logfile = self.work / "stderr.log"
        self.repo = self.work / "repo"
        base = self.work / "xdg"
        self.env = {f"XDG_{k}_HOME": str(base / k.lower()) for k in ("STATE", "CONFIG", "DATA", "CACHE")}
        self.ids: dict[str, str] = {}
        self.restore_flags: list[str] = []

    def cli(self, *args: str) -> list[str]:
        return [self.binary, "--config", str(self.config), *args]

    def sources(self) -> dict[str, str]:
        """Deployment name -> its source as a YAML flow mapping."""
        raise NotImplementedError

    def setup(self) -> str | None:
        """Init the repository and write the config; returns why backupctl cannot run this benchmark, or None."""
        if shutil.which(self.binary) is None:
            return "backupctl is not installed (pip install -e .)"
        key = self.work / "repo.key"
        try:
            run(
                self.cli("init", "--repository", str(self.repo), "--key-file", str(key)),
                env=self.env,
                log=self.logfile,
            )
        except StepFailed as exc:
            return f"`backupctl init` failed: {exc}"
        deployments = "".join(
            f"  {name}:\n    sources: [{src}]\n    destinations: [local]\n    policy: none\n"
            for name, src in self.sources().items()
        )
        self.config.write_text(
            f"destinations:\n  local: {{type: local, path: {json.dumps(str(self.repo))}}}\n"
            f"deployments:\n{deployments}"
            f"encryption:\n  key_file: {json.dumps(str(key))}\n"
        )
        check = subprocess.run(
            self.cli("config", "validate"), capture_output=True, text=True, env=os.environ | self.env
        )
        if check.returncode != 0:
            return (
                f"backupctl does not accept the {self.source_type} source yet: "
                + (check.stderr or check.stdout).strip()[-500:]
            )
        helptext = subprocess.run(
            self.cli("backup", "restore", "--help"), capture_output=True, text=True
        ).stdout
        if "--no-safety-backup" in helptext:
            # The safety backup is a second full dump; the comparison is the restore alone.
            self.restore_flags = ["--no-safety-backup"]
        return None

    def backup(self, deployment: str, *extra: str) -> Timed:
        """`backup create DEPLOYMENT`; remembers the snapshot id for restore."""
        t = run(
            self.cli("-o", "json", "backup", "create", deployment, *extra), env=self.env, log=self.logfile
        )
        self.ids[deployment] = str(json_doc(t.stdout)["id"])
        return t


Step = tuple[str, Callable[[], Timed]]


def stream_steps(
    label: str,
    cmd: list[str],
    restic: Restic,
    filename: str,
    log: Path,
    before: Callable[[], None] | None = None,
) -> list[Step]:
    """The two reference steps of a dump tool: `LABEL > /dev/null` and `LABEL | restic backup --stdin`.

    log: stderr of the tool alone; before: run ahead of each (untimed set-up).
    """

    def alone() -> Timed:
        if before:
            before()
        return run(cmd, stdout=subprocess.DEVNULL, log=log)

    def piped() -> Timed:
        if before:
            before()
        return run_pipeline([cmd, restic.backup_stdin(filename)], env=restic.env, log=restic.log)

    return [(f"{label} > /dev/null", alone), (f"{label} | restic backup --stdin", piped)]


class Results:
    """The timings of one benchmark by step name, and the meta data of its JSON report."""

    def __init__(self, runs: int, **params: Any) -> None:
        self.timed: dict[str, list[Timed]] = {}
        self.meta: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **params,
            "commit": git_commit(),
            "runs": runs,
        }

    def add(self, name: str, t: Timed) -> None:
        self.timed.setdefault(name, []).append(t)

    def failed(self, name: str, exc: StepFailed) -> None:
        # backupctl is under development: keep the other measurements, report the error.
        log(f"FAILED: {name}: {str(exc)[-600:]}")
        lines = str(exc).splitlines()
        self.meta.setdefault("failures", []).append(f"{name}: {lines[0]} / {lines[-1]}")

    def setup_backupctl(self, bc: Backupctl[Any]) -> str | None:
        """bc.setup(); why backupctl is not measured (logged, in meta), or None."""
        why_not = bc.setup()
        if why_not:
            log(f"SKIPPING backupctl: {why_not}")
            self.meta["backupctl_skipped"] = why_not
        return why_not

    def steps(self, run_no: int, steps: Sequence[Step]) -> None:
        """Time each step, reversed on odd runs; a failing backupctl step is recorded, others raise."""
        for name, fn in steps if run_no % 2 == 0 else list(reversed(steps)):
            self.step(run_no, name, fn)

    def step(self, run_no: int, name: str, fn: Callable[[], Timed], say: str = "") -> None:
        """Time one step after a sync (logged as `say`, default its name); see steps() for failures."""
        sync()
        log(f"run {run_no}: {say or name}")
        try:
            self.add(name, fn())
        except StepFailed as exc:
            if not name.startswith("backupctl"):
                raise
            self.failed(name, exc)

    def check_restore(self, run_no: int, got: str, reference: str) -> None:
        if got != reference:
            log(f"run {run_no}: backupctl restore DIFFERS: {got} != {reference}")
            self.meta.setdefault("restore_mismatch", []).append(run_no)

    def repo_sizes(self, restic: Restic, bc: Backupctl[Any] | None) -> None:
        """Apparent size of both repositories after the runs (bc None: backupctl not measured)."""
        self.meta["restic_repo_bytes"] = tree_bytes(restic.repo)[1]
        if bc is not None:
            self.meta["backupctl_repo_bytes"] = tree_bytes(bc.repo)[1]

    def summary(self) -> dict[str, dict[str, float]]:
        """Median wall time and median peak RSS of each step."""
        return {
            name: {
                "wall_s": median([t.wall_s for t in ts]),
                "peak_rss_mib": median([t.peak_rss_mib for t in ts]),
            }
            for name, ts in self.timed.items()
        }

    def report(self, headline: str, targets: list[str], json_path: Path, md_path: Path | None) -> None:
        """Write the JSON (and the Markdown with --md) and print the Markdown.

        targets: rows of the target table (target_row), empty when backupctl was not measured.
        """
        summary = self.summary()
        lines = [
            headline,
            "",
            "| step | time | peak RSS (largest process) |",
            "|---|---|---|",
        ]
        lines += [f"| {n} | {v['wall_s']:.2f} s | {v['peak_rss_mib']:.0f} MiB |" for n, v in summary.items()]
        if targets:
            lines += ["", "| target | measured | verdict |", "|---|---|---|", *targets]
        if "backupctl_skipped" in self.meta:
            lines += ["", f"backupctl not measured: {self.meta['backupctl_skipped']}"]
        for problem in self.meta.get("failures", []):
            lines.append(f"\nFAILED: {problem}")
        if self.meta.get("restore_mismatch"):
            lines.append(
                f"\nbackupctl's restore did NOT match the source in runs {self.meta['restore_mismatch']}"
            )
        md = "\n".join(lines)
        doc = {
            "meta": self.meta,
            "summary": summary,
            "runs": {n: [t.as_dict() for t in ts] for n, ts in self.timed.items()},
        }
        json_path.write_text(json.dumps(doc, indent=2) + "\n")
        if md_path:
            md_path.write_text(md + "\n")
        print(md)


def target_row(label: str, ratio: float, met: bool | None = None) -> str:
    """One row of the target table; met None: a comparison without a target ("-")."""
    verdict = "-" if met is None else "met" if met else "**missed**"
    cell = label.replace("|", "\\|")  # a pipe in a Markdown table cell
    return f"| {cell} | {ratio:.2f}x | {verdict} |"


def backup_targets(
    summary: dict[str, dict[str, float]],
    mine: str,
    alone: str,
    restic: str,
    labels: tuple[str, str] | None = None,
) -> list[str]:
    """The two backup targets: step `mine` <= 1.25x the dump tool `alone`, and faster than `restic`.

    labels: the texts of the two rows (default: made of the step names).
    """
    b, a, r = summary[mine]["wall_s"], summary[alone]["wall_s"], summary[restic]["wall_s"]
    first, second = labels or (f"{mine} <= {TARGET_VS_DUMP}x {alone}", f"{mine} < {restic}")
    return [target_row(first, b / a, b <= TARGET_VS_DUMP * a), target_row(second, b / r, b < r)]
