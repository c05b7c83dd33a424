"""`backupctl repository ...`: check, repair and unlock a destination's repository.

JSON output (-o json) keys are stable: check -> {destination, ok, index_files,
index_files_damaged, packs, packs_indexed, packs_unindexed, snapshots, packs_read,
bytes_read, problems: [{kind, object, message}]}; repair index -> {destination, ok,
index_files_damaged, index_files_written, index_files_deleted, packs_reindexed,
blobs_reindexed, packs_missing, packs_unreadable}; repair snapshots -> {destination, ok,
dry_run, snapshots, damaged: [{id, object, problem, action}]}; unlock -> {destination,
removed: [{name, hostname, pid, operation, exclusive, time, stale}]}; stats -> {destination,
snapshots, index_files, blobs, data_blobs, tree_blobs, blob_bytes, raw_bytes, packs,
pack_bytes, packs_unindexed, referenced_blobs, referenced_raw_bytes, logical_bytes,
unused_bytes, dedup_ratio, compression_ratio} (see repo/stats.py).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from backupctl.backups.service import Service
from backupctl.cli import context, output
from backupctl.cli.output import human_bytes
from backupctl.cli.progress import CliReporter
from backupctl.errors import IntegrityError, UsageError

app = typer.Typer(
    help="Check, repair, unlock and measure the repository at a destination.", no_args_is_help=True
)
repair_app = typer.Typer(
    help="Rebuild a damaged index, set damaged backups aside.\n\nExample: backupctl repository repair index",
    no_args_is_help=True,
)
app.add_typer(repair_app, name="repair")

DestinationOpt = Annotated[
    str | None,
    typer.Option("--destination", help="Destination name (needed when several are configured)."),
]


def _destination(svc: Service, name: str | None) -> str:
    if name is not None:
        svc.destination(name)  # unknown name: exit 5 with the configured ones
        return name
    names = list(svc.config.destinations)
    if len(names) == 1:
        return names[0]
    raise UsageError(
        "several destinations are configured; say which repository with --destination NAME",
        hint=f"configured: {', '.join(names) or 'none'}",
    )


@app.command("check")
def check(
    destination: DestinationOpt = None,
    read_data: Annotated[
        bool, typer.Option("--read-data", help="Also read every pack and authenticate every blob.")
    ] = False,
    read_data_subset: Annotated[
        str | None,
        typer.Option(
            "--read-data-subset", help="Read only some packs: a percentage (10%) or part n/m (2/5)."
        ),
    ] = None,
) -> None:
    """Check the repository's structure: index files, pack headers and sizes, every backup's blobs indexed.

    Each problem is named; exit 7 when anything is damaged.
    Example: backupctl repository check --destination s3 --read-data-subset 10%
    """
    from backupctl.repo.check import DataSubset

    subset = DataSubset.parse(read_data_subset) if read_data_subset else DataSubset() if read_data else None
    with CliReporter() as reporter:
        svc = context.service(reporter)
        name = _destination(svc, destination)
        result = svc.check_repository(name, subset)
    if output.structured():
        output.emit_document(result)
    else:
        for p in result["problems"]:
            sys.stderr.write(f"damaged: {p['object']}: {p['message']}\n")
        read = f", {result['packs_read']} packs ({human_bytes(result['bytes_read'])}) read" if subset else ""
        output.message(
            f"{result['snapshots']} backups, {result['packs_indexed']} indexed packs, "
            f"{result['index_files']} index files checked{read}"
            + (
                f"; {result['packs_unindexed']} unindexed packs (`backup prune` removes them)"
                if result["packs_unindexed"]
                else ""
            )
        )
        if result["ok"]:
            output.message(f"No problems found in the repository at {name}.")
    if not result["ok"]:
        raise IntegrityError(
            f"repository at {name} is damaged: {len(result['problems'])} problem{'s' if len(result['problems']) != 1 else ''}",
            hint=_repair_hint(result["problems"]),
        )


def _repair_hint(problems: list[dict[str, Any]]) -> str:
    kinds = {p["kind"] for p in problems}
    if "index" in kinds or "snapshot" in kinds:
        return "run `backupctl repository repair index`, then check again; `repository repair snapshots` sets aside backups that stay damaged"
    return "the named packs are damaged; backups using them cannot be restored from this destination"


@repair_app.command("index")
def repair_index(destination: DestinationOpt = None) -> None:
    """Rebuild the index from the pack headers; replace damaged index files.

    Example: backupctl repository repair index --destination local
    """
    with CliReporter() as reporter:
        svc = context.service(reporter)
        name = _destination(svc, destination)
        result = svc.repair_index(name)
    if output.structured():
        output.emit_document(result)
    else:
        for f in result["index_files_deleted"]:
            output.message(f"deleted {f}")
        for p in result["packs_unreadable"]:
            sys.stderr.write(f"damaged: {p['pack']}: {p['error']}\n")
        output.message(
            f"Indexed {result['packs_reindexed']} packs ({result['blobs_reindexed']} blobs) from their headers; "
            f"wrote {len(result['index_files_written'])} and deleted {len(result['index_files_deleted'])} index files."
        )
    if not result["ok"]:
        raise IntegrityError(
            f"{len(result['packs_unreadable'])} packs have damaged headers and could not be indexed",
            hint="run `backupctl repository repair snapshots` to set aside backups that need them",
        )


@repair_app.command("snapshots")
def repair_snapshots(
    destination: DestinationOpt = None,
    delete: Annotated[
        bool, typer.Option("--delete", help="Delete damaged backups instead of moving them to damaged/.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report damaged backups.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Set aside backups that cannot be restored: damaged manifests, or blobs missing from the index.

    They are moved to damaged/snapshots/ (or deleted with --delete). Run `repair index` first.
    Example: backupctl repository repair snapshots --dry-run
    """
    with CliReporter() as reporter:
        svc = context.service(reporter)
        name = _destination(svc, destination)
        if not dry_run:
            context.confirm(f"Set aside the damaged backups in the repository at {name}?", yes=yes)
        result = svc.repair_snapshots(name, delete=delete, dry_run=dry_run)
    if output.structured():
        output.emit_document(result)
        return
    for d in result["damaged"]:
        output.message(f"{d['id'][:12]}: {d['problem']}: {d['action']}")
    output.message(f"{len(result['damaged'])} of {result['snapshots']} backups damaged.")


