"""Delivering one event to one channel: webhook (JSON POST), e-mail (SMTP), ping (GET).

Contract: `deliver(name, channel, event)` returns normally when the receiver accepted the
event and raises `DeliveryError` otherwise, with a one-line reason that names the channel
and the receiver's scheme://host:port only - never the URL path or query (Slack, Discord
and healthchecks.io put their tokens there), a header value or a password. Every text that
leaves (payload, subject, body, error) is scrubbed of the channel's resolved secrets and of
`user:password@` in URLs. Standard library only (urllib, smtplib); short timeouts.
"""

from __future__ import annotations

import base64
import http.client
import json
import smtplib
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from email.message import EmailMessage
from typing import Any

from backupctl import __version__
from backupctl.config.notifications import EmailChannel, PingChannel, SecretRef, WebhookChannel
from backupctl.config.secrets import resolve_secret
from backupctl.errors import BackupctlError
from backupctl.notify.event import NotificationEvent
from backupctl.redact import MASK, document, url_credentials

# Version of the webhook body; bumped only when a key changes meaning or disappears.
PAYLOAD_SCHEMA = 1


class DeliveryError(Exception):
    """The channel did not take the event; the message is safe to show and log."""


def where(url: str) -> str:
    """`scheme://host[:port]` of a URL: enough to recognise the receiver, no token."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port
    except ValueError:  # not a number: say nothing more than the host
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def masked_url(url: str) -> str:
    """`where(url)` plus `/***` when the URL has a path or query: Slack and Discord webhook
    URLs and healthchecks.io pings carry their token there (`config show`)."""
    parts = urllib.parse.urlsplit(url)
    return where(url) + (f"/{MASK}" if parts.path.strip("/") or parts.query or parts.fragment else "")


def _request(url: str, body: bytes, headers: dict[str, str]) -> urllib.request.Request:
    """A POST to `url`; `user:password@` in it becomes HTTP Basic authentication (urllib
    would read the password as the port)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None or parts.password is not None:
        user = urllib.parse.unquote(parts.username or "")
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        headers = {**headers, "Authorization": f"Basic {token}"}
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return urllib.request.Request(url, data=body, headers=headers, method="POST")


def scrub(value: Any, secrets: list[str]) -> Any:
    """`value` (text or JSON-like) without any of `secrets` and without URL passwords."""
    if isinstance(value, str):
        for secret in secrets:
            if secret and len(secret) >= 4:
                value = value.replace(secret, MASK)
        return url_credentials(value)
    if isinstance(value, dict):
        return {k: scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v, secrets) for v in value]
    return document(value)


def text_line(event: NotificationEvent) -> str:
    """The one-paragraph human text (Slack `text`, Discord `content`, mail subject + body start)."""
    who = f" {event.deployment}" if event.deployment else ""
    backup = f" (backup {event.backup_id[:8]})" if event.backup_id else ""
    return f"backupctl{who}: {event.title}{backup}: {event.message}"


def payload(event: NotificationEvent) -> dict[str, Any]:
    """The webhook body (docs/monitoring.md#webhook-payload): stable keys."""
    text = text_line(event)
    return {
        "schema": PAYLOAD_SCHEMA,
        "text": text,
        "content": text[:2000],  # Discord's limit
        "failure": event.failure,
        "hostname": socket.gethostname(),
        "backupctl_version": __version__,
        "event": event.to_doc(),
    }


def _value(ref: str | SecretRef, what: str) -> str:
    if isinstance(ref, str):
        return ref
    try:
        value = resolve_secret(env=ref.value_env, file=ref.value_file, what=what)
    except BackupctlError as exc:
        raise DeliveryError(exc.message) from None
    return value or ""


def _url(name: str, channel: WebhookChannel | PingChannel) -> str:
    if channel.url is not None:
        return channel.url
    ref = SecretRef(value_env=channel.url_env, value_file=channel.url_file)
    url = _value(ref, f"notifications.channels.{name}.url").strip()
    if not url.startswith(("http://", "https://")):
        raise DeliveryError(f"channel {name}: its URL reference does not hold an http(s):// URL")
    return url


def secrets_of(name: str, channel: Any) -> list[str]:
    """Every secret value the channel holds (to scrub them from anything that leaves)."""
    found: list[str] = []
    try:
        if isinstance(channel, WebhookChannel | PingChannel):
            url = _url(name, channel)
            parts = urllib.parse.urlsplit(url)
            # Path and query hold the tokens of Slack, Discord and healthchecks.io URLs.
            found += [p for p in (parts.path, parts.query) if len(p) >= 8]
            if parts.password:
                found += [parts.password, urllib.parse.unquote(parts.password)]
        if isinstance(channel, WebhookChannel):
            found += [_value(v, "header") for v in channel.headers.values()]
        if isinstance(channel, EmailChannel) and (channel.password_env or channel.password_file):
            found.append(
                _value(
                    SecretRef(value_env=channel.password_env, value_file=channel.password_file), "password"
                )
            )
    except DeliveryError:
        pass
    return [s for s in found if s]


