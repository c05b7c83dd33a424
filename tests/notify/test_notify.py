"""Notifications (issue 16 item 2): webhook, e-mail and ping channels against real receivers
on 127.0.0.1 - an http.server in a thread, an aiosmtpd SMTP server - driven through the real
CLI. A channel that cannot be reached never fails the backup; its event is delivered on the
next run. Secrets (header tokens, the SMTP password) never appear in what is sent or printed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import helpers
import pytest

TOKEN = "s3cr3t-hook-token-4711"
SMTP_PASSWORD = "mail-pa55word-0815"


# ---- receivers ---------------------------------------------------------------------------


class Receiver:
    """An HTTP server that records every request: (method, path, headers, body)."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self._got = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with outer._got:
                    outer.requests.append(
                        {
                            "method": self.command,
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body,
                        }
                    )
                    outer._got.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_POST = do_GET = _record  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def json_bodies(self) -> list[dict[str, Any]]:
        return [
            json.loads(r["body"]) for r in self.requests if r["method"] == "POST" and r["body"][:1] == b"{"
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        msg = message_from_bytes(envelope.original_content or envelope.content)
        self.messages.append({"envelope_to": list(envelope.rcpt_tos), "raw": envelope.content, "msg": msg})
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    box = Mailbox()

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.password.decode() == SMTP_PASSWORD
        if ok:
            box.logins.append((data.login.decode(), mechanism))
        return AuthResult(success=ok, handled=False)

    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticator,
        auth_require_tls=False,
    )
    controller.start()
    yield box, controller.port
    controller.stop()


# ---- configuration -----------------------------------------------------------------------


def configure(dep: Any, channels: dict[str, Any], notify: list[dict[str, Any]], **extra: Any) -> None:
    doc = helpers.load_yaml(dep.config)
    doc["notifications"] = {"channels": channels, **extra.pop("notifications", {})}
    doc["deployments"]["app"]["notify"] = notify
    doc.update(extra)
    helpers.dump_yaml(doc, dep.config)


def break_repository(dep: Any) -> None:
    """Point the deployment's destination below a regular file: every backup then fails (exit 6)."""
    blocker = dep.root / "blocker"
    blocker.write_text("not a directory")
    doc = helpers.load_yaml(dep.config)
    doc["destinations"]["local"]["path"] = str(blocker / "repo")
    helpers.dump_yaml(doc, dep.config)


def webhook(url: str) -> dict[str, Any]:
    return {"type": "webhook", "url": url, "headers": {"Authorization": {"value_env": "HOOK_TOKEN"}}}


ENV = {"HOOK_TOKEN": f"Bearer {TOKEN}", "SMTP_PASSWORD": SMTP_PASSWORD}


# ---- webhook -----------------------------------------------------------------------------


def test_webhook_receives_success_and_failure_as_configured(
    files_deployment: Any, receiver: Receiver
) -> None:
    dep = files_deployment
    configure(
        dep,
        {"all": webhook(receiver.url("/all")), "bad": webhook(receiver.url("/bad"))},
        [{"channel": "all", "on": "always"}, {"channel": "bad", "on": "failure"}],
    )
    backup_id = dep.ok("backup", "create", "app", env=ENV).stdout.split()[-1]
    assert [r["path"] for r in receiver.requests] == ["/all"], "on: failure must not hear a success"
    done = receiver.json_bodies()[0]
    assert done["schema"] == 1 and done["failure"] is False
    assert done["event"]["kind"] == "backup_completed"
    assert done["event"]["deployment"] == "app"
    assert done["event"]["backup_id"] == backup_id
    assert done["event"]["status"] == "Completed"
    assert done["event"]["details"]["files"] > 0
    assert "app" in done["text"] and "backup completed" in done["text"] and done["content"] == done["text"]
    assert receiver.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert receiver.requests[0]["headers"]["Content-Type"] == "application/json"

    break_repository(dep)
    failed = dep.run("backup", "create", "app", env=ENV)
    assert failed.returncode == 6, str(failed)
    assert sorted(r["path"] for r in receiver.requests[1:]) == ["/all", "/bad"]
    for body in receiver.json_bodies()[1:]:
        assert body["failure"] is True
        assert body["event"]["kind"] == "backup_failed"
        assert body["event"]["status"] == "Failed"
        assert "Not a directory" in body["event"]["message"]
        assert "FAILED" in body["text"]
    for request in receiver.requests:
        assert TOKEN.encode() not in request["body"]