@app.command("stats")
def stats(destination: DestinationOpt = None) -> None:
    """Show blobs, packs, sizes and the deduplication ratio of the repository.

    Reads the index and every backup's item list (under a shared lock).
    Example: backupctl repository stats --destination local -o json
    """
    with CliReporter() as reporter:
        svc = context.service(reporter)
        name = _destination(svc, destination)
        result = svc.repository_stats(name)
    if output.structured():
        output.emit_document(result)
        return
    r = result
    ratio = f"{r['dedup_ratio']:.2f}x" if r["dedup_ratio"] is not None else "-"
    comp = f"{r['compression_ratio']:.2f}x" if r["compression_ratio"] is not None else "-"
    for label, value in (
        ("Backups", str(r["snapshots"])),
        ("Content of all backups", human_bytes(r["logical_bytes"])),
        ("Unique content", human_bytes(r["referenced_raw_bytes"])),
        ("Deduplication ratio", ratio),
        ("Compression ratio", comp),
        ("Blobs", f"{r['blobs']} ({r['data_blobs']} data, {r['tree_blobs']} tree)"),
        ("Packs", f"{r['packs']} ({human_bytes(r['pack_bytes'])}), {r['packs_unindexed']} unindexed"),
        ("Unused (prune frees)", human_bytes(r["unused_bytes"])),
        ("Index files", str(r["index_files"])),
    ):
        output.message(f"{label + ':':<24}{value}")


@app.command("unlock")
def unlock(
    destination: DestinationOpt = None,
    remove_all: Annotated[
        bool,
        typer.Option("--remove-all", help="Remove every lock, also live ones (the holder must be dead)."),
    ] = False,
) -> None:
    """Remove stale locks (older than 30 minutes, or of dead processes on this host).

    A lock of a process on another host that is gone for good needs --remove-all.
    Example: backupctl repository unlock --remove-all
    """
    with CliReporter() as reporter:
        svc = context.service(reporter)
        name = _destination(svc, destination)
        result = svc.unlock_repository(name, remove_all=remove_all)
    if output.structured():
        output.emit_document(result)
        return
    for d in result["removed"]:
        output.message(
            f"removed {d['name']} ({d.get('operation')} by pid {d.get('pid')} on {d.get('hostname')})"
        )
    output.message(f"Removed {len(result['removed'])} locks.")
