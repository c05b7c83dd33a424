"""`schedule export`: crontab, systemd and Kubernetes renderings of the policies in use.

The exports must run as printed on a fresh machine: the crontab line is run under cron's
environment (`env -i`, PATH=/usr/bin:/bin) and must take a backup that restores byte for
byte; the systemd units go through `systemd-analyze verify`; the Kubernetes manifests are
checked against the API schema of the official `kubernetes` client, unknown fields refused.
"""

from __future__ import annotations

import configparser
import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helpers
import pytest
from ruamel.yaml import YAML

from backupctl.config.models import Config, DeploymentConfig
from backupctl.errors import BackupctlError
from backupctl.policy.export import RETRY_LOCK, export, on_calendar

CMD = ["/opt/bin/backupctl"]


@pytest.fixture
def config() -> Config:
    config = Config.model_validate(
        {
            "encryption": {"passphrase_env": "PW"},
            "policies": {
                "nightly": {
                    "schedules": [
                        {"daily": {"at": "21:00"}, "timezone": "Europe/Amsterdam"},
                        {"type": "incremental", "hourly": {"every": 6}, "timezone": "Europe/Amsterdam"},
                    ]
                },
                "csc": {"schedules": [{"interval": "24h"}]},
                "eom": {
                    "schedules": [{"monthly": {"day": "last", "at": "23:00"}, "timezone": "America/New_York"}]
                },
                "paused": {"status": "paused", "schedules": [{"cron": "0 1 * * *"}]},
                "unused": {"schedules": [{"cron": "0 2 * * *"}]},
            },
        }
    )
    config.deployments = {
        n: DeploymentConfig.model_construct(policy=p, sources=[], destinations=[])
        for n, p in [
            ("app", "nightly"),
            ("db", "csc"),
            ("ledger", "eom"),
            ("web", None),
            ("tmp", "none"),
            ("p", "paused"),
        ]
    }
    return config


def test_crontab_is_one_run_due_line_per_minute(config: Config) -> None:
    text = export(config, "crontab", command=CMD, config_path="/etc/backupctl/config.yaml")
    active = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert active == [
        "* * * * * /opt/bin/backupctl schedule run-due --config /etc/backupctl/config.yaml --quiet "
        f"--retry-lock {RETRY_LOCK}"
    ]
    assert "#   nightly/full [app]: TZ=Europe/Amsterdam 0 21 * * *" in text
    assert "#   default/incremental [web]: TZ=UTC 0 */2 * * *" in text
    assert "paused" not in text and "unused" not in text


def test_crontab_quotes_paths_and_escapes_percent(config: Config) -> None:
    text = export(config, "crontab", command=["/opt/my apps/backupctl"], config_path="/etc/b%1/c.yaml")
    (line,) = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    # cron turns an unescaped % into a newline; the shell then sees the quoted paths.
    assert line.startswith("* * * * * '/opt/my apps/backupctl' schedule run-due --config /etc/b\\%1/c.yaml ")


def test_crontab_per_schedule_uses_cron_tz(config: Config) -> None:
    text = export(config, "crontab", command=CMD, config_path="/c.yaml", mode="per-schedule")
    active = [ln for ln in text.splitlines() if not ln.startswith("#")]
    run = f"/opt/bin/backupctl schedule run-due --config /c.yaml --quiet --retry-lock {RETRY_LOCK}"
    assert active == [
        "CRON_TZ=America/New_York",
        f"0 23 28-31 * * {run}",
        "CRON_TZ=Europe/Amsterdam",
        f"0 */6 * * * {run}",
        f"0 21 * * * {run}",
        "CRON_TZ=UTC",
        f"*/5 * * * * {run}",
        f"0 */2 * * * {run}",
    ]