def test_upload_failure_is_notified_and_the_backup_stays_completed(
    files_deployment: Any, receiver: Receiver
) -> None:
    dep = files_deployment
    blocker = dep.root / "blocker"
    blocker.write_text("x")
    doc = helpers.load_yaml(dep.config)
    doc["destinations"]["copy"] = {"type": "local", "path": str(blocker / "copy")}
    doc["deployments"]["app"]["destinations"] = ["local", "copy"]
    helpers.dump_yaml(doc, dep.config)
    configure(dep, {"hook": webhook(receiver.url())}, [{"channel": "hook", "on": "failure"}])
    result = dep.run("backup", "create", "app", env=ENV)
    assert result.returncode != 0, str(result)
    (body,) = receiver.json_bodies()
    assert body["event"]["kind"] == "upload_failed"
    assert body["event"]["status"] == "Completed"
    assert body["event"]["details"]["failed_uploads"] == ["copy"]
    assert [b["status"] for b in dep.list()] == ["Completed"]


# ---- e-mail ------------------------------------------------------------------------------


def test_email_reaches_a_real_smtp_server_with_login(files_deployment: Any, smtp_server: Any) -> None:
    box, port = smtp_server
    dep = files_deployment
    mail = {
        "type": "email",
        "host": "127.0.0.1",
        "port": port,
        "security": "none",
        "username": "backup",
        "password_env": "SMTP_PASSWORD",
        "from": "backupctl@example.org",
        "to": ["ops@example.org", "dba@example.org"],
    }
    configure(dep, {"mail": mail}, [{"channel": "mail", "on": "failure"}])
    dep.create()  # a success: `on: failure` sends nothing
    assert box.messages == []
    break_repository(dep)
    failed = dep.run("backup", "create", "app", env=ENV)
    assert failed.returncode == 6, str(failed)
    (got,) = box.messages
    assert box.logins == [("backup", "PLAIN")] or box.logins[0][0] == "backup"
    assert sorted(got["envelope_to"]) == ["dba@example.org", "ops@example.org"]
    msg = got["msg"]
    assert msg["Subject"] == "[backupctl] app: backup FAILED"
    assert msg["From"] == "backupctl@example.org"
    body = msg.get_payload(decode=True).decode()
    assert "kind: backup_failed" in body and "deployment: app" in body and "Not a directory" in body
    assert SMTP_PASSWORD.encode() not in got["raw"]

    test = dep.run("notify", "test", "mail", "-o", "json", env=ENV)
    assert test.returncode == 0, str(test)
    assert test.json() == {
        "channel": "mail",
        "type": "email",
        "delivered": True,
        "queued": False,
        "error": None,
    }
    assert box.messages[-1]["msg"]["Subject"] == "[backupctl] test notification"
    # config show names the keys as the file does (`from`, not the model's `from_`).
    shown = dep.ok("config", "show", "-o", "json", env=ENV).json()["notifications"]["channels"]["mail"]
    assert "from" in shown and "from_" not in shown, shown
    assert SMTP_PASSWORD not in json.dumps(shown)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 (its own CA) and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "smtp.crt", directory / "smtp.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_email_over_starttls_and_tls(files_deployment: Any, tmp_path: Path, security: str) -> None:
    """The password goes only over an encrypted connection the server's certificate vouches for."""
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    box = Mailbox()

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.password.decode() == SMTP_PASSWORD
        box.logins.append((data.login.decode(), str(ok)))
        return AuthResult(success=ok, handled=False)

    port = free_port()
    options: dict[str, Any] = {"authenticator": authenticator}
    if security == "starttls":
        # auth_require_tls (the default): no login before STARTTLS.
        options.update(tls_context=server_tls, require_starttls=True)
    else:
        # The connection is TLS from the start (aiosmtpd does not count that for auth_require_tls).
        options.update(ssl_context=server_tls, auth_require_tls=False)
    controller = Controller(box, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        mail = {
            "type": "email",
            "host": "127.0.0.1",
            "port": port,
            "security": security,
            "ca_file": str(cert),
            "username": "backup",
            "password_env": "SMTP_PASSWORD",
            "from": "backupctl@example.org",
            "to": ["ops@example.org"],
        }
        configure(files_deployment, {"mail": mail}, [{"channel": "mail", "on": "always"}])
        first = files_deployment.ok("backup", "create", "app", env=ENV)
        backup_id = first.stdout.split()[-1]
        assert len(box.messages) == 1, str(first)
        (got,) = box.messages
        assert box.logins == [("backup", "True")]
        assert got["msg"]["Subject"] == "[backupctl] app: backup completed"
        assert backup_id in got["msg"].get_payload(decode=True).decode()

        # Without the CA the server is not trusted: nothing is sent, the backup still succeeds.
        del mail["ca_file"]
        configure(files_deployment, {"mail": mail}, [{"channel": "mail", "on": "always"}])
        result = files_deployment.run("backup", "create", "app", env=ENV)
        assert result.returncode == 0, str(result)
        assert "TLS failed" in result.stderr and "CERTIFICATE_VERIFY_FAILED" in result.stderr
        assert len(box.messages) == 1 and SMTP_PASSWORD not in result.stderr
    finally:
        controller.stop()


# ---- ping --------------------------------------------------------------------------------


def test_ping_start_success_and_fail(files_deployment: Any, receiver: Receiver) -> None:
    dep = files_deployment
    configure(
        dep,
        {"hc": {"type": "ping", "url": receiver.url("/ping/abc-123")}},
        [{"channel": "hc", "on": "always"}],
    )
    dep.create()
    assert [(r["method"], r["path"]) for r in receiver.requests] == [
        ("POST", "/ping/abc-123/start"),
        ("POST", "/ping/abc-123"),
    ]
    break_repository(dep)
    assert dep.run("backup", "create", "app").returncode == 6
    assert [r["path"] for r in receiver.requests[2:]] == ["/ping/abc-123/start", "/ping/abc-123/fail"]
    assert b"Not a directory" in receiver.requests[3]["body"]


# ---- an unreachable channel --------------------------------------------------------------


def test_unreachable_channel_does_not_fail_the_backup_and_is_retried(files_deployment: Any) -> None:
    dep = files_deployment
    port = free_port()  # nothing listens there yet
    url = f"http://127.0.0.1:{port}/services/T000/{TOKEN}"
    configure(dep, {"hook": {"type": "webhook", "url": url}}, [{"channel": "hook", "on": "always"}])
    first = dep.run("backup", "create", "app")
    assert first.returncode == 0, str(first)
    first_id = first.stdout.split()[-1]
    assert [b["status"] for b in dep.list()] == ["Completed"]
    assert "not delivered" in first.stderr and f"127.0.0.1:{port}" in first.stderr
    assert TOKEN not in first.stderr and "Traceback" not in first.stderr
    listed = dep.ok("notify", "list", "-o", "json").json()
    assert listed == [
        {
            "channel": "hook",
            "type": "webhook",
            "receiver": f"http://127.0.0.1:{port}",
            "used_by": ["app"],
            "pending": 1,
        }
    ]
    assert TOKEN not in json.dumps(listed)

    receiver = Receiver(port)
    try:
        second = dep.ok("backup", "create", "app")
        second_id = second.stdout.split()[-1]
        assert "not delivered" not in second.stderr
        got = [(b["event"]["kind"], b["event"]["backup_id"]) for b in receiver.json_bodies()]
        assert got == [("backup_completed", first_id), ("backup_completed", second_id)]
        assert all(r["path"] == f"/services/T000/{TOKEN}" for r in receiver.requests)
        assert dep.ok("notify", "list", "-o", "json").json()[0]["pending"] == 0
    finally:
        receiver.close()


def test_notify_test_of_an_unreachable_channel_fails_with_a_clean_line(files_deployment: Any) -> None:
    dep = files_deployment
    url = f"http://user:{TOKEN}@127.0.0.1:{free_port()}/x"
    configure(dep, {"hook": {"type": "webhook", "url": url}}, [])
    result = dep.run("notify", "test", "hook", "-o", "json")
    assert result.returncode == 1, str(result)
    row = result.json()
    assert row["delivered"] is False and row["queued"] is True
    assert TOKEN not in result.stdout + result.stderr
    missing = dep.run("notify", "test", "nope")
    helpers.assert_one_line_error(missing, 5, "no notification channel named 'nope'")


def test_credentials_in_a_webhook_url_are_sent_as_basic_auth(
    files_deployment: Any, receiver: Receiver
) -> None:
    """`http://user:password@host/...`: urllib took the password for a port (internal error,
    the password in the message); it is HTTP Basic authentication, and never shown."""
    import base64

    dep = files_deployment
    password = f"pw-{TOKEN}"
    url = receiver.url("/hook").replace("http://", f"http://ops:{password}@")
    configure(dep, {"hook": {"type": "webhook", "url": url}}, [])
    result = dep.ok("notify", "test", "hook", "-o", "json")
    assert TOKEN not in result.stdout + result.stderr
    (request,) = receiver.requests
    assert request["path"] == "/hook"
    expected = "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()
    assert request["headers"]["Authorization"] == expected
    # No port: the host part after '@' is the host, not a port (was "nonnumeric port").
    configure(dep, {"hook": {"type": "webhook", "url": f"http://ops:{password}@nosuchhost.invalid/x"}}, [])
    result = dep.run("notify", "test", "hook", "-o", "json")
    assert result.returncode == 1 and "internal error" not in result.stderr, str(result)
    assert result.json()["delivered"] is False and result.json()["queued"] is True
    assert TOKEN not in result.stdout + result.stderr


# ---- configuration errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("channels", "notify", "needle"),
    [
        ({}, [{"channel": "ops"}], "deployments.app.notify[0].channel: unknown notification channel 'ops'"),
        ({"ops": {"type": "webhook"}}, [], "notifications.channels.ops"),
        ({"ops": {"type": "pager", "url": "http://x"}}, [], "notifications.channels.ops"),
        ({"ops": {"type": "ping", "url": "ftp://x"}}, [], "http:// or https://"),
        (
            {"ops": {"type": "ping", "url": "http://x"}},
            [{"channel": "ops", "on": "sometimes"}],
            "notify[0].on",
        ),
    ],
)
def test_bad_notification_config_is_a_config_error(
    files_deployment: Any, channels: dict[str, Any], notify: list[dict[str, Any]], needle: str
) -> None:
    configure(files_deployment, channels, notify)
    result = files_deployment.run("config", "validate")
    helpers.assert_one_line_error(result, 4, needle)


