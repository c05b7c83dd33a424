"""End to end: backups to every remote destination type, through the CLI, against real servers.

Covers issue 3 §2 (every destination holds a self-sufficient repository: a fresh machine
with only the config and the key lists, shows, restores and verifies from it), §3 (fan-out
to several destinations, per-destination state, `backup upload` retrying only what is
missing, `upload: false`), §6 (`destination list` / `destination check`), §8 (faults:
503s and connection resets survived through retries; a destination that dies mid-upload
leaves nothing half-visible and is completed later) and §9 (no credential in any output).

The destination contract itself is tested in test_destination_conformance.py; here the
whole engine runs, mostly as `backupctl` subprocesses. Servers come from conftest_servers.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import blake3
import pytest
from conftest_servers import build_destination, destination_config
from helpers import (
    CliResult,
    assert_same_tree,
    dump_yaml,
    make_sample_tree,
    restored,
    run_cli,
    service,
    snapshot_tree,
)
from servers import AZURITE_ACCOUNT, AZURITE_KEY, AzureServer, free_port

from backupctl.destinations.faulty import FaultyDestination
from backupctl.destinations.retry import RetryingDestination
from backupctl.errors import BackupFailedError, ExitCode
from backupctl.repo.crypto import generate_key_file

pytestmark = [pytest.mark.server, pytest.mark.timeout(300)]

REMOTE_TYPES = ("s3", "gcs", "azure", "sftp", "ftp")
MiB = 1024 * 1024


# --- a world: config + key + source tree, and CLI runs against it ----------------------------


class World:
    """One config file with a `local` destination and the given others, a key and a source tree.

    `run(..., machine=m)` runs the CLI with the XDG directories of machine `m`: machine 0
    is the one that takes the backups, any other number is a fresh machine that has only
    the config and the key (empty state, config and data directories).
    """

    def __init__(
        self,
        tmp_path: Path,
        destinations: dict[str, dict[str, Any]],
        deployments: dict[str, dict[str, Any]],
        *,
        big_files: int = 0,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.tmp = tmp_path
        self.local_repo = tmp_path / "local-repo"
        self.key = tmp_path / "repo.key"
        generate_key_file(self.key)
        self.source = make_sample_tree(tmp_path / "src")
        rnd = random.Random(7)
        for i in range(big_files):  # incompressible, so each MiB is about a MiB of packs
            (self.source / "data" / f"big-{i}.bin").write_bytes(rnd.randbytes(MiB))
        self.expected = snapshot_tree(self.source)
        self.destinations = {"local": {"type": "local", "path": str(self.local_repo)}, **destinations}
        self.deployments = {
            name: {"sources": [{"type": "files", "paths": [str(self.source)]}], **dep}
            for name, dep in deployments.items()
        }
        self.settings = settings
        self.config = tmp_path / "config.yaml"
        self.write()
        self.results: list[CliResult] = []  # every CLI run, for the credential checks

    def write(self) -> None:
        doc: dict[str, Any] = {
            "destinations": self.destinations,
            "deployments": self.deployments,
            "encryption": {"key_file": str(self.key)},
        }
        if self.settings:
            doc["settings"] = self.settings
        dump_yaml(doc, self.config)

    def machine_env(self, machine: int) -> dict[str, str]:
        env = {"BACKUPCTL_CONFIG": str(self.config)}
        if machine:
            for var in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
                path = self.tmp / f"machine-{machine}" / var.lower()
                path.mkdir(parents=True, exist_ok=True)
                env[var] = str(path)
        return env

    def run(self, *args: Any, machine: int = 0, env: dict[str, str] | None = None) -> CliResult:
        result = run_cli(*args, env={**self.machine_env(machine), **(env or {})})
        self.results.append(result)
        if "-v" not in args:  # -v shows tracebacks on purpose
            assert "Traceback" not in result.stderr, str(result)
        return result

    def ok(self, *args: Any, **kwargs: Any) -> CliResult:
        result = self.run(*args, **kwargs)
        assert result.returncode == 0, str(result)
        return result

    def json(self, *args: Any, **kwargs: Any) -> Any:
        return self.ok(*args, "-o", "json", **kwargs).json()

    def create(self, deployment: str) -> str:
        return self.ok("backup", "create", deployment).stdout.strip().splitlines()[-1]

    def assert_restores(self, backup_id: str, destination: str, machine: int = 0) -> None:
        """`backup restore --destination` gives the source tree back, byte for byte."""
        target = self.tmp / f"restore-{destination}-{uuid.uuid4().hex[:6]}"
        self.ok(
            "backup", "restore", backup_id[:8], "--destination", destination, "--target", target,
            machine=machine,
        )  # fmt: skip
        assert_same_tree(self.expected, snapshot_tree(restored(target, self.source)))

    def assert_verifies(self, backup_id: str, destination: str, machine: int = 0) -> None:
        doc = self.json("backup", "verify", backup_id[:8], "--destination", destination, machine=machine)
        assert doc["ok"] is True and not doc["errors"], doc
        assert doc["id"] == backup_id and doc["destination"] == destination, doc
        assert doc["blobs_checked"] > 0 and doc["bytes_checked"] > 0, doc


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))


def remote_objects(cfg: dict[str, Any], prefix: str = "") -> dict[str, bytes]:
    """Every object under `prefix` at a destination, read with a fresh client (no wrappers)."""
    dest = build_destination(cfg, "inspect")
    try:
        return {info.name: dest.get(info.name) for info in dest.list(prefix)}
    finally:
        dest.close()


# --- §2: every destination holds a self-sufficient repository ---------------------------------


@pytest.mark.parametrize("kind", REMOTE_TYPES)
def test_fresh_machine_lists_shows_restores_and_verifies_from_remote(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    world = World(
        tmp_path,
        destinations={
            "remote": destination_config(kind, request, tmp_path),
            "solo": destination_config(kind, request, tmp_path),
        },
        deployments={
            "app": {"destinations": ["local", "remote"]},  # written locally, then uploaded
            "only": {"destinations": ["solo"]},  # written straight to the remote, no local copy
        },
    )
    app_id = world.create("app")
    only_id = world.create("only")
    shown = world.json("backup", "show", app_id[:8])
    assert shown["status"] == "Completed", shown
    assert shown["destinations"]["local"] == {"state": "stored"}, shown
    assert shown["destinations"]["remote"]["state"] == "uploaded", shown
    assert shown["destinations"]["remote"]["objects_sent"] >= 3, shown  # packs + index + manifest

    # The fresh machine has the config and the key, but neither the state nor the local copy.
    world.local_repo.rename(tmp_path / "local-repo-elsewhere")
    for dest, backup_id, deployment in (("remote", app_id, "app"), ("solo", only_id, "only")):
        listed = world.json("backup", "list", "--destination", dest, "--all", machine=1)
        assert [(r["id"], r["status"], r["deployment"]) for r in listed] == [
            (backup_id, "Completed", deployment)
        ], listed
        shown = world.json("backup", "show", backup_id[:8], "--destination", dest, machine=1)
        assert shown["id"] == backup_id and shown["status"] == "Completed", shown
        assert shown["files"] == listed[0]["files"] > 0, shown
        assert [s["method"] for s in shown["sources"]] == ["files"], shown
        assert shown["sources"][0]["bytes"] == shown["size_bytes"] > 700 * 1024, shown
        world.assert_restores(backup_id, dest, machine=1)
        world.assert_verifies(backup_id, dest, machine=1)
    # Without --destination, a deployment whose only destination is remote reads it too.
    listed = world.json("backup", "list", "--deployment", "only", machine=2)
    assert [r["id"] for r in listed] == [only_id], listed


# --- §3: fan-out with one failing destination; `backup upload` completes it -------------------


def test_fanout_with_unreachable_azure_fails_then_upload_completes_it(
    request: pytest.FixtureRequest, tmp_path: Path, azure_server: AzureServer
) -> None:
    azure = destination_config("azure", request, tmp_path)
    good_url = azure["account_url"]
    azure["account_url"] = with_port(good_url, free_port())  # nothing listens there
    azure["retries"] = 1  # one retry still goes through the retry path, without 15 s of backoff
    world = World(
        tmp_path,
        destinations={"s3": destination_config("s3", request, tmp_path), "azure": azure},
        deployments={"app": {"destinations": ["local", "s3", "azure"]}},
    )
    failed = world.run("backup", "create", "app")
    assert failed.returncode == ExitCode.FAILED, str(failed)
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "azure" in errors[0] and "backup upload" in failed.stderr, str(failed)
    assert "s3" not in errors[0].replace("azure", ""), "only the failing destination is blamed"

    listed = world.json("backup", "list", "--all")
    # Completed (restorable from its local copy); the failed copy is named (issue 11 item 16).
    assert [(r["status"], r["failed_uploads"]) for r in listed] == [("Completed", ["azure"])], listed
    backup_id = listed[0]["id"]
    shown = world.json("backup", "show", backup_id[:8])
    assert shown["status"] == "Completed" and "azure" in shown["error"], shown
    states = shown["destinations"]
    assert set(states) == {"local", "s3", "azure"}, states
    assert states["local"] == {"state": "stored"}, states
    assert states["s3"]["state"] == "uploaded" and states["s3"]["objects_sent"] >= 3, states
    assert states["azure"]["state"] == "failed" and "azure" in states["azure"]["error"], states
    full_upload = states["s3"]
    # The complete copies are usable meanwhile; the failed one holds nothing.
    world.assert_verifies(backup_id, "s3")
    assert not remote_objects({**azure, "account_url": good_url}), "nothing reached azure"

    azure["account_url"] = good_url  # the destination is fixed
    world.write()
    uploaded = world.json("backup", "upload", backup_id[:8])
    after = uploaded["destinations"]
    assert set(after) == {"s3", "azure"}, uploaded
    assert after["azure"]["state"] == "uploaded", uploaded
    assert after["azure"]["objects_sent"] == full_upload["objects_sent"], (after, full_upload)
    assert after["s3"] == {**after["s3"], "state": "uploaded", "objects_sent": 0, "bytes_sent": 0}, after

    shown = world.json("backup", "show", backup_id[:8])
    assert shown["status"] == "Completed" and not shown.get("error"), shown
    assert {n: s["state"] for n, s in shown["destinations"].items()} == {
        "local": "stored",
        "s3": "uploaded",
        "azure": "uploaded",
    }, shown
    assert [r["status"] for r in world.json("backup", "list", "--all")] == ["Completed"]
    world.assert_restores(backup_id, "azure", machine=1)
    # A second upload has nothing left to send anywhere.
    again = world.json("backup", "upload", backup_id[:8], "--destination", "azure")
    assert again["destinations"]["azure"]["objects_sent"] == 0, again


# --- §8: faults --------------------------------------------------------------------------------


class LoseExclusiveReplies(FaultyDestination):
    """In "reset" mode, also lose the reply of the first attempt of every conditional create
    (the repository config, each manifest: the commit points), which the random faults hit
    only by chance. The retry then meets AlreadyExists for an object that is ours."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost: list[str] = []

    def put_metadata(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        if exclusive and self.mode == "reset" and name not in self.lost:
            self.inner.put_metadata(name, data, exclusive=True)
            self.lost.append(name)
            raise self._fail("put")
        super().put_metadata(name, data, exclusive=exclusive)


def flaky(cfg: dict[str, Any], name: str, mode: str, seed: int) -> tuple[Any, LoseExclusiveReplies]:
    """The destination of `cfg` behind a FaultyDestination and a fast RetryingDestination."""
    faulty = LoseExclusiveReplies(build_destination(cfg, name), fail_ratio=0.3, seed=seed, mode=mode)
    # 0.3 ** 20: no operation realistically fails every attempt; short sleeps keep it quick.
    return RetryingDestination(faulty, attempts=20, base_delay=0.001, max_delay=0.01), faulty


@pytest.mark.parametrize("mode", ["503", "reset"])
@pytest.mark.parametrize("kind", ["s3", "sftp"])
def test_backups_complete_through_injected_faults(
    kind: str, mode: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    remote = destination_config(kind, request, tmp_path)
    solo = destination_config(kind, request, tmp_path)
    world = World(
        tmp_path,
        destinations={"remote": remote, "solo": solo},
        deployments={"app": {"destinations": ["local", "remote"]}, "only": {"destinations": ["solo"]}},
        big_files=3,
        settings={"pack_size_mib": 1},
    )
    svc = service(world.config)
    try:
        svc._destinations["remote"], faulty_remote = flaky(remote, "remote", mode, seed=1)
        svc._destinations["solo"], faulty_solo = flaky(solo, "solo", mode, seed=2)
        app = svc.create_backup("app")  # local, then an upload through the faults
        only = svc.create_backup("only")  # the repository itself written through the faults
        assert app["status"] == only["status"] == "Completed"
        assert svc.state.get_job(app["id"])["destinations"]["remote"]["state"] == "uploaded"
        assert faulty_remote.injected > 0 and faulty_solo.injected > 0, "no fault was injected"
        if mode == "reset":  # the repository's config and the manifest (upload: a plain put) lost a reply
            assert faulty_remote.lost == ["config"], faulty_remote.lost
            assert {"config", f"snapshots/{only['id']}"} <= set(faulty_solo.lost), faulty_solo.lost
        # Reading back through the faults works as well.
        for backup_id, dest in ((app["id"], "remote"), (only["id"], "solo")):
            target = tmp_path / f"restore-inproc-{dest}"
            svc.restore_backup(backup_id, target_dir=target, destination=dest)
            assert_same_tree(world.expected, snapshot_tree(restored(target, world.source)))
    finally:
        svc.close()
    # What the remotes hold is intact, seen from a fresh machine without any faults.
    world.local_repo.rename(tmp_path / "local-repo-elsewhere")
    world.assert_verifies(app["id"], "remote", machine=1)
    world.assert_verifies(only["id"], "solo", machine=1)


@pytest.mark.parametrize("kind", ["s3", "ftp"])
def test_destination_dying_mid_upload_leaves_nothing_visible_then_upload_completes(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    remote = destination_config(kind, request, tmp_path)
    world = World(
        tmp_path,
        destinations={"remote": remote},
        deployments={"app": {"destinations": ["local", "remote"]}},
        big_files=6,
        settings={"pack_size_mib": 1},
    )
    # Calls to an empty remote before the first pack: stat + put of the one key slot, the
    # config, the upload's shared lock (list, put, list again) and the listing of data/
    # (2 + 1 + 3 + 1). Two packs go through, then the destination is gone for good.
    sent_before_dying = 2
    svc = service(world.config)
    faulty = FaultyDestination(build_destination(remote, "remote"), mode=f"die_after={7 + sent_before_dying}")
    svc._destinations["remote"] = RetryingDestination(faulty, attempts=3, base_delay=0.001, max_delay=0.01)
    try:
        with pytest.raises(BackupFailedError) as caught:
            svc.create_backup("app")
    finally:
        svc.close()
    assert "remote" in caught.value.message and "backup upload" in (caught.value.hint or "")
    assert faulty.injected > 0

    shown = world.json("backup", "show", world.json("backup", "list", "--all")[0]["id"])
    backup_id = shown["id"]
    assert shown["status"] == "Completed" and shown["failed_uploads"] == ["remote"], shown
    assert shown["destinations"]["local"] == {"state": "stored"}, shown
    assert shown["destinations"]["remote"]["state"] == "failed", shown
    assert "injected fault" in shown["destinations"]["remote"]["error"], shown

    # Nothing half-visible: some packs, each whole, but no index and no manifest.
    held = remote_objects(remote)
    packs = {n: d for n, d in held.items() if n.startswith("data/")}
    assert len(packs) == sent_before_dying, sorted(held)
    for name, data in packs.items():
        assert blake3.blake3(data).hexdigest() == name.rsplit("/", 1)[1], f"{name} is not whole"
    assert not [n for n in held if n.startswith(("snapshots/", "index/"))], sorted(held)
    assert world.json("backup", "list", "--destination", "remote", machine=1) == []
    local_packs = [p for p in (world.local_repo / "data").rglob("*") if p.is_file()]
    assert len(local_packs) >= 2 * sent_before_dying, "too few packs to die in the middle"

    # The destination is back: only the missing packs, the index and the manifest are sent.
    uploaded = world.json("backup", "upload", backup_id[:8])
    state = uploaded["destinations"]["remote"]
    assert state["state"] == "uploaded", uploaded
    assert state["objects_sent"] == len(local_packs) - sent_before_dying + 2, (state, len(local_packs))
    assert state["bytes_sent"] < sum(p.stat().st_size for p in local_packs), state
    shown = world.json("backup", "show", backup_id[:8])
    assert shown["status"] == "Completed" and shown["destinations"]["remote"]["state"] == "uploaded"
    world.local_repo.rename(tmp_path / "local-repo-elsewhere")
    world.assert_restores(backup_id, "remote", machine=1)
    world.assert_verifies(backup_id, "remote", machine=1)


# --- §3: upload: false -------------------------------------------------------------------------


def test_upload_false_keeps_backups_local_until_backup_upload(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    remote = destination_config("s3", request, tmp_path)
    world = World(
        tmp_path,
        destinations={"s3": remote},
        deployments={"app": {"destinations": ["local", "s3"], "upload": False}},
    )
    backup_id = world.create("app")
    shown = world.json("backup", "show", backup_id[:8])
    assert shown["status"] == "Completed", shown
    assert shown["destinations"] == {"local": {"state": "stored"}, "s3": {"state": "not uploaded"}}, shown
    assert "not uploaded" in world.ok("backup", "show", backup_id[:8]).stdout
    assert not remote_objects(remote), "nothing may be sent before `backup upload`"
    assert world.json("backup", "list", "--destination", "s3", machine=1) == []

    uploaded = world.json("backup", "upload", backup_id[:8], "--destination", "s3")
    assert uploaded["destinations"]["s3"]["state"] == "uploaded", uploaded
    assert uploaded["destinations"]["s3"]["objects_sent"] >= 3, uploaded
    assert world.json("backup", "show", backup_id[:8])["destinations"]["s3"]["state"] == "uploaded"
    listed = world.json("backup", "list", "--destination", "s3", machine=1)
    assert [(r["id"], r["status"]) for r in listed] == [(backup_id, "Completed")], listed
    world.assert_restores(backup_id, "s3", machine=1)


# --- §9: credentials never appear --------------------------------------------------------------


def test_credentials_never_appear_in_outputs_errors_or_state(
    request: pytest.FixtureRequest, tmp_path: Path, azure_server: AzureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3 = destination_config("s3", request, tmp_path)
    s3_secret = f"S3-SECRET-{uuid.uuid4().hex}"  # moto accepts any secret
    monkeypatch.setenv(s3["secret_access_key_env"], s3_secret)

    def connection_string(port: int) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={with_port(azure_server.account_url, port)};"
        )

    good = connection_string(urlsplit(azure_server.account_url).port or 0)
    bad = connection_string(free_port())
    azure: dict[str, Any] = {
        "type": "azure",
        "container": "backupctl-test",
        "prefix": f"t-{uuid.uuid4().hex[:10]}",
    }
    azure["connection_string_env"] = "TEST_AZURE_CONNECTION"
    azure["retries"] = 1  # the bad connection string fails fast; one retry keeps the retry path
    monkeypatch.setenv("TEST_AZURE_CONNECTION", bad)
    world = World(
        tmp_path,
        destinations={"s3": s3, "azure": azure},
        deployments={"app": {"destinations": ["local", "s3", "azure"]}},
    )
    secrets = {
        "s3 secret": s3_secret,
        "azure account key": AZURITE_KEY,
        "azure account key (start)": AZURITE_KEY[:16],
        "azure connection string": bad,
    }

    world.ok("config", "show")
    world.json("config", "show")
    # -v: tracebacks and debug details; -o json: the error as a document.
    failed = world.run("-v", "backup", "create", "app", "-o", "json")
    assert failed.returncode == ExitCode.FAILED, str(failed)
    assert "upload to azure failed" in failed.stdout + failed.stderr, str(failed)
    listed = world.json("backup", "list", "--all")
    assert [(r["status"], r["failed_uploads"]) for r in listed] == [("Completed", ["azure"])], listed
    backup_id = listed[0]["id"]
    shown = world.json("backup", "show", backup_id[:8])
    assert shown["destinations"]["azure"]["state"] == "failed", shown
    world.ok("backup", "show", backup_id[:8])
    destinations = world.json("destination", "list")
    assert not next(d for d in destinations if d["name"] == "azure")["reachable"], destinations
    monkeypatch.setenv("TEST_AZURE_CONNECTION", good)
    secrets["azure connection string (fixed)"] = good
    uploaded = world.json("-v", "backup", "upload", backup_id[:8])
    assert uploaded["destinations"]["azure"]["state"] == "uploaded", uploaded
    world.assert_verifies(backup_id, "azure")

    texts = {f"backupctl {' '.join(r.args)}": r.stdout + r.stderr for r in world.results}
    for path in (tmp_path / "xdg-state").rglob("*"):  # the job records with their errors
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    texts[str(world.config)] = world.config.read_text()
    leaks = [
        (what, where) for what, value in secrets.items() for where, text in texts.items() if value in text
    ]
    assert not leaks, f"credentials leaked: {leaks}"
    assert any("azure" in t and "failed" in t for t in texts.values()), "the runs did fail at azure"


# --- §6: destination list and destination check ------------------------------------------------


def test_destination_list_and_check(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    s3 = destination_config("s3", request, tmp_path)
    sftp = destination_config("sftp", request, tmp_path)
    dead = destination_config("s3", request, tmp_path)
    dead["endpoint"] = with_port(dead["endpoint"], free_port())
    dead["retries"] = 1
    world = World(
        tmp_path,
        destinations={"s3": s3, "sftp": sftp, "dead": dead},
        deployments={"app": {"destinations": ["local", "s3"]}, "other": {"destinations": ["sftp"]}},
    )
    world.create("app")
    # The unreachable destination costs each command a full round of retries: run them at once.
    with ThreadPoolExecutor(3) as pool:
        as_json = pool.submit(world.json, "destination", "list")
        as_table = pool.submit(world.ok, "destination", "list")
        broken = pool.submit(world.run, "destination", "check", "dead", "-o", "json")
    rows = {r["name"]: r for r in as_json.result()}
    assert set(rows) == {"local", "s3", "sftp", "dead"}, rows
    assert {n: (r["type"], r["reachable"], r["repository"]) for n, r in rows.items()} == {
        "local": ("local", True, True),
        "s3": ("s3", True, True),
        "sftp": ("sftp", True, False),
        "dead": ("s3", False, False),
    }, rows
    assert rows["dead"]["error"] and "dead" in rows["dead"]["error"], rows["dead"]
    assert all(r["error"] is None for n, r in rows.items() if n != "dead"), rows
    assert rows["s3"]["location"].startswith("s3://") and s3["prefix"] in rows["s3"]["location"], rows
    assert rows["s3"]["used_by"] == ["app"] and rows["sftp"]["used_by"] == ["other"], rows
    assert rows["dead"]["used_by"] == [], rows
    # The table says yes/no (columns: name, type, location, reachable, repository, ...).
    header, *lines = as_table.result().stdout.splitlines()
    at = header.index("REACHABLE")
    assert {ln.split()[0]: ln[at:].split()[0] for ln in lines} == {
        "local": "yes",
        "s3": "yes",
        "sftp": "yes",
        "dead": "no",
    }, lines
    cause = rows["dead"]["error"][:40]  # the rest (how long the retries took) varies per run
    assert any(ln.startswith("dead ") and cause in ln for ln in lines), (cause, lines)

    checked = world.json("destination", "check", "s3")
    assert checked["ok"] is True and checked["destination"] == "s3", checked
    assert len(checked["checks"]) >= 8 and all(c["ok"] for c in checked["checks"]), checked["checks"]
    assert checked["capabilities"]["conditional_create"] is True, checked
    assert checked["capabilities"]["range_reads"] is True, checked
    assert checked["latency_ms"] is not None and checked["latency_ms"] > 0, checked
    assert checked["write_mb_s"] > 0 and checked["read_mb_s"] > 0, checked
    # The probe cleans up after itself: only the repository's objects remain.
    assert not [n for n in remote_objects(s3) if n.startswith("backupctl-check")]

    failed = broken.result()
    assert failed.returncode == ExitCode.DESTINATION, str(failed)
    doc = json.loads(failed.stdout)
    assert doc["ok"] is False and doc["checks"][0]["ok"] is False, doc
    assert doc["checks"][0]["error"], doc
    assert os.environ[s3["secret_access_key_env"]] not in failed.stdout + failed.stderr