def test_systemd_timer_per_schedule_has_on_calendar_per_schedule_in_its_zone(config: Config) -> None:
    text = export(config, "systemd", command=CMD, config_path="/c.yaml", mode="per-schedule")
    assert (
        f"ExecStart=/opt/bin/backupctl schedule run-due --config /c.yaml --quiet --retry-lock {RETRY_LOCK}"
        in text
    )
    calendars = [ln.split("=", 1)[1] for ln in text.splitlines() if ln.startswith("OnCalendar=")]
    assert calendars == [
        "*:0/5",
        "*-*-* 00,02,04,06,08,10,12,14,16,18,20,22:00:00 UTC",
        "*-*~01 23:00:00 America/New_York",
        "*-*-* 21:00:00 Europe/Amsterdam",
        "*-*-* 00,06,12,18:00:00 Europe/Amsterdam",
    ]
    assert "Persistent=true" in text and "WantedBy=timers.target" in text


def test_systemd_default_is_one_minutely_run_due_timer(config: Config) -> None:
    units = systemd_units(export(config, "systemd", command=CMD, config_path="/c.yaml", user="backup"))
    service, timer = units["backupctl-run-due.service"], units["backupctl-run-due.timer"]
    assert service["Service"]["Type"] == "oneshot" and service["Service"]["User"] == "backup"
    assert service["Service"]["Nice"] == "10" and service["Service"]["IOSchedulingClass"] == "best-effort"
    assert timer["Timer"]["OnCalendar"] == "minutely" and timer["Timer"]["Persistent"] == "true"


def test_on_calendar_keeps_cron_or_semantics_of_days() -> None:
    assert on_calendar("30 5 * * mon-fri", "UTC") == ["Mon,Tue,Wed,Thu,Fri *-*-* 05:30:00 UTC"]
    assert on_calendar("0 5 1 * sun", "Europe/Berlin") == [
        "*-*-01 05:00:00 Europe/Berlin",
        "Sun *-*-* 05:00:00 Europe/Berlin",
    ]
    assert on_calendar("0 5 29 2 *", "UTC") == ["*-02-29 05:00:00 UTC"]


def test_unknown_format_is_an_error(config: Config) -> None:
    with pytest.raises(BackupctlError, match="unknown export format 'launchd'"):
        export(config, "launchd")


# ---- helpers ---------------------------------------------------------------------------