def test_policy_channels_and_bad_grace(files_deployment: Any) -> None:
    dep = files_deployment
    configure(dep, {}, [], policies={"p": {"schedules": [{"interval": "1h"}], "notify": [{"channel": "x"}]}})
    helpers.assert_one_line_error(dep.run("config", "validate"), 4, "policies.p.notify[0].channel")
    configure(dep, {"x": {"type": "ping", "url": "http://x"}}, [], notifications={"overdue_grace": "soon"})
    helpers.assert_one_line_error(dep.run("config", "validate"), 4, "notifications.overdue_grace")


# ---- overdue -----------------------------------------------------------------------------


def test_overdue_is_reported_once_per_missed_interval(files_deployment: Any, receiver: Receiver) -> None:
    from backupctl.backups.service import Service
    from backupctl.config.loader import load_config
    from backupctl.notify.overdue import check_overdue
    from backupctl.policy.records import to_policy_records
    from backupctl.policy.schedule import FakeClock

    dep = files_deployment
    configure(
        dep,
        {"hook": webhook(receiver.url())},
        [],
        policies={"hourly": {"schedules": [{"interval": "1h"}], "notify": [{"channel": "hook"}]}},
        notifications={"overdue_grace": "30m"},
    )
    doc = helpers.load_yaml(dep.config)
    doc["deployments"]["app"]["policy"] = "hourly"
    helpers.dump_yaml(doc, dep.config)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    taken = now - dt.timedelta(hours=3)
    config = load_config(dep.config)
    Service(config, clock=FakeClock(taken)).create_backup("app")  # a backup three hours old
    assert receiver.requests == []  # on: failure (the default): a completed backup is quiet

    # run-due (the real CLI) sees it overdue before it runs the due backup.
    run = dep.run("schedule", "run-due", "-o", "json", env=ENV)
    assert run.returncode == 0, str(run)
    (overdue,) = receiver.json_bodies()
    assert overdue["event"]["kind"] == "backup_overdue"
    assert overdue["event"]["deployment"] == "app"
    assert overdue["event"]["status"] == "Overdue"
    assert overdue["event"]["details"]["policy"] == "hourly"
    assert overdue["event"]["details"]["last_completed"] == taken.strftime("%Y-%m-%dT%H:%M:%SZ")
    # last + 2h is the newest slot whose 30 min grace has passed at last + 3h
    assert overdue["event"]["details"]["missed_slot"] == (taken + dt.timedelta(hours=2)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )

    # In-process, on a fake clock: the same missed slot is not reported twice; the next one is.
    svc = Service(load_config(dep.config), clock=FakeClock(now))
    old = [b for b in to_policy_records(svc.list_backups(expiries=False)) if b.created == taken]
    assert check_overdue(config, old, now + dt.timedelta(minutes=5), state_dir=svc.state.path.parent) == []
    later = check_overdue(config, old, now + dt.timedelta(hours=1), state_dir=svc.state.path.parent)
    assert [e["kind"] for e in later] == ["backup_overdue"]
    # A fresh backup inside the interval: not overdue.
    fresh = [dataclass_replace(old[0], created=now + dt.timedelta(hours=1, minutes=50))]
    assert check_overdue(config, fresh, now + dt.timedelta(hours=2), state_dir=svc.state.path.parent) == []


