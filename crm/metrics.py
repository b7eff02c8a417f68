"""Every Prometheus metric pbxcrm exports, in one registry, so all parts import one place.

A dedicated `REGISTRY` (not prometheus-client's global one) lets tests build the app many times
in one process; `/metrics` serves `generate_latest(REGISTRY)`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

ami_connected = Gauge(
    "pbxcrm_ami_connected",
    "1 while the AMI connection is logged in, else 0",
    ["pbx"],
    registry=REGISTRY,
)
ami_events_total = Counter(
    "pbxcrm_ami_events_total",
    "AMI events received, by event name",
    ["event"],
    registry=REGISTRY,
)
calls_active = Gauge(
    "pbxcrm_calls_active",
    "Calls currently open in the tracker",
    registry=REGISTRY,
)
outbox_depth = Gauge(
    "pbxcrm_outbox_depth",
    "Outbox rows by adapter and state (pending|done|dead)",
    ["adapter", "state"],
    registry=REGISTRY,
)
deliveries_total = Counter(
    "pbxcrm_deliveries_total",
    "Delivery attempts by adapter and outcome (delivered|unmatched|retry|dead)",
    ["adapter", "outcome"],
    registry=REGISTRY,
)
lookups_total = Counter(
    "pbxcrm_lookups_total",
    "Caller lookups by source and status (FOUND|NOTFOUND|MULTIPLE|ERROR)",
    ["source", "status"],
    registry=REGISTRY,
)
agi_sessions_total = Counter(
    "pbxcrm_agi_sessions_total",
    "AGI sessions by script and outcome",
    ["script", "outcome"],
    registry=REGISTRY,
)
http_requests_total = Counter(
    "pbxcrm_http_requests_total",
    "HTTP API requests by route and status",
    ["route", "status"],
    registry=REGISTRY,
)
store_commits_total = Counter(
    "pbxcrm_store_commits_total",
    "Write transactions committed by the store's writer",
    registry=REGISTRY,
)
store_commit_ops_total = Counter(
    "pbxcrm_store_commit_ops_total",
    "Write requests (record(), note, kv...) carried by those transactions",
    registry=REGISTRY,
)

http_connections_open = Gauge(
    "pbxcrm_http_connections_open",
    "Connections open on pbxcrm's HTTP port",
    registry=REGISTRY,
)
http_connections_refused_total = Counter(
    "pbxcrm_http_connections_refused_total",
    "Connections closed because [http] max_connections were open: reason=limit the new one,"
    " reason=stalled the oldest that never sent a whole request",
    ["reason"],
    registry=REGISTRY,
)
http_slow_requests_total = Counter(
    "pbxcrm_http_slow_requests_total",
    "Requests answered 408 and closed because their body did not arrive in time",
    registry=REGISTRY,
)
http_accept_errors_total = Counter(
    "pbxcrm_http_accept_errors_total",
    "accept() failures on the HTTP port for want of file descriptors or memory",
    registry=REGISTRY,
)


def render() -> bytes:
    """The text exposition of REGISTRY, for the /metrics route."""
    return generate_latest(REGISTRY)
