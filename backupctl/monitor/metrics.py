"""Prometheus metrics from the health document (monitor.health), in two forms:

* `render(health)`: the text exposition format (version 0.0.4) with HELP/TYPE lines, for
  node_exporter's textfile collector; `write_textfile(path, text)` replaces the file
  atomically (a temporary file in the same directory, fsync, rename; mode 0644).
  Needs no third-party library.
* `serve(compute, host, port, cache_seconds)`: an HTTP server answering /metrics through
  prometheus_client (imported there, not at module level: the textfile path never needs it);
  each scrape recomputes the health unless the last one is younger than `cache_seconds`.

CATALOG is the list of metrics (name, type, help, labels); docs/monitoring.md documents each.
A sample is left out when its value is unknown (no backup yet, no drill, no PITR archive), so
that an alert on `absent()` or on `backupctl_problems` says what is missing, never a made-up 0.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backupctl.errors import BackupctlError
from backupctl.monitor.health_doc import Health
from backupctl.timefmt import parse_iso_utc

# Every problem kind of monitor.health: backupctl_problems has one sample per deployment and
# kind (0 or the number of such problems), so that an alert can name the kind.
PROBLEM_KINDS = (
    "never_backed_up",
    "last_run_failed",
    "overdue",
    "upload_failed",
    "upload_pending",
    "copy_missing",
    "archive_gap",
    "drill_failed",
    "destination_unreachable",
    "repository_unreadable",
)


@dataclass(frozen=True)
class Metric:
    name: str
    type: str  # gauge | counter
    help: str
    labels: tuple[str, ...]


CATALOG: tuple[Metric, ...] = (
    Metric(
        "backupctl_last_success_timestamp_seconds",
        "gauge",
        "End of the newest completed backup of the deployment (Unix time).",
        ("deployment",),
    ),
    Metric(
        "backupctl_last_backup_duration_seconds",
        "gauge",
        "Duration of the newest completed backup.",
        ("deployment",),
    ),
    Metric(
        "backupctl_last_backup_size_bytes",
        "gauge",
        "Source size of the newest completed backup (bytes read from the source).",
        ("deployment",),
    ),
    Metric(
        "backupctl_backup_failures_total",
        "counter",
        "Failed backup runs recorded in this host's job state (drops when a failed run is deleted).",
        ("deployment",),
    ),
    Metric(
        "backupctl_rpo_seconds",
        "gauge",
        "Now minus the newest restorable moment (newest backup end or PITR window end).",
        ("deployment",),
    ),
    Metric(
        "backupctl_last_drill_success_timestamp_seconds",
        "gauge",
        "Start of the newest restore drill that passed (Unix time).",
        ("deployment",),
    ),
    Metric(
        "backupctl_last_drill_restore_seconds",
        "gauge",
        "Restore time measured by the newest restore drill that passed.",
        ("deployment",),
    ),
    Metric(
        "backupctl_pitr_archive_lag_seconds",
        "gauge",
        "Now minus the upload time of the newest archived WAL segment or binary log.",
        ("deployment",),
    ),
    Metric(
        "backupctl_pitr_window_end_timestamp_seconds",
        "gauge",
        "Latest moment point-in-time recovery can reach (Unix time).",
        ("deployment",),
    ),
    Metric(
        "backupctl_next_run_timestamp_seconds",
        "gauge",
        "Next scheduled backup of the deployment's policy (Unix time).",
        ("deployment",),
    ),
    Metric(
        "backupctl_problems",
        "gauge",
        "Problems of the deployment by kind (see backupctl status).",
        ("deployment", "kind"),
    ),
    Metric(
        "backupctl_destination_last_backup_timestamp_seconds",
        "gauge",
        "End of the newest completed backup of the deployment with a copy on the destination.",
        ("deployment", "destination"),
    ),
    Metric(
        "backupctl_repository_size_bytes",
        "gauge",
        "Total size of every object at the destination (packs, indexes, manifests, archived logs).",
        ("destination",),
    ),
    Metric(
        "backupctl_destination_up",
        "gauge",
        "1 when the destination answered a listing, 0 otherwise.",
        ("destination",),
    ),
    Metric(
        "backupctl_metrics_generated_timestamp_seconds",
        "gauge",
        "When these metrics were computed (Unix time).",
        (),
    ),
)
BY_NAME = {m.name: m for m in CATALOG}

Sample = tuple[dict[str, str], float]


def _ts(text: str | None) -> float | None:
    return parse_iso_utc(text).timestamp() if text else None


def samples(health: Health) -> dict[str, list[Sample]]:
    """Metric name -> its samples (labels, value), for every metric of CATALOG."""
    out: dict[str, list[Sample]] = {m.name: [] for m in CATALOG}

    def add(name: str, labels: dict[str, str], value: float | None) -> None:
        if value is not None:
            out[name].append((labels, float(value)))

    for d in health["deployments"]:
        lab = {"deployment": d["deployment"]}
        last = d["last_backup"]
        if last is not None:
            add("backupctl_last_success_timestamp_seconds", lab, _ts(last["finished"] or last["started"]))
            add("backupctl_last_backup_duration_seconds", lab, last["duration_s"])
            add("backupctl_last_backup_size_bytes", lab, last["size_bytes"])
        add("backupctl_backup_failures_total", lab, d["failures"])
        add("backupctl_rpo_seconds", lab, d["rpo_s"])
        drill = d["last_drill"]
        if drill is not None:
            add("backupctl_last_drill_success_timestamp_seconds", lab, _ts(drill["started"]))
            add("backupctl_last_drill_restore_seconds", lab, drill["restore_seconds"])
        pitr = d["pitr"]
        if pitr is not None:
            add("backupctl_pitr_archive_lag_seconds", lab, pitr["archive_lag_s"])
            add("backupctl_pitr_window_end_timestamp_seconds", lab, _ts(pitr["window_end"]))
        add("backupctl_next_run_timestamp_seconds", lab, _ts(d["next_run"]))
        for kind in PROBLEM_KINDS:
            count = sum(1 for p in d["problems"] if p["kind"] == kind)
            add("backupctl_problems", {**lab, "kind": kind}, count)
        for copy in d["destinations"]:
            add(
                "backupctl_destination_last_backup_timestamp_seconds",
                {**lab, "destination": copy["destination"]},
                _ts(copy["last_backup_finished"]),
            )
    for dest in health["destinations"]:
        lab = {"destination": dest["name"]}
        if dest["reachable"]:
            add("backupctl_repository_size_bytes", lab, dest["size_bytes"])
        add("backupctl_destination_up", lab, 1 if dest["reachable"] else 0)
    add("backupctl_metrics_generated_timestamp_seconds", {}, _ts(health["generated"]))
    return out


# ---- the text format ------------------------------------------------------------------------


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def render(health: Health) -> str:
    """The Prometheus text exposition format of `health` (every metric has HELP and TYPE)."""
    lines: list[str] = []
    for metric, found in zip(CATALOG, samples(health).values(), strict=True):
        lines.append(f"# HELP {metric.name} {_escape_help(metric.help)}")
        lines.append(f"# TYPE {metric.name} {metric.type}")
        for labels, value in found:
            inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
            lines.append(
                f"{metric.name}{{{inner}}} {_number(value)}" if inner else f"{metric.name} {_number(value)}"
            )
    return "\n".join(lines) + "\n"


def write_textfile(path: Path, text: str) -> None:
    """Replace `path` atomically: node_exporter never reads a half-written file (it reads
    only `*.prom`; the temporary name does not end so). Mode 0644: the exporter usually runs
    as another user, and metrics hold no secrets."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# ---- the HTTP endpoint ----------------------------------------------------------------------