def dataclass_replace(obj: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(obj, **changes)


def test_missed_slot_of_a_calendar_schedule() -> None:
    from backupctl.policy.models import Policy
    from backupctl.policy.overdue import missed_slot

    policy = Policy.model_validate({"schedules": [{"daily": {"at": "05:00"}}]})
    since = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    grace = dt.timedelta(hours=1)
    last = dt.datetime(2026, 3, 9, 5, 0, 7, tzinfo=dt.UTC)
    # 10 March 05:40: the 05:00 slot is still within its grace.
    assert missed_slot(policy, last, dt.datetime(2026, 3, 10, 5, 40, tzinfo=dt.UTC), grace, since) is None
    # 06:01: the 05:00 slot has no backup after its grace.
    assert missed_slot(
        policy, last, dt.datetime(2026, 3, 10, 6, 1, tzinfo=dt.UTC), grace, since
    ) == dt.datetime(2026, 3, 10, 5, 0, tzinfo=dt.UTC)
    # A backup at 05:02 covers it.
    done = dt.datetime(2026, 3, 10, 5, 2, tzinfo=dt.UTC)
    assert missed_slot(policy, done, dt.datetime(2026, 3, 10, 6, 1, tzinfo=dt.UTC), grace, since) is None


def test_notify_event_api_for_other_engines(
    files_deployment: Any, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the drill engine calls: `backupctl.notify.notify_event(config, event)`."""
    monkeypatch.setenv("HOOK_TOKEN", f"Bearer {TOKEN}")
    from backupctl.config.loader import load_config
    from backupctl.events import CollectingReporter
    from backupctl.notify import NotificationEvent, notify_event

    configure(files_deployment, {"hook": webhook(receiver.url())}, [{"channel": "hook", "on": "failure"}])
    config = load_config(files_deployment.config)
    event = NotificationEvent(
        kind="drill_failed",
        deployment="app",
        backup_id="ab" * 16,
        status="Failed",
        message="table orders: 10 rows, expected 12 (postgres://admin:hunter2@db/shop)",
        details={"checks_failed": 1},
    )
    reporter = CollectingReporter()
    rows = notify_event(config, event, reporter=reporter, state_dir=tmp_path / "state")
    assert rows == [{"channel": "hook", "type": "webhook", "delivered": True, "queued": False, "error": None}]
    (body,) = receiver.json_bodies()
    assert body["event"]["kind"] == "drill_failed" and body["event"]["details"] == {"checks_failed": 1}
    assert "hunter2" not in json.dumps(body)
    assert reporter.warnings == []
    with pytest.raises(ValueError, match="unknown notification kind"):
        NotificationEvent(kind="nope", deployment="app", message="")


# ---- PITR archive lag --------------------------------------------------------------------


@pytest.mark.server
def test_pitr_lag_is_notified_once_until_the_archive_catches_up(
    mariadb_server: Any, make_deployment: Any, receiver: Receiver
) -> None:
    """Binary logs archived by `binlog sync` from a real MariaDB; the lag is measured by run-due."""
    dep = make_deployment([mariadb_server.options()])
    doc = helpers.load_yaml(dep.config)
    doc["deployments"]["app"]["policy"] = "none"  # run-due runs no backup, only the checks
    helpers.dump_yaml(doc, dep.config)

    def threshold(value: str) -> None:
        configure(
            dep, {"hook": webhook(receiver.url())}, [{"channel": "hook"}], notifications={"pitr_lag": value}
        )

    threshold("10m")
    dep.ok("binlog", "sync", "app", "--flush")
    dep.ok("schedule", "run-due", env=ENV)
    assert receiver.requests == []  # fresh archive: nothing to say

    threshold("1s")
    time.sleep(1.5)
    dep.ok("schedule", "run-due", env=ENV)
    (lag,) = receiver.json_bodies()
    assert lag["event"]["kind"] == "pitr_lag" and lag["event"]["status"] == "Lagging"
    assert lag["event"]["details"]["family"] == "mariadb"
    assert lag["event"]["details"]["archive_lag_s"] > 1 and lag["event"]["details"]["gaps"] == 0
    assert "newest archived log is" in lag["event"]["message"]
    dep.ok("schedule", "run-due", env=ENV)
    assert len(receiver.requests) == 1  # still lagging: not repeated

    threshold("10m")  # caught up again: the mark clears, a later lag is reported anew
    dep.ok("schedule", "run-due", env=ENV)
    threshold("1s")
    dep.ok("schedule", "run-due", env=ENV)
    assert [b["event"]["kind"] for b in receiver.json_bodies()] == ["pitr_lag", "pitr_lag"]


def test_drill_hook_sends_drill_failed_with_the_failed_check(
    files_deployment: Any, receiver: Receiver
) -> None:
    """The one-line hook the drill engine calls with its DrillRecord (drill/record.py)."""
    from backupctl.notify import hooks

    configure(
        files_deployment,
        {"hook": {"type": "webhook", "url": receiver.url()}},
        [{"channel": "hook", "on": "failure"}],
    )
    svc = helpers.service(files_deployment.config)
    drill: dict[str, Any] = {
        "id": "d" * 32,
        "backup_id": "b" * 32,
        "deployment": "app",
        "started": "2026-12-03T21:00:00.000Z",
        "seconds": 2.5,
        "restore_seconds": 1.25,
        "passed": False,
        "to_time": None,
        "checks": [
            {"name": "sqlite.rows.orders", "passed": False, "detail": "10 rows, expected 12"},
            {"name": "sqlite.integrity", "passed": True, "detail": "ok"},
        ],
        "host": "h",
    }
    hooks.drill_finished(svc, drill)
    hooks.drill_finished(svc, {**drill, "passed": True, "checks": drill["checks"][1:]})  # on: failure
    (body,) = receiver.json_bodies()
    assert body["event"]["kind"] == "drill_failed" and body["event"]["status"] == "Failed"
    assert body["event"]["backup_id"] == "b" * 32
    assert body["event"]["message"] == "sqlite.rows.orders: 10 rows, expected 12"
    assert body["event"]["details"]["failed_checks"] == ["sqlite.rows.orders: 10 rows, expected 12"]


def test_retention_failure_after_a_scheduled_backup_is_notified(
    files_deployment: Any, receiver: Receiver
) -> None:
    """Retention needs the repository exclusively; a reader holding it makes retention fail."""
    dep = files_deployment
    configure(
        dep,
        {"hook": webhook(receiver.url())},
        [{"channel": "hook", "on": "failure"}],
        policies={
            "minutely": {
                "schedules": [{"type": "full", "cron": "* * * * *"}],
                "retention": {"keep_last": 1, "include_manual": True},
            }
        },
    )
    doc = helpers.load_yaml(dep.config)
    doc["deployments"]["app"]["policy"] = "minutely"
    helpers.dump_yaml(doc, dep.config)
    dep.create()  # the backup retention wants to delete
    svc = helpers.service(dep.config)
    repo = svc.repository("local")
    with repo.lock(exclusive=False, operation="a reader in another process"):
        run = dep.run("schedule", "run-due", "-o", "json", env=ENV)
    assert run.returncode == 1, str(run)
    (row,) = [r for r in run.json() if r.get("kind") == "backup"]
    assert row["status"] == "Completed" and row["retention_error"]
    (body,) = receiver.json_bodies()
    assert body["event"]["kind"] == "retention_failed"
    assert body["event"]["backup_id"] == row["backup_id"]
    assert "retention did not run" in body["event"]["message"]


def test_config_show_hides_literal_credential_headers(files_deployment: Any) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Api-Key": TOKEN, "X-Source": "backupctl"}
    configure(
        files_deployment, {"hook": {"type": "webhook", "url": "https://h.example/x", "headers": headers}}, []
    )
    for fmt in ("json", "yaml", "table"):
        shown = files_deployment.ok("config", "show", "-o", fmt)
        assert TOKEN not in shown.stdout + shown.stderr
    doc = files_deployment.ok("config", "show", "-o", "json").json()
    assert doc["notifications"]["channels"]["hook"]["headers"]["X-Source"] == "backupctl"


def test_config_show_hides_the_path_of_literal_notification_urls(files_deployment: Any) -> None:
    # Slack/Discord webhooks and healthchecks.io pings carry the credential in the URL path.
    channels = {
        "slack": {"type": "webhook", "url": f"https://hooks.slack.example/services/T0/B0/{TOKEN}"},
        "hc": {"type": "ping", "url": f"https://hc-ping.example/{TOKEN}?x=1"},
    }
    configure(files_deployment, channels, [])
    for fmt in ("json", "yaml", "table"):
        shown = files_deployment.ok("config", "show", "-o", fmt)
        assert TOKEN not in shown.stdout + shown.stderr
    doc = files_deployment.ok("config", "show", "-o", "json").json()
    assert doc["notifications"]["channels"]["slack"]["url"] == "https://hooks.slack.example/***"
    assert doc["notifications"]["channels"]["hc"]["url"] == "https://hc-ping.example/***"


def test_a_queued_event_is_claimed_by_one_process_only(tmp_path: Path) -> None:
    """Two processes retrying the queue at once (two cron jobs, a daemon) send each queued
    event once: a row is claimed before delivery; a claim left by a killed process expires."""
    from backupctl.notify.event import NotificationEvent
    from backupctl.notify.queue import CLAIM_TTL, Queue

    first, second = Queue(tmp_path), Queue(tmp_path)
    try:
        event = NotificationEvent(
            kind="backup_failed", deployment="app", status="Failed", message="m", time=dt.datetime.now(dt.UTC)
        )
        first.add("hook", event, "down", "2026-12-04T10:00:00.000Z")
        (row,) = second.pending()
        now = time.time()
        assert first.claim(row["seq"], now) is True
        assert second.claim(row["seq"], now + 1) is False  # the other process skips it
        assert first.claim(row["seq"], now + 2) is True  # a claim of its own is no obstacle
        # The first process was killed mid-delivery: after CLAIM_TTL the row is taken over.
        assert second.claim(row["seq"], now + CLAIM_TTL.total_seconds() + 3) is True
        # A failed attempt releases the claim for the next round of anyone.
        second.failed_again(row["seq"], "still down")
        assert first.claim(row["seq"], now + CLAIM_TTL.total_seconds() + 4) is True
        first.remove(row["seq"])
        assert second.claim(row["seq"], now + CLAIM_TTL.total_seconds() + 5) is False  # delivered: gone
    finally:
        first.close()
        second.close()


def test_a_queue_from_before_claims_gains_them(tmp_path: Path) -> None:
    import sqlite3

    from backupctl.notify.queue import Queue

    old = sqlite3.connect(tmp_path / "notify.db")
    old.executescript(
        "CREATE TABLE pending (seq INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, "
        "event TEXT NOT NULL, queued TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 1, "
        "last_error TEXT NOT NULL DEFAULT '');"
        "INSERT INTO pending (channel, event, queued) VALUES ('hook', '{}', '2026-12-04T10:00:00.000Z');"
    )
    old.commit()
    old.close()
    queue = Queue(tmp_path)
    try:
        (row,) = queue.pending()
        assert queue.claim(row["seq"], time.time()) is True
    finally:
        queue.close()