def systemd_units(text: str) -> dict[str, configparser.ConfigParser]:
    """The units of a systemd export, by file name (each starts `# /etc/systemd/system/NAME`)."""
    units: dict[str, configparser.ConfigParser] = {}
    for name, body in re.findall(
        r"^# /etc/systemd/system/(\S+)\n(.*?)(?=^# /etc/systemd/system/|\Z)", text, re.M | re.S
    ):
        parser = configparser.ConfigParser(strict=True, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(body)
        units[name] = parser
    return units


def cron_command(crontab: str) -> str:
    """The command of the one job line, as cron hands it to /bin/sh (`\\%` is a literal %)."""
    (line,) = [ln for ln in crontab.splitlines() if ln.strip() and not ln.startswith("#")]
    schedule_and_command = line.split(None, 5)
    assert schedule_and_command[:5] == ["*"] * 5, line
    return schedule_and_command[5].replace("\\%", "%")


def cron_env(home: Path) -> list[str]:
    """What cron gives a job: no XDG variables, no virtualenv, PATH=/usr/bin:/bin."""
    return [
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        f"HOME={home}",
        "SHELL=/bin/sh",
        f"LOGNAME={pwd.getpwuid(os.getuid()).pw_name}",
    ]


def due_config(tmp_path: Path, tree: Path) -> Path:
    """A real config whose deployment `app` is due at once (a policy without `created`)."""
    path = helpers.write_config(
        tmp_path / "etc" / "config.yaml",
        sources=[{"type": "files", "paths": [str(tree)]}],
        repository=tmp_path / "repo",
    )
    doc = helpers.load_yaml(path)
    doc["policies"] = {"nightly": {"schedules": [{"cron": "0 0 * * *", "timezone": "UTC"}]}}
    doc["deployments"]["app"]["policy"] = "nightly"
    helpers.dump_yaml(doc, path)
    return path


# ---- crontab: run as cron runs it --------------------------------------------------------


def test_exported_crontab_line_runs_under_cron_environment(tmp_path: Path) -> None:
    tree = helpers.make_sample_tree(tmp_path / "src")
    config = due_config(tmp_path, tree)
    home = tmp_path / "home"
    home.mkdir()
    # The installed console script, with a config path relative to where it is run.
    script = Path(sys.executable).parent / "backupctl"
    assert script.exists(), script
    exported = subprocess.run(
        [str(script), "schedule", "export", "crontab", "--config", "etc/config.yaml"],
        cwd=tmp_path,
        env=helpers.cli_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    command = cron_command(exported)
    assert shlex.split(command) == [
        str(script),
        "schedule",
        "run-due",
        "--config",
        str(config),
        "--quiet",
        "--retry-lock",
        RETRY_LOCK,
    ]
    ran = subprocess.run([*cron_env(home), "sh", "-c", command], cwd=home, capture_output=True, text=True)
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "", ""), ran  # --quiet: cron mails nothing

    # cron's HOME decides the state directory; list and restore with the same view.
    env = {"BACKUPCTL_CONFIG": str(config), "XDG_STATE_HOME": str(home / ".local" / "state")}
    rows = helpers.run_ok("backup", "list", "--all", "-o", "json", env=env).json()
    assert [(r["status"], r["created_by"]) for r in rows] == [("Completed", "nightly")], rows
    target = tmp_path / "restore"
    helpers.run_ok("backup", "restore", rows[0]["id"], "--target", str(target), env=env)
    helpers.assert_same_tree(
        helpers.snapshot_tree(tree), helpers.snapshot_tree(helpers.restored(target, tree))
    )

    # Run as a module (`python -m backupctl`): the line names this interpreter.
    exported = helpers.run_ok(
        "schedule", "export", "--format", "crontab", env={"BACKUPCTL_CONFIG": str(config)}
    ).stdout
    command = cron_command(exported)
    assert shlex.split(command)[:5] == [sys.executable, "-m", "backupctl", "schedule", "run-due"]
    again = subprocess.run([*cron_env(home), "sh", "-c", command], cwd=home, capture_output=True, text=True)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", ""), again  # nothing due twice
    assert len(helpers.run_ok("backup", "list", "--all", "-o", "json", env=env).json()) == 1


def test_exported_crontab_line_mails_a_failure(tmp_path: Path) -> None:
    """Under cron a failed backup is one line on stderr and exit 1 (cron mails it)."""
    tree = helpers.make_sample_tree(tmp_path / "src")
    config = due_config(tmp_path, tree)
    doc = helpers.load_yaml(config)
    doc["deployments"]["app"]["sources"] = [{"type": "files", "paths": [str(tmp_path / "missing")]}]
    helpers.dump_yaml(doc, config)
    home = tmp_path / "home"
    home.mkdir()
    command = cron_command(helpers.run_ok("schedule", "export", "--config", str(config)).stdout)
    ran = subprocess.run([*cron_env(home), "sh", "-c", command], cwd=home, capture_output=True, text=True)
    assert ran.returncode == 1 and "Traceback" not in ran.stderr, ran
    assert "Failed" in ran.stdout + ran.stderr, ran


# ---- systemd ------------------------------------------------------------------------------


def test_systemd_units_verify(tmp_path: Path) -> None:
    tree = helpers.make_sample_tree(tmp_path / "src")
    config = due_config(tmp_path, tree)
    text = helpers.run_ok("schedule", "export", "systemd", "--config", str(config)).stdout
    units = systemd_units(text)
    assert sorted(units) == ["backupctl-run-due.service", "backupctl-run-due.timer"], text
    service = units["backupctl-run-due.service"]["Service"]
    exec_start = shlex.split(service["ExecStart"])
    assert exec_start == [
        sys.executable,
        "-m",
        "backupctl",
        "schedule",
        "run-due",
        "--config",
        str(config),
        "--quiet",
        "--retry-lock",
        RETRY_LOCK,
    ]
    assert os.path.isabs(exec_start[0]) and os.access(exec_start[0], os.X_OK)
    assert service["Type"] == "oneshot"
    assert service["User"] == pwd.getpwuid(os.getuid()).pw_name
    assert service["Nice"] == "10" and service["IOSchedulingClass"] == "best-effort"
    timer = units["backupctl-run-due.timer"]["Timer"]
    assert (timer["OnCalendar"], timer["Persistent"]) == ("minutely", "true")
    assert units["backupctl-run-due.timer"]["Install"]["WantedBy"] == "timers.target"

    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # parsed above; verify where systemd is installed (CI installs it)
        pytest.skip("systemd-analyze is not installed")
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    for name in units:
        body = text.split(f"# /etc/systemd/system/{name}\n", 1)[1].split("# /etc/systemd/system/", 1)[0]
        (unit_dir / name).write_text(body)
    verify = subprocess.run(
        [analyze, "verify", "--man=no", *(str(unit_dir / n) for n in sorted(units))],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify


def test_systemd_user_option(tmp_path: Path) -> None:
    config = due_config(tmp_path, helpers.make_sample_tree(tmp_path / "src"))
    text = helpers.run_ok(
        "schedule", "export", "--format", "systemd", "--user", "backup", "--config", str(config)
    ).stdout
    assert systemd_units(text)["backupctl-run-due.service"]["Service"]["User"] == "backup"


# ---- kubernetes ---------------------------------------------------------------------------


def check_k8s(obj: Any, type_name: str, where: str) -> None:
    """Every field of `obj` is a field of `type_name` in the Kubernetes API under its JSON
    name (the client's models also accept their Python names, which the API refuses)."""
    from kubernetes.client import models

    type_name = re.sub(r"^(List|Dict)\[(.*)\]$", lambda m: f"{m[1].lower()}[{m[2]}]", type_name)
    if type_name.startswith("list["):
        assert isinstance(obj, list), f"{where}: expected a list, got {obj!r}"
        for i, item in enumerate(obj):
            check_k8s(item, type_name[5:-1], f"{where}[{i}]")
    elif type_name.startswith(("dict(", "dict[")):
        assert isinstance(obj, dict), f"{where}: expected a mapping, got {obj!r}"
        for key, item in obj.items():
            assert isinstance(key, str), f"{where}: key {key!r} is not a string"
            check_k8s(item, type_name[type_name.index(",") + 1 : -1].strip(), f"{where}.{key}")
    elif type_name in ("str", "int", "bool", "float", "object", "datetime", "bytes"):
        kinds: dict[str, Any] = {"int": int, "bool": bool, "float": (int, float), "object": object}
        kinds = {**dict.fromkeys(("str", "datetime", "bytes"), str), **kinds}
        assert isinstance(obj, kinds[type_name]), f"{where}: expected {type_name}, got {obj!r}"
        assert type_name == "bool" or not isinstance(obj, bool), f"{where}: expected {type_name}, got {obj!r}"
    else:
        cls = getattr(models, type_name)
        assert isinstance(obj, dict), f"{where}: expected a {type_name} mapping, got {obj!r}"
        by_json = {json: attr for attr, json in cls.attribute_map.items()}
        unknown = sorted(set(obj) - set(by_json))
        assert not unknown, f"{where}: unknown field(s) {unknown} of {type_name}"
        for key, value in obj.items():
            check_k8s(value, cls.openapi_types[by_json[key]], f"{where}.{key}")
        if not hasattr(cls, "model_validate"):  # clients before 37: required and enums in setters
            from kubernetes.client import Configuration

            strict = Configuration()
            strict.client_side_validation = True
            try:
                cls(local_vars_configuration=strict, **{by_json[k]: v for k, v in obj.items()})
            except ValueError as exc:
                raise AssertionError(f"{where}: {exc}") from None


def check_manifest(doc: dict[str, Any]) -> None:
    """`doc` is a valid object of the Kubernetes API, as the official client's models define
    it: unknown fields refused, every value of its type, required fields present (client 37+:
    its pydantic models, `extra="forbid"`, strict types; before: the models' own checks)."""
    from kubernetes.client import models
    from pydantic import ValidationError

    type_name = doc["apiVersion"].split("/")[-1].capitalize() + doc["kind"]
    check_k8s(doc, type_name, doc["kind"] + "/" + doc["metadata"]["name"])
    cls = getattr(models, type_name)
    if hasattr(cls, "model_validate"):
        try:
            cls.model_validate(doc)
        except ValidationError as exc:
            raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']}: {exc}") from None


def test_schema_check_refuses_unknown_fields_and_missing_required_ones() -> None:
    good = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}}
    check_manifest(good)
    with pytest.raises(AssertionError, match="unknown field"):
        check_manifest({**good, "metadata": {"name": "x", "nmespace": "y"}})
    with pytest.raises(
        AssertionError, match=r"(job_template`, must not be `None`|jobTemplate\n  Field required)"
    ):
        check_manifest(
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": {"name": "x"},
                "spec": {"schedule": "* * * * *"},
            }
        )


