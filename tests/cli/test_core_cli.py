"""The CLI end to end, as a new user runs it: init, create, list, show, restore, delete, verify."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import helpers
import pytest
from ruamel.yaml import YAML

from backupctl.errors import ExitCode

LIST_KEYS = {
    "id",
    "deployment",
    "method",
    "type",
    "status",
    "started",
    "duration_s",
    "size_bytes",
    "stored_bytes",
}


def test_new_user_init_create_list_show_restore(
    tmp_path: Path, isolated_env: dict[str, Path], sample_tree: Path
) -> None:
    # init: starter config in the XDG config dir, key 0600, a hint to keep the key safe.
    init = helpers.run_ok("init", "--example-path", sample_tree)
    config_path = isolated_env["XDG_CONFIG_HOME"] / "backupctl" / "config.yaml"
    key_path = isolated_env["XDG_CONFIG_HOME"] / "backupctl" / "repo.key"
    assert config_path.is_file()
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert "somewhere else" in init.stderr or "copy" in init.stderr, str(init)
    # The default repository lives under the XDG data dir.
    cfg = helpers.load_yaml(config_path)
    assert Path(cfg["destinations"]["local"]["path"]).is_relative_to(isolated_env["XDG_DATA_HOME"])
    helpers.run_ok("config", "validate")
    # A second init refuses to overwrite.
    again = helpers.run_cli("init", "--example-path", sample_tree)
    helpers.assert_one_line_error(again, ExitCode.CONFIG, "already exists")

    expected = helpers.snapshot_tree(sample_tree)
    created = helpers.run_ok("backup", "create", "example")
    backup_id = created.stdout.strip()
    assert len(backup_id) >= 8 and all(c in "0123456789abcdef" for c in backup_id), str(created)

    # Table in a pipe: a header line and the row.
    table = helpers.run_ok("backup", "list")
    lines = table.stdout.splitlines()
    assert lines[0].split()[:5] == ["ID", "DEPLOYMENT", "METHOD", "TYPE", "STATUS"], str(table)
    assert len(lines) == 2, str(table)
    # The full ID, never cut (issue 15).
    assert lines[1].split()[:5] == [backup_id, "example", "files", "full", "Completed"], str(table)

    listed = helpers.run_ok("backup", "list", "-o", "json").json()
    assert isinstance(listed, list) and len(listed) == 1
    rec = listed[0]
    assert set(rec) >= LIST_KEYS, rec
    assert rec["id"] == backup_id and rec["deployment"] == "example" and rec["method"] == "files"
    assert rec["type"] == "full" and rec["status"] == "Completed"
    assert (
        rec["size_bytes"]
        == sum(p.stat().st_size for p in sample_tree.rglob("*") if p.is_file() and not p.is_symlink())
        - (sample_tree / "docs" / "readme.txt").stat().st_size
    )  # the hard link's content is stored once
    assert rec["stored_bytes"] > 0 and isinstance(rec["duration_s"], (int, float))

    yaml_doc = YAML(typ="safe").load(helpers.run_ok("backup", "list", "-o", "yaml").stdout)
    assert yaml_doc[0]["id"] == backup_id

    shown = helpers.run_ok("backup", "show", backup_id[:6], "-o", "json").json()
    assert shown["id"] == backup_id
    assert len(shown["sources"]) == 1
    src = shown["sources"][0]
    n_files = sum(1 for p in sample_tree.rglob("*") if not p.is_dir() or p.is_symlink())
    assert src["files"] == n_files, src
    assert src["bytes"] == rec["size_bytes"]
    assert src["method"] == "files"
    text_show = helpers.run_ok("backup", "show", backup_id)
    assert backup_id in text_show.stdout and "Completed" in text_show.stdout

    target = tmp_path / "restore"
    restore = helpers.run_ok("backup", "restore", backup_id[:8], "--target", target)
    assert "Restored" in restore.stderr
    helpers.assert_same_tree(expected, helpers.snapshot_tree(helpers.restored(target, sample_tree)))
    helpers.run_ok("backup", "verify", backup_id)


def test_restore_preserves_every_kind_of_object(tmp_path: Path, files_deployment, sample_tree: Path) -> None:
    dep = files_deployment
    expected = helpers.snapshot_tree(sample_tree)
    backup_id = dep.create()
    target = tmp_path / "out"
    dep.ok("backup", "restore", backup_id, "--target", target)
    root = helpers.restored(target, sample_tree)
    actual = helpers.snapshot_tree(root)
    helpers.assert_same_tree(expected, actual)
    # Spot checks that make the meaning of the comparison explicit.
    assert os.readlink(root / "link_dangling") == "/nonexistent/target"
    assert (root / "link_rel").is_symlink() and (root / "link_rel").read_text() == "hello backupctl\n" * 100
    assert (root / "data" / "hardlink_to_readme").stat().st_ino == (
        root / "docs" / "readme.txt"
    ).stat().st_ino
    assert list((root / "empty_dir").iterdir()) == []
    assert stat.S_IMODE((root / "data" / "script.sh").stat().st_mode) == 0o750
    assert (root / "data" / "random.bin").read_bytes() == (sample_tree / "data" / "random.bin").read_bytes()
    assert (root / "docs" / "empty.txt").read_bytes() == b""


def test_json_output_is_one_document_and_show_yaml_parses(files_deployment) -> None:
    dep = files_deployment
    created = dep.ok("backup", "create", "app", "-o", "json").json()
    assert set(created) >= LIST_KEYS
    assert created["status"] == "Completed"
    shown = YAML(typ="safe").load(dep.ok("backup", "show", created["id"], "--output", "yaml").stdout)
    assert shown["id"] == created["id"] and shown["sources"][0]["files"] > 0
    verified = dep.ok("backup", "verify", created["id"], "-o", "json").json()
    assert verified["ok"] is True and verified["errors"] == []
    assert verified["blobs_checked"] > 0


def test_id_prefix_unknown_and_ambiguous(files_deployment) -> None:
    dep = files_deployment
    svc = helpers.service(dep.config)
    # Backups with chosen IDs (the engine accepts one) so that prefixes collide for sure.
    ids = ["abc1" + "0" * 28, "abc2" + "0" * 28, "f00d" + "1" * 28]
    for backup_id in ids:
        svc.create_backup("app", backup_id=backup_id)
    svc.close()
    amb = dep.run("backup", "show", "abc")
    helpers.assert_one_line_error(amb, ExitCode.NOT_FOUND, "ambiguous")
    amb_json = dep.run("backup", "show", "abc", "-o", "json")
    assert amb_json.returncode == ExitCode.NOT_FOUND, str(amb_json)
    err = json.loads(amb_json.stderr)["error"]
    assert err["kind"] == "ambiguous_id" and err["exit_code"] == ExitCode.NOT_FOUND
    assert amb_json.stdout == ""
    for cmd in (
        ["restore", "abc", "--target", str(dep.root / "t")],
        ["verify", "abc"],
        ["delete", "abc", "--yes"],
    ):
        helpers.assert_one_line_error(dep.run("backup", *cmd), ExitCode.NOT_FOUND, "ambiguous")
    assert not (dep.root / "t").exists()

    unknown = dep.run("backup", "show", "zzzz")
    helpers.assert_one_line_error(unknown, ExitCode.NOT_FOUND, "zzzz")
    helpers.assert_one_line_error(dep.run("backup", "verify", "9999"), ExitCode.NOT_FOUND, "9999")

    # Unique prefixes (any length) and the full ID work, case-insensitively.
    assert dep.show("abc2")["id"] == ids[1]
    assert dep.show("F")["id"] == ids[2]
    assert dep.show(ids[0])["id"] == ids[0]
    assert len(dep.list()) == 3


def test_list_limit_and_more_note(files_deployment) -> None:
    dep = files_deployment
    svc = helpers.service(dep.config)
    ids = [svc.create_backup("app")["id"] for _ in range(21)]
    svc.close()
    table = dep.ok("backup", "list")
    assert len(table.stdout.splitlines()) == 21, str(table)  # header + 20 rows
    assert "1 more" in table.stderr, str(table)
    assert ids[0][:8] not in table.stdout, "the oldest backup is the one left off"
    # Documents are complete unless --limit (issue 15); only the table has a default limit.
    assert [r["id"] for r in dep.ok("backup", "list", "-o", "json").json()] == ids[::-1]
    assert len(dep.ok("backup", "list", "--all", "-o", "json").json()) == 21
    assert len(dep.ok("backup", "list", "--limit", "3", "-o", "json").json()) == 3


def test_restore_over_non_empty_target_needs_confirmation(
    tmp_path: Path, files_deployment, sample_tree: Path
) -> None:
    dep = files_deployment
    backup_id = dep.create()
    target = tmp_path / "busy"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    before = helpers.snapshot_tree(target)

    refused = dep.run("backup", "restore", backup_id, "--target", target)
    helpers.assert_one_line_error(refused, ExitCode.ABORTED, "--yes")
    assert helpers.snapshot_tree(target) == before, "a refused restore changed the target"

    # In place without --yes and no TTY: refused as well, and the source is untouched.
    (sample_tree / "docs" / "readme.txt").write_text("changed since the backup")
    live_before = helpers.snapshot_tree(sample_tree)
    refused_in_place = dep.run("backup", "restore", backup_id)
    helpers.assert_one_line_error(refused_in_place, ExitCode.ABORTED)
    assert helpers.snapshot_tree(sample_tree) == live_before

    dep.ok("backup", "restore", backup_id, "--target", target, "--yes")
    assert (target / "precious.txt").read_text() == "keep me"
    assert (
        helpers.restored(target, sample_tree) / "docs" / "readme.txt"
    ).read_text() == "hello backupctl\n" * 100


def test_restore_in_place_with_yes(files_deployment, sample_tree: Path) -> None:
    dep = files_deployment
    expected = helpers.snapshot_tree(sample_tree)
    backup_id = dep.create()
    (sample_tree / "docs" / "readme.txt").write_text("clobbered")
    (sample_tree / "data" / "random.bin").unlink()
    os.chmod(sample_tree / "data" / "script.sh", 0o644)
    # A directory (with content) where the backup has a file: replaced by the file.
    (sample_tree / "data" / "random.bin").mkdir()
    (sample_tree / "data" / "random.bin" / "inside").write_text("x")
    dep.ok("backup", "restore", backup_id, "--yes")
    helpers.assert_same_tree(expected, helpers.snapshot_tree(sample_tree))


def test_delete_removes_backup_and_only_its_packs(tmp_path: Path, make_deployment, sample_tree: Path) -> None:
    dep = make_deployment([{"type": "files", "paths": [str(sample_tree)]}])
    first = dep.create()
    packs_first = dep.packs()
    # New, incompressible content only the later backups reference.
    big = os.urandom(3 << 20)
    (sample_tree / "data" / "big_new.bin").write_bytes(big)
    second = dep.create()
    third = dep.create()  # shares the data with `second`
    packs_all = dep.packs()
    assert packs_first < packs_all
    size_before = sum(p.stat().st_size for p in (dep.repository / "data").rglob("*") if p.is_file())

    refused = dep.run("backup", "delete", second)
    helpers.assert_one_line_error(refused, ExitCode.ABORTED)
    assert dep.packs() == packs_all

    dep.ok("backup", "delete", second, "--yes")
    assert {b["id"] for b in dep.list()} == {first, third}
    assert dep.packs() <= packs_all
    # `third` still needs the new data: it verifies and restores it.
    dep.ok("backup", "verify", third)
    dep.ok("backup", "restore", third, "--target", tmp_path / "r3")
    assert (helpers.restored(tmp_path / "r3", sample_tree) / "data" / "big_new.bin").read_bytes() == big

    dep.ok("backup", "delete", third, "--yes")
    table = dep.ok("backup", "list")
    assert first[:8] in table.stdout
    assert third[:8] not in table.stdout and second[:8] not in table.stdout
    # Exactly the packs `first` uses remain: everything only the deleted backups used is gone.
    assert dep.packs() == packs_first
    size_after = sum(p.stat().st_size for p in (dep.repository / "data").rglob("*") if p.is_file())
    assert size_after < size_before - (3 << 20)
    dep.ok("backup", "verify", first)
    target = tmp_path / "r"
    dep.ok("backup", "restore", first, "--target", target)
    restored = helpers.snapshot_tree(helpers.restored(target, sample_tree))
    assert "data/big_new.bin" not in restored, "`first` predates big_new.bin"
    assert restored["docs/readme.txt"] == helpers.snapshot_tree(sample_tree)["docs/readme.txt"]
    helpers.assert_one_line_error(dep.run("backup", "show", second), ExitCode.NOT_FOUND)


def test_backup_list_filters_by_deployment(tmp_path: Path, sample_tree: Path) -> None:
    config = helpers.write_config(
        tmp_path / "cfg" / "config.yaml",
        sources=[{"type": "files", "paths": [str(sample_tree / "docs")]}],
        repository=tmp_path / "repo",
        extra_deployments={
            "other": {
                "sources": [{"type": "files", "paths": [str(sample_tree / "data")]}],
                "destinations": ["local"],
            }
        },
    )
    env = {"BACKUPCTL_CONFIG": str(config)}
    a = helpers.run_ok("backup", "create", "app", env=env).stdout.strip()
    b = helpers.run_ok("backup", "create", "other", env=env).stdout.strip()
    both = helpers.run_ok("backup", "list", "-o", "json", env=env).json()
    assert [r["id"] for r in both] == [b, a], "newest first"
    only = helpers.run_ok("backup", "list", "--deployment", "other", "-o", "json", env=env).json()
    assert [r["id"] for r in only] == [b]
    # --config wins over BACKUPCTL_CONFIG.
    bogus = tmp_path / "bogus.yaml"
    bogus.write_text("destinations: {}\n")
    via_flag = helpers.run_ok(
        "--config", config, "backup", "list", "-o", "json", env={"BACKUPCTL_CONFIG": str(bogus)}
    )
    assert {r["id"] for r in via_flag.json()} == {a, b}


@pytest.mark.parametrize("flag", ["-q", "--no-color"])
def test_global_flags_anywhere(files_deployment, flag: str) -> None:
    dep = files_deployment
    backup_id = dep.create()
    r = dep.ok("backup", "list", flag, "-o", "json")
    assert r.json()[0]["id"] == backup_id
    if flag == "-q":
        restore = dep.ok("backup", "restore", backup_id, "--target", dep.root / "q", flag)
        assert restore.stderr == "", str(restore)
