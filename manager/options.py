"""Command-line flags of the manager, compatible with KServe's controller manager.

Flag names and defaults follow KServe (`--metrics-addr :8080`, `--webhook-port 9443`, `--leader-elect`) and
controller-runtime (`--health-probe-addr :8081`), so existing manifests and runbooks keep working. The
manager's namespace comes from `POD_NAMESPACE` (default `kserve`), as in KServe's Deployment.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from manager.leaderelection import default_identity

LEADER_ELECTION_ID = "kserve-controller-manager-leader-lock"


@dataclass(frozen=True)
class ManagerOptions:
    """Everything the manager runtime needs to know from the command line and environment."""

    metrics_addr: str = ":8080"
    health_probe_addr: str = ":8081"
    webhook_port: int = 9443
    webhook_cert_dir: str = "/tmp/k8s-webhook-server/serving-certs"
    webhook_host: str = "0.0.0.0"
    webhook_self_signed: bool = False
    webhook_service_name: str = "kserve-webhook-server-service"
    webhook_cert_ips: tuple[str, ...] = ()
    leader_elect: bool = False
    leader_election_id: str = LEADER_ELECTION_ID
    leader_election_namespace: str = "kserve"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    kubeconfig: str | None = None
    max_concurrent_reconciles: int = 1
    log_level: str = "info"
    log_format: str = "text"
    namespace: str = "kserve"
    graceful_shutdown_timeout: float = 30.0
    cache_sync_timeout: float = 120.0
    identity: str = field(default_factory=default_identity)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from exc
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text.rstrip("s"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a duration in seconds: {text!r}") from exc
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def build_parser(prog: str = "kserve-manager") -> argparse.ArgumentParser:
    """The flag parser (exposed for `--help` tests and for embedding)."""
    p = argparse.ArgumentParser(prog=prog, description="KServe InferenceService controller manager (Python).")
    p.add_argument("--metrics-addr", default=":8080", help="address of /metrics ('0' disables) [:8080]")
    p.add_argument(
        "--health-probe-addr", default=":8081", help="address of /healthz and /readyz ('0' disables) [:8081]"
    )
    p.add_argument("--webhook-port", type=_port, default=9443, help="port of the webhook HTTPS server [9443]")
    p.add_argument(
        "--webhook-cert-dir",
        default="/tmp/k8s-webhook-server/serving-certs",
        help="directory holding tls.crt and tls.key for the webhook server",
    )
    p.add_argument("--webhook-host", default="0.0.0.0", help="address the webhook server binds [0.0.0.0]")
    p.add_argument(
        "--webhook-self-signed",
        action="store_true",
        help="generate a CA and serving certificate into --webhook-cert-dir and patch the webhook "
        "configurations' caBundle (for clusters without cert-manager)",
    )
    p.add_argument(
        "--webhook-service-name",
        default="kserve-webhook-server-service",
        help="Service in front of the webhook server; its DNS names go into the self-signed certificate",
    )
    p.add_argument(
        "--webhook-cert-ip",
        action="append",
        default=[],
        help="extra IP address for the self-signed certificate (repeatable; e.g. 127.0.0.1 for local runs)",
    )
    p.add_argument("--leader-elect", action="store_true", help="enable leader election (Lease lock)")
    p.add_argument(
        "--leader-election-namespace", default=None, help="namespace of the Lease [$POD_NAMESPACE or kserve]"
    )
    p.add_argument("--leader-elect-lease-duration", type=_seconds, default=15.0, help=argparse.SUPPRESS)
    p.add_argument("--leader-elect-renew-deadline", type=_seconds, default=10.0, help=argparse.SUPPRESS)
    p.add_argument("--leader-elect-retry-period", type=_seconds, default=2.0, help=argparse.SUPPRESS)
    p.add_argument("--kubeconfig", default=None, help="path to a kubeconfig [$KUBECONFIG, in-cluster]")
    p.add_argument(
        "--max-concurrent-reconciles", type=_positive_int, default=1, help="workers per controller [1]"
    )
    p.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="[info]"
    )
    p.add_argument("--log-format", default="text", choices=["text", "json"], help="[text]")
    p.add_argument(
        "--graceful-shutdown-timeout", type=_seconds, default=30.0, help="seconds to finish work on exit [30]"
    )
    p.add_argument(
        "--cache-sync-timeout", type=_seconds, default=120.0, help="seconds to wait for caches [120]"
    )
    return p


def parse_options(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> ManagerOptions:
    """Parse flags (exits with a usage message on bad flags, like any CLI)."""
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    namespace = env.get("POD_NAMESPACE") or "kserve"
    return ManagerOptions(
        metrics_addr=args.metrics_addr,
        health_probe_addr=args.health_probe_addr,
        webhook_port=args.webhook_port,
        webhook_cert_dir=args.webhook_cert_dir,
        webhook_host=args.webhook_host,
        webhook_self_signed=args.webhook_self_signed,
        webhook_service_name=args.webhook_service_name,
        webhook_cert_ips=tuple(args.webhook_cert_ip),
        leader_elect=args.leader_elect,
        leader_election_namespace=args.leader_election_namespace or namespace,
        lease_duration=args.leader_elect_lease_duration,
        renew_deadline=args.leader_elect_renew_deadline,
        retry_period=args.leader_elect_retry_period,
        kubeconfig=args.kubeconfig,
        max_concurrent_reconciles=args.max_concurrent_reconciles,
        log_level=args.log_level,
        log_format=args.log_format,
        namespace=namespace,
        graceful_shutdown_timeout=args.graceful_shutdown_timeout,
        cache_sync_timeout=args.cache_sync_timeout,
    )