def k8s_config(tmp_path: Path) -> tuple[Path, Path]:
    tree = helpers.make_sample_tree(tmp_path / "src")
    config = due_config(tmp_path, tree)
    doc = helpers.load_yaml(config)
    (tmp_path / "s3-id").write_text("AKIA\n")
    doc["destinations"]["s3"] = {
        "type": "s3",
        "bucket": "backups",
        "secret_access_key_env": "S3_SECRET",
        "access_key_id_file": str(tmp_path / "s3-id"),
    }
    doc["policies"]["hourly"] = {"schedules": [{"hourly": {"every": 1}, "timezone": "Europe/Berlin"}]}
    doc["deployments"]["db"] = {
        "sources": [{"type": "files", "paths": [str(tree)]}],
        "destinations": ["s3", "local"],
        "policy": "hourly",
    }
    doc["deployments"]["manual"] = {**doc["deployments"]["db"], "policy": "none"}
    helpers.dump_yaml(doc, config)
    return config, Path(doc["encryption"]["key_file"])


def test_kubernetes_manifests_validate_against_the_api_schema(tmp_path: Path) -> None:
    from backupctl.config.loader import parse_config

    config, key_file = k8s_config(tmp_path)
    text = helpers.run_ok(
        "schedule",
        "export",
        "kubernetes",
        "--config",
        str(config),
        "--image",
        "registry.example/backupctl:1",
        "--namespace",
        "ops",
    ).stdout
    # Secrets are referenced, never inlined.
    assert key_file.read_text().strip() not in text and "AKIA" not in text
    docs = [d for d in YAML(typ="safe", pure=True).load_all(text) if d]
    for doc in docs:
        check_manifest(doc)
        assert doc["metadata"]["namespace"] == "ops"
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert sorted(kinds) == [
        ("ConfigMap", "backupctl-app-config"),
        ("ConfigMap", "backupctl-db-config"),
        ("CronJob", "backupctl-app"),
        ("CronJob", "backupctl-db"),
        ("PersistentVolumeClaim", "backupctl-app-state"),
        ("PersistentVolumeClaim", "backupctl-db-state"),
        ("PersistentVolumeClaim", "backupctl-repo-local"),
    ]
    assert kinds["PersistentVolumeClaim", "backupctl-repo-local"]["spec"]["accessModes"] == ["ReadWriteMany"]
    assert kinds["PersistentVolumeClaim", "backupctl-app-state"]["spec"]["accessModes"] == ["ReadWriteOnce"]

    app = kinds["CronJob", "backupctl-app"]["spec"]
    assert (app["schedule"], app["timeZone"]) == ("0 0 * * *", "UTC")
    db = kinds["CronJob", "backupctl-db"]["spec"]
    assert (db["schedule"], db["timeZone"]) == ("0 * * * *", "Europe/Berlin")
    for spec, name in ((app, "app"), (db, "db")):
        assert spec["concurrencyPolicy"] == "Forbid" and spec["startingDeadlineSeconds"] > 0
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == "registry.example/backupctl:1"
        assert container["args"] == [
            "schedule",
            "run-due",
            "--config",
            "/etc/backupctl/config.yaml",
            "--quiet",
            "--retry-lock",
            RETRY_LOCK,
        ]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert set(volumes) == set(mounts)
        assert volumes["key"]["secret"] == {"secretName": "backupctl-key", "defaultMode": 0o400}
        assert mounts["key"]["readOnly"] is True
        assert volumes["config"]["configMap"]["name"] == f"backupctl-{name}-config"
        assert volumes["state"]["persistentVolumeClaim"]["claimName"] == f"backupctl-{name}-state"
        assert volumes["repo-local"]["persistentVolumeClaim"]["claimName"] == "backupctl-repo-local"
        claims = {
            v["persistentVolumeClaim"]["claimName"] for v in volumes.values() if "persistentVolumeClaim" in v
        }
        assert claims <= {n for k, n in kinds if k == "PersistentVolumeClaim"}

        # The ConfigMap holds a valid config of this deployment alone, with the pod's paths.
        mounted = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        cm = kinds["ConfigMap", f"backupctl-{name}-config"]
        raw = YAML(typ="safe", pure=True).load(cm["data"]["config.yaml"])
        cfg = parse_config(raw, Path("/etc/backupctl/config.yaml"))
        assert list(cfg.deployments) == [name]
        assert str(cfg.encryption.key_file) == "/etc/backupctl/key/key"
        assert mounted["/etc/backupctl/key"] == "key" and mounted["/etc/backupctl/config.yaml"] == "config"
        assert mounts["config"]["subPath"] == "config.yaml"  # no mount nested in a ConfigMap volume
        paths = sorted(mounted)
        assert not any(b.startswith(a + "/") for a in paths for b in paths), paths
        assert (
            str(cfg.settings.state_dir) == "/var/lib/backupctl/state"
            and mounted["/var/lib/backupctl/state"] == "state"
        )
        local = cfg.destinations["local"]
        assert mounted[str(local.path)] == "repo-local"  # type: ignore[attr-defined]

    pod = db["jobTemplate"]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["S3_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "backupctl-env", "key": "S3_SECRET"}
    raw = YAML(typ="safe", pure=True).load(kinds["ConfigMap", "backupctl-db-config"]["data"]["config.yaml"])
    id_file = raw["destinations"]["s3"]["access_key_id_file"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    assert volumes[mounts[str(Path(id_file).parent)]]["secret"]["secretName"] == "backupctl-files"


# ---- the image ----------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def test_containerfile_builds_the_image_the_cronjobs_run(tmp_path: Path) -> None:
    """Static checks (no container engine runs in CI): what it copies exists, the extra it
    installs exists, and its entry point is the command the exported CronJobs run."""
    import json
    import tomllib

    text = (ROOT / "Containerfile").read_text()
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith(("#", " "))]
    for line in lines:
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), line
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert '"backupctl[all]"' in text and "all" in extras
    entrypoint = json.loads(next(ln for ln in lines if ln.startswith("ENTRYPOINT ")).split(None, 1)[1])
    config, _ = k8s_config(tmp_path)
    k8s = helpers.run_ok("schedule", "export", "kubernetes", "--config", str(config)).stdout
    jobs = [d for d in YAML(typ="safe", pure=True).load_all(k8s) if d and d["kind"] == "CronJob"]
    for job in jobs:
        (container,) = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
        assert container["command"] == entrypoint == ["backupctl"]
        assert job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 0
    cmd = json.loads(next(ln for ln in lines if ln.startswith("CMD ")).split(None, 1)[1])
    assert cmd[:4] == ["schedule", "run-due", "--config", "/etc/backupctl/config.yaml"]


