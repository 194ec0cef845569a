"""qpext's configuration, read once at start from the same environment variables as KServe's Go qpext.

The KServe pod mutator sets the three metric-aggregation variables on the queue-proxy container and Knative
sets the three ``SERVING_*`` variables, so a mistake there shows up only as missing series. Validating up
front turns that into one clear line at start instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

AGGREGATE_PORT_ENV = "AGGREGATE_PROMETHEUS_METRICS_PORT"
APP_PORT_ENV = "KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT"
APP_PATH_ENV = "KSERVE_CONTAINER_PROMETHEUS_METRICS_PATH"
SERVICE_ENV = "SERVING_SERVICE"
CONFIGURATION_ENV = "SERVING_CONFIGURATION"
REVISION_ENV = "SERVING_REVISION"
QUEUE_PROXY_BINARY_ENV = "QPEXT_QUEUE_PROXY_BINARY"
MAX_BODY_BYTES_ENV = "QPEXT_MAX_BODY_BYTES"

QUEUE_PROXY_METRICS_PORT = 9091
DEFAULT_METRICS_PATH = "/metrics"
SERVERLESS_LABEL_NAMES = ("service_name", "configuration_name", "revision_name")
# The largest body read from either side. A scrape needs about twice the app's body (the relabelled output
# plus one chunk of input), so this bounds qpext's memory, and with it the pod's request path.
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


class ConfigError(ValueError):
    """A configuration value is unusable; the message is one line naming the variable."""


@dataclass(frozen=True)
class Config:
    listen_port: int = 0
    app_port: int | None = None
    app_path: str = DEFAULT_METRICS_PATH
    queue_proxy_port: int | None = QUEUE_PROXY_METRICS_PORT
    queue_proxy_path: str = DEFAULT_METRICS_PATH
    upstream_host: str = "localhost"
    listen_host: str = "0.0.0.0"
    serverless_label_values: tuple[str, str, str] = ("", "", "")
    child_command: tuple[str, ...] = field(default_factory=tuple)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES


def serverless_label_values(env: Mapping[str, str]) -> tuple[str, str, str]:
    """The values of service_name, configuration_name and revision_name, in that order."""
    return (env.get(SERVICE_ENV, ""), env.get(CONFIGURATION_ENV, ""), env.get(REVISION_ENV, ""))


def _port(env: Mapping[str, str], name: str, *, allow_zero: bool) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    lowest = 0 if allow_zero else 1
    if not raw.isdigit() or not lowest <= int(raw) <= 65535:
        raise ConfigError(f"{name} must be a port number ({lowest}-65535), got {raw!r}")
    return int(raw)


def _path(env: Mapping[str, str], name: str) -> str:
    raw = env.get(name, "").strip() or DEFAULT_METRICS_PATH
    if not raw.startswith("/") or any(ch.isspace() or ord(ch) < 0x20 for ch in raw):
        raise ConfigError(f"{name} must be a URL path starting with '/' and without spaces, got {raw!r}")
    return raw


def _child_command(env: Mapping[str, str], argv: Sequence[str]) -> tuple[str, ...]:
    command = tuple(argv[1:] if argv[:1] == ["--"] else argv)
    if not command and env.get(QUEUE_PROXY_BINARY_ENV, "").strip():
        command = (env[QUEUE_PROXY_BINARY_ENV].strip(),)
    if command and not (os.path.isfile(command[0]) and os.access(command[0], os.X_OK)):
        raise ConfigError(f"queue-proxy binary {command[0]!r} does not exist or is not executable")
    return command


def _max_body_bytes(env: Mapping[str, str]) -> int:
    raw = env.get(MAX_BODY_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BODY_BYTES
    if not raw.isdigit() or int(raw) < 1024:
        raise ConfigError(f"{MAX_BODY_BYTES_ENV} must be a number of bytes (at least 1024), got {raw!r}")
    return int(raw)


def load_config(env: Mapping[str, str], argv: Sequence[str] = ()) -> Config:
    """Build and validate the configuration; ``argv`` is the optional queue-proxy command line."""
    listen_port = _port(env, AGGREGATE_PORT_ENV, allow_zero=True) or 0
    app_port = _port(env, APP_PORT_ENV, allow_zero=False)
    if listen_port and listen_port in (app_port, QUEUE_PROXY_METRICS_PORT):
        raise ConfigError(f"{AGGREGATE_PORT_ENV}={listen_port} collides with a port qpext scrapes")
    return Config(
        listen_port=listen_port,
        app_port=app_port,
        app_path=_path(env, APP_PATH_ENV),
        serverless_label_values=serverless_label_values(env),
        child_command=_child_command(env, argv),
        max_body_bytes=_max_body_bytes(env),
    )
