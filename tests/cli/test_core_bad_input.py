"""Bad input: each gets one clear line, the documented exit code, no traceback (unless -v),
and nothing already stored is damaged. Also sources that change under the backup."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import threading
import time
from pathlib import Path

import helpers
import pytest

from backupctl.errors import ExitCode
from backupctl.events import CollectingReporter
from backupctl.repo.crypto import generate_key_file


def _repo_files(repo: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(repo)): p.read_bytes()
        for p in repo.rglob("*")
        if p.is_file() and "locks" not in p.parts
    }


# ---- keys ------------------------------------------------------------------------------


def test_wrong_key_file(tmp_path: Path, files_deployment) -> None:
    dep = files_deployment
    backup_id = dep.create()
    stored = _repo_files(dep.repository)
    good_key = dep.key_file.read_bytes()
    dep.key_file.unlink()
    generate_key_file(dep.key_file)  # a different, valid key

    for args in (
        ["backup", "list"],
        ["backup", "show", backup_id],
        ["backup", "verify", backup_id],
        ["backup", "restore", backup_id, "--target", str(tmp_path / "r")],
    ):
        result = dep.run(*args)
        helpers.assert_one_line_error(result, ExitCode.WRONG_KEY, "key")
    assert not (tmp_path / "r").exists()
    create = dep.run("backup", "create", "app")
    helpers.assert_one_line_error(create, ExitCode.WRONG_KEY, "key")
    as_json = dep.run("backup", "list", "-o", "json")
    assert as_json.returncode == ExitCode.WRONG_KEY
    assert json.loads(as_json.stderr)["error"]["kind"] == "wrong_key"
    assert _repo_files(dep.repository) == stored, "a wrong key changed the repository"

    dep.key_file.write_bytes(good_key)
    dep.ok("backup", "verify", backup_id)


def test_wrong_passphrase(tmp_path: Path, sample_tree: Path) -> None:
    secret = tmp_path / "pass.txt"
    secret.write_text("correct horse battery staple\n")
    config = helpers.write_config(
        tmp_path / "c" / "config.yaml",
        sources=[{"type": "files", "paths": [str(sample_tree)]}],
        repository=tmp_path / "repo",
    )
    cfg = helpers.load_yaml(config)
    cfg["encryption"] = {"passphrase_file": str(secret)}
    helpers.dump_yaml(cfg, config)
    env = {"BACKUPCTL_CONFIG": str(config)}
    helpers.run_ok("backup", "create", "app", env=env)
    secret.write_text("wrong horse\n")
    helpers.assert_one_line_error(
        helpers.run_cli("backup", "list", env=env), ExitCode.WRONG_KEY, "passphrase"
    )
    # A missing passphrase env var is a config error naming the variable, not the value.
    cfg["encryption"] = {"passphrase_env": "BACKUPCTL_TEST_UNSET_VAR"}
    helpers.dump_yaml(cfg, config)
    helpers.assert_one_line_error(
        helpers.run_cli("backup", "list", env=env), ExitCode.CONFIG, "BACKUPCTL_TEST_UNSET_VAR"
    )


def test_key_file_missing(files_deployment) -> None:
    dep = files_deployment
    dep.key_file.unlink()
    helpers.assert_one_line_error(dep.run("backup", "list"), ExitCode.CONFIG, str(dep.key_file))


@pytest.mark.parametrize(
    "content", [b"\xdd\x00\xff\x80" * 8, b"not base64 at all\n", b""], ids=["binary", "text", "empty"]
)
def test_key_file_with_wrong_content(files_deployment, content: bytes) -> None:
    dep = files_deployment
    backup_id = dep.create()
    stored = _repo_files(dep.repository)
    dep.key_file.write_bytes(content)
    result = dep.run("backup", "show", backup_id)
    helpers.assert_one_line_error(result, ExitCode.CONFIG, "is not a backupctl key file")
    assert "base64" in result.stderr
    assert _repo_files(dep.repository) == stored


# ---- config ------------------------------------------------------------------------------


def test_missing_config_hints_at_init(isolated_env) -> None:
    result = helpers.run_cli("backup", "list")
    helpers.assert_one_line_error(result, ExitCode.CONFIG, "backupctl init")
    expected = isolated_env["XDG_CONFIG_HOME"] / "backupctl" / "config.yaml"
    assert str(expected) in result.stderr
    explicit = helpers.run_cli("--config", "/nonexistent/x.yaml", "backup", "list")
    helpers.assert_one_line_error(explicit, ExitCode.CONFIG, "/nonexistent/x.yaml")


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text(
        "destinations:\n  local: {type: local, path: /tmp/x}\ndeployments:\n  app: [unclosed\n  other: 1\n"
    )
    result = helpers.run_cli("--config", config, "config", "validate")
    helpers.assert_one_line_error(result, ExitCode.CONFIG, str(config), "line ")
    line_no = int(result.stderr.split("line ", 1)[1].split(",", 1)[0].split(":", 1)[0])
    assert 4 <= line_no <= 6, result.stderr


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda c: c["deployments"]["app"].__setitem__("sourcez", []), "deployments.app.sourcez"),
        (
            lambda c: c["deployments"]["app"]["sources"][0].__setitem__("pathz", ["/x"]),
            "deployments.app.sources[0].pathz",
        ),
        (lambda c: c["destinations"]["local"].__setitem__("colour", "red"), "destinations.local.colour"),
        (lambda c: c.__setitem__("encryptionn", {}), "encryptionn"),
        (lambda c: c["deployments"]["app"].__setitem__("destinations", ["nowhere"]), "nowhere"),
        (
            lambda c: c["deployments"]["app"]["sources"][0].__setitem__("type", "tape"),
            "deployments.app.sources[0].type",
        ),
        (lambda c: c["encryption"].__setitem__("passphrase_env", "X"), "exactly one"),
    ],
)
def test_invalid_config_names_the_key_path(files_deployment, mutate, needle: str) -> None:
    dep = files_deployment
    cfg = helpers.load_yaml(dep.config)
    mutate(cfg)
    helpers.dump_yaml(cfg, dep.config)
    for args in (["config", "validate"], ["backup", "list"]):
        result = dep.run(*args)
        helpers.assert_one_line_error(result, ExitCode.CONFIG, needle, str(dep.config))


def test_unknown_deployment(files_deployment) -> None:
    dep = files_deployment
    result = dep.run("backup", "create", "nosuch")
    helpers.assert_one_line_error(result, ExitCode.NOT_FOUND, "nosuch")
    assert "app" in result.stderr, "the hint lists the configured deployments"
    helpers.assert_one_line_error(
        dep.run("backup", "list", "--deployment", "nosuch"), ExitCode.NOT_FOUND, "nosuch"
    )
    assert dep.list() == [], "a failed lookup must not leave a job behind"


def test_config_show_never_prints_secrets(tmp_path: Path, sample_tree: Path) -> None:
    secret_value = "s3cr3t-Passphrase-VALUE"
    pass_file = tmp_path / "pass.txt"
    pass_file.write_text(secret_value)
    config = helpers.write_config(
        tmp_path / "c" / "config.yaml",
        sources=[{"type": "files", "paths": [str(sample_tree)]}],
        repository=tmp_path / "repo",
    )
    cfg = helpers.load_yaml(config)
    cfg["encryption"] = {"passphrase_file": str(pass_file)}
    env = {
        "BACKUPCTL_CONFIG": str(config),
        "MY_S3_SECRET": "AKIA-very-secret-key",
        "PGPASSWORD_X": "pg-secret-pw",
    }
    if importlib.util.find_spec("backupctl.destinations.s3") is not None:
        cfg["destinations"]["offsite"] = {
            "type": "s3",
            "bucket": "b",
            "secret_access_key_env": "MY_S3_SECRET",
            "access_key_id_env": "MY_S3_SECRET",
        }
    helpers.dump_yaml(cfg, config)
    for fmt in ("table", "json", "yaml"):
        result = helpers.run_ok("config", "show", "-o", fmt, env=env)
        for secret in (secret_value, "AKIA-very-secret-key"):
            assert secret not in result.stdout + result.stderr, str(result)
    shown = helpers.run_ok("config", "show", "-o", "json", env=env).json()
    # References are shown (they are not secrets); values are never resolved.
    assert shown["encryption"]["passphrase_file"] == str(pass_file)
    if "offsite" in cfg["destinations"]:
        assert shown["destinations"]["offsite"]["secret_access_key_env"] == "MY_S3_SECRET"


def test_init_key_mode_and_no_overwrite_of_key(tmp_path: Path, isolated_env) -> None:
    key = tmp_path / "keys" / "my.key"
    helpers.run_ok("init", "--key-file", key, "--repository", tmp_path / "repo")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()
    helpers.run_ok("init", "--key-file", key, "--force")
    assert key.read_bytes() == before, "init --force must never replace an existing key"


# ---- repository / destination ---------------------------------------------------------------


def test_destination_not_writable(tmp_path: Path, sample_tree: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = helpers.write_config(
        tmp_path / "c" / "config.yaml",
        sources=[{"type": "files", "paths": [str(sample_tree)]}],
        repository=blocker / "repo",
    )
    env = {"BACKUPCTL_CONFIG": str(config)}
    result = helpers.run_cli("backup", "create", "app", env=env)
    helpers.assert_one_line_error(result, ExitCode.DESTINATION, str(blocker))
    assert blocker.read_text() == "not a directory"
    # Listing reads the same broken destination: the same clear error.
    helpers.assert_one_line_error(
        helpers.run_cli("backup", "list", env=env), ExitCode.DESTINATION, str(blocker)
    )
    # The attempt is recorded as Failed with its error in the local job state.
    jobs = helpers.service(config).state.jobs("app")
    assert [j["status"] for j in jobs] == ["Failed"]
    assert str(blocker) in jobs[0]["error"]


def test_newer_repository_format_is_refused(tmp_path: Path, files_deployment) -> None:
    dep = files_deployment
    backup_id = dep.create()
    cfg_path = dep.repository / "config"
    cfg = json.loads(cfg_path.read_text())
    cfg["format_version"] = 99
    cfg_path.write_text(json.dumps(cfg))
    stored = _repo_files(dep.repository)
    for args in (
        ["backup", "list"],
        ["backup", "verify", backup_id],
        ["backup", "create", "app"],
        ["backup", "restore", backup_id, "--target", str(tmp_path / "r")],
    ):
        helpers.assert_one_line_error(dep.run(*args), ExitCode.FORMAT, "99")
    assert _repo_files(dep.repository) == stored
    assert not (tmp_path / "r").exists()


def test_json_errors_go_to_stderr(files_deployment) -> None:
    dep = files_deployment
    result = dep.run("backup", "show", "nosuchid", "-o", "json")
    assert result.returncode == ExitCode.NOT_FOUND
    assert result.stdout == ""
    doc = json.loads(result.stderr)
    assert doc["error"]["kind"] == "not_found"
    assert doc["error"]["exit_code"] == ExitCode.NOT_FOUND
    assert "nosuchid" in doc["error"]["message"]
    missing = helpers.run_cli("backup", "list", "-o", "json")
    assert missing.returncode == ExitCode.CONFIG and missing.stdout == ""
    assert json.loads(missing.stderr)["error"]["kind"] == "config"


def test_traceback_only_with_verbose(files_deployment) -> None:
    dep = files_deployment
    plain = dep.run("backup", "show", "nosuchid")
    assert plain.returncode == ExitCode.NOT_FOUND and "Traceback" not in plain.stderr
    verbose = dep.run("-v", "backup", "show", "nosuchid")
    assert verbose.returncode == ExitCode.NOT_FOUND
    assert "Traceback" in verbose.stderr, str(verbose)
    assert verbose.stderr.rstrip().splitlines()[-1].startswith("error:")


def test_usage_errors_exit_2(files_deployment) -> None:
    dep = files_deployment
    assert dep.run("backup", "create", "app", "--type", "weekly").returncode == ExitCode.USAGE
    assert dep.run("backup", "frobnicate").returncode == ExitCode.USAGE
    assert dep.run("-o", "xml", "backup", "list").returncode == ExitCode.USAGE


# ---- sources that misbehave ---------------------------------------------------------------


def test_file_growing_while_read_is_a_warning(tmp_path: Path, make_deployment) -> None:
    src = tmp_path / "src"
    src.mkdir()
    growing = src / "app.log"
    growing.write_bytes(os.urandom(24 << 20))
    (src / "steady.txt").write_text("steady\n")
    dep = make_deployment([{"type": "files", "paths": [str(src)]}])
    stop = threading.Event()

    def append() -> None:
        with open(growing, "ab") as fh:
            while not stop.is_set():
                fh.write(b"log line\n" * 2000)
                fh.flush()
                time.sleep(0.002)

    writer = threading.Thread(target=append, daemon=True)
    writer.start()
    try:
        time.sleep(0.05)
        reporter = CollectingReporter()
        svc = helpers.service(dep.config, reporter)
        record = svc.create_backup("app")
        svc.close()
    finally:
        stop.set()
        writer.join()
    assert record["status"] == "Completed"
    assert any(w.path.endswith("app.log") and "changed" in w.message for w in reporter.warnings), (
        reporter.warnings
    )
    assert record["warnings"] >= 1
    target = tmp_path / "r"
    svc = helpers.service(dep.config)
    svc.restore_backup(record["id"], target_dir=target)
    svc.close()
    restored = (helpers.restored(target, src) / "app.log").read_bytes()
    # Stored as read: a prefix of the file as it is now, at least as long as at the start.
    assert len(restored) >= 24 << 20
    assert growing.read_bytes()[: len(restored)] == restored
    assert (helpers.restored(target, src) / "steady.txt").read_text() == "steady\n"