def test_kubernetes_manifests_read_the_same_under_yaml_1_1(tmp_path: Path) -> None:
    """kubectl reads YAML 1.1, where `no` is false and 21:00 is 1260: such strings are quoted."""
    import yaml  # PyYAML: a YAML 1.1 reader, as kubectl's

    from backupctl.config.loader import parse_config

    config = due_config(tmp_path, helpers.make_sample_tree(tmp_path / "src"))
    doc = helpers.load_yaml(config)
    doc["deployments"] = {"no": {**doc["deployments"]["app"], "policy": "evening"}}
    doc["policies"] = {"evening": {"schedules": [{"daily": {"at": "21:00"}, "timezone": "UTC"}]}}
    helpers.dump_yaml(doc, config)
    text = helpers.run_ok(
        "schedule", "export", "kubernetes", "--config", str(config), "--namespace", "on"
    ).stdout
    docs = [d for d in yaml.safe_load_all(text) if d]
    for manifest in docs:
        check_manifest(manifest)
        assert manifest["metadata"]["namespace"] == "on"
    (job,) = [d for d in docs if d["kind"] == "CronJob"]
    assert job["metadata"]["labels"]["backupctl/deployment"] == "no"
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    raw = yaml.safe_load(cm["data"]["config.yaml"])
    assert raw["policies"]["evening"]["schedules"][0]["daily"]["at"] == "21:00"
    assert list(parse_config(raw, Path("/etc/backupctl/config.yaml")).deployments) == ["no"]