def deliver(name: str, channel: Any, event: NotificationEvent) -> None:
    secrets = secrets_of(name, channel)
    try:
        if isinstance(channel, WebhookChannel):
            _webhook(name, channel, event, secrets)
        elif isinstance(channel, PingChannel):
            _ping(name, channel, event)
        elif isinstance(channel, EmailChannel):
            _email(name, channel, event, secrets)
        else:  # pragma: no cover - the config model admits no other type
            raise DeliveryError(f"channel {name}: unknown type")
    except DeliveryError as exc:
        raise DeliveryError(scrub(str(exc), secrets)) from None


def _http(name: str, request: urllib.request.Request, timeout: float) -> None:
    shown = where(request.full_url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http/https only)
            response.read(65536)
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"channel {name}: {shown} answered HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise DeliveryError(f"channel {name}: cannot reach {shown}: {_reason(exc.reason)}") from None
    except (TimeoutError, OSError) as exc:
        raise DeliveryError(f"channel {name}: cannot reach {shown}: {_reason(exc)}") from None
    except (http.client.HTTPException, ValueError) as exc:  # InvalidURL: a bad port, a bad host
        raise DeliveryError(f"channel {name}: {shown} is not a usable URL ({type(exc).__name__})") from None


def _reason(exc: object) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _webhook(name: str, channel: WebhookChannel, event: NotificationEvent, secrets: list[str]) -> None:
    body = json.dumps(scrub(payload(event), secrets)).encode()
    headers = {"Content-Type": "application/json", "User-Agent": f"backupctl/{__version__}"}
    for key, ref in channel.headers.items():
        headers[key] = _value(ref, f"notifications.channels.{name}.headers.{key}")
    _http(name, _request(_url(name, channel), body, headers), channel.timeout)


def ping_url(base: str, event: NotificationEvent) -> str | None:
    """healthchecks.io convention: base/start, base (success), base/fail; None: no ping."""
    if event.kind == "backup_started":
        suffix = "/start"
    elif event.kind == "backup_overdue":
        return None  # the ping service notices a missing ping by itself
    elif event.failure:
        suffix = "/fail"
    else:
        suffix = ""
    parts = urllib.parse.urlsplit(base)
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + suffix))


def _ping(name: str, channel: PingChannel, event: NotificationEvent) -> None:
    url = ping_url(_url(name, channel), event)
    if url is None:
        return
    # The body is logged by healthchecks.io next to the ping: the one-line text, no secrets.
    body = text_line(event).encode()[:10000]
    headers = {"User-Agent": f"backupctl/{__version__}", "Content-Type": "text/plain; charset=utf-8"}
    _http(name, _request(url, body, headers), channel.timeout)


def _email(name: str, channel: EmailChannel, event: NotificationEvent, secrets: list[str]) -> None:
    message = EmailMessage()
    # "[backupctl] shop: backup failed"; without a deployment (a test event) no stray colon.
    who = f" {event.deployment}:" if event.deployment else ""
    message["Subject"] = scrub(f"{channel.subject_prefix}{who} {event.title}", secrets).strip()
    message["From"] = channel.from_
    message["To"] = ", ".join(channel.to)
    doc = scrub(event.to_doc(), secrets)
    lines = [scrub(text_line(event), secrets), ""]
    lines += [f"{k}: {v}" for k, v in doc.items() if k != "details" and v not in (None, "")]
    lines += [f"{k}: {v}" for k, v in doc["details"].items()]
    lines += ["", f"host: {socket.gethostname()}", f"backupctl {__version__}"]
    message.set_content("\n".join(lines) + "\n")
    password = None
    if channel.password_env or channel.password_file:
        password = _value(
            SecretRef(value_env=channel.password_env, value_file=channel.password_file), "password"
        )
    shown = f"smtp {channel.host}:{channel.effective_port}"
    try:
        smtp: smtplib.SMTP
        if channel.security == "tls":
            smtp = smtplib.SMTP_SSL(
                channel.host,
                channel.effective_port,
                timeout=channel.timeout,
                context=ssl.create_default_context(cafile=channel.ca_file),
            )
        else:
            smtp = smtplib.SMTP(channel.host, channel.effective_port, timeout=channel.timeout)
        with smtp:
            if channel.security == "starttls":
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(f"channel {name}: {shown} does not offer STARTTLS (see `security`)")
                smtp.starttls(context=ssl.create_default_context(cafile=channel.ca_file))
            if channel.username is not None:
                smtp.login(channel.username, password or "")
            smtp.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"channel {name}: {shown} refused the login (SMTP {exc.smtp_code})") from None
    except smtplib.SMTPNotSupportedError as exc:
        raise DeliveryError(f"channel {name}: {shown}: {exc}") from None
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(f"channel {name}: {shown} answered SMTP {exc.smtp_code}") from None
    except smtplib.SMTPException as exc:
        raise DeliveryError(f"channel {name}: {shown}: {type(exc).__name__}") from None
    except ssl.SSLError as exc:
        raise DeliveryError(f"channel {name}: {shown}: TLS failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise DeliveryError(f"channel {name}: cannot reach {shown}: {_reason(exc)}") from None