class CachedHealth:
    """`get()` returns the health, recomputed when the cached one is older than `seconds`.
    One computation at a time (a lock): concurrent scrapes wait for the same result."""

    def __init__(self, compute: Callable[[], Health], seconds: float) -> None:
        self._compute = compute
        self._seconds = seconds
        self._lock = threading.Lock()
        self._value: Health | None = None
        self._at = 0.0

    def get(self) -> Health:
        with self._lock:
            if self._value is None or time.monotonic() - self._at >= self._seconds:
                self._value = self._compute()
                self._at = time.monotonic()
            return self._value


class _Collector:
    """A prometheus_client collector over CATALOG (custom collector: the values come from the
    health document, not from instrumented code)."""

    def __init__(self, health: CachedHealth) -> None:
        self._health = health

    def describe(self) -> list[Any]:
        return []  # unchecked collector: the registry does not call collect() at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        found = samples(self._health.get())
        for metric in CATALOG:
            family: Any
            if metric.type == "counter":
                family = CounterMetricFamily(metric.name, metric.help, labels=list(metric.labels))
            else:
                family = GaugeMetricFamily(metric.name, metric.help, labels=list(metric.labels))
            for labels, value in found[metric.name]:
                family.add_metric([labels[k] for k in metric.labels], value)
            yield family


def make_server(compute: Callable[[], Health], host: str, port: int, cache_seconds: float) -> Any:
    """A WSGI server (not started) answering GET /metrics; `server.server_port` is the port
    bound (useful with port 0). Call `serve_forever()` on it; `server_close()` to stop."""
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
    from wsgiref.simple_server import make_server as wsgi_server

    from prometheus_client import CollectorRegistry, make_wsgi_app

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(CachedHealth(compute, cache_seconds)))
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: ask /metrics\n"]
        try:
            return metrics_app(environ, start_response)
        except BackupctlError as exc:
            # E.g. the config became invalid while serving: the scrape fails (Prometheus sets
            # `up` to 0) with one line saying why, and the server stays up for the next one.
            start_response("500 Internal Server Error", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"error: {exc}\n".encode()]

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # no access log on stderr
            pass

    class _Server(WSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    return wsgi_server(host, port, app, server_class=_Server, handler_class=_Quiet)