# ---- docs/scheduling.md -----------------------------------------------------------------

DOC = ROOT / "docs" / "scheduling.md"
EXAMPLE_IMAGE = "registry.example.com/backupctl:0.1.0"


def doc_examples() -> dict[str, str]:
    """The blocks of docs/scheduling.md under `<!-- export-example: NAME -->`."""
    return dict(re.findall(r"<!-- export-example: (\w+) -->\n```\w*\n(.*?)```", DOC.read_text(), re.S))


def rendered_examples(tmp_path: Path, config_text: str) -> dict[str, str]:
    """What `schedule export` prints for the docs' configuration, installed as the docs say."""
    from backupctl.config.loader import parse_config, read_yaml

    path = tmp_path / "config.yaml"
    path.write_text(config_text)
    cfg = parse_config(read_yaml(path), path)
    where = {"command": ["/usr/local/bin/backupctl"], "config_path": "/etc/backupctl/config.yaml"}
    return {
        "crontab": export(cfg, "crontab", **where),  # type: ignore[arg-type]
        "systemd": export(cfg, "systemd", user="backup", **where),  # type: ignore[arg-type]
        "kubernetes": export(cfg, "kubernetes", image=EXAMPLE_IMAGE, namespace="backup"),
    }


def test_docs_show_exactly_the_exports_the_tests_check(tmp_path: Path) -> None:
    import yaml

    examples = doc_examples()
    assert sorted(examples) == ["config", "crontab", "kubernetes", "systemd"], sorted(examples)
    rendered = rendered_examples(tmp_path, examples["config"])
    for name, text in rendered.items():
        assert examples[name] == text, f"docs/scheduling.md: the {name} example is not what export prints"
    # The documented entries pass the checks the real ones pass.
    assert shlex.split(cron_command(rendered["crontab"]))[0] == "/usr/local/bin/backupctl"
    units = systemd_units(rendered["systemd"])
    assert units["backupctl-run-due.service"]["Service"]["User"] == "backup"
    assert units["backupctl-run-due.timer"]["Timer"]["OnCalendar"] == "minutely"
    docs = [d for d in yaml.safe_load_all(rendered["kubernetes"]) if d]
    for manifest in docs:
        check_manifest(manifest)
    assert [d["kind"] for d in docs].count("CronJob") == 1


def test_kubernetes_passphrase_from_the_environment(tmp_path: Path) -> None:
    config, _ = k8s_config(tmp_path)
    doc = helpers.load_yaml(config)
    doc["encryption"] = {"passphrase_env": "BACKUP_PASSPHRASE"}
    helpers.dump_yaml(doc, config)
    text = helpers.run_ok("schedule", "export", "kubernetes", "--config", str(config)).stdout
    assert 'create secret generic backupctl-key --from-literal=passphrase="$BACKUP_PASSPHRASE"' in text
    docs = [d for d in YAML(typ="safe", pure=True).load_all(text) if d]
    for manifest in docs:
        check_manifest(manifest)
    for job in (d for d in docs if d["kind"] == "CronJob"):
        pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in pod["containers"][0]["env"]}
        assert env["BACKUP_PASSPHRASE"] == {"name": "backupctl-key", "key": "passphrase"}
        assert "key" not in {v["name"] for v in pod["volumes"]}  # nothing to mount
