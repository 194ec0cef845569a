"""``kserve-localcluster up [--node]``: run a local cluster in the foreground until Ctrl-C or SIGTERM.

Lets a developer point kubectl (or the manager) at a real, disposable kube-apiserver without writing any
Python; teardown on exit is as thorough as in the test fixtures.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from e2e.localcluster.binaries import BinariesError
from e2e.localcluster.cluster import LocalCluster, LocalClusterError

PROG = "kserve-localcluster"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Run a local Kubernetes control plane.")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the cluster, print its kubeconfig, block until interrupted")
    up.add_argument("--dir", type=Path, help="work directory (kept afterwards); default: a temporary one")
    up.add_argument("--no-controller-manager", action="store_true", help="run only etcd and kube-apiserver")
    up.add_argument(
        "--node", action="store_true", help="also run a node (kubelet, containerd, kube-proxy, DNS)"
    )
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness (default 60)")
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _error(message: str) -> int:
    print(f"{PROG}: error: {message.splitlines()[0] if message else 'unknown error'}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.timeout <= 0:
        return _error("--timeout must be positive")
    if args.dir is not None and args.dir.exists() and not args.dir.is_dir():
        return _error(f"--dir {args.dir} exists and is not a directory")
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, _interrupt)
    cluster: LocalCluster | None = None
    try:
        if args.node and args.no_controller_manager:
            return _error("--node needs the controller manager")
        cluster = LocalCluster(args.dir, controller_manager=not args.no_controller_manager, node=args.node)
        cluster.start(timeout=args.timeout)
        print(f"kubeconfig: {cluster.kubeconfig_path}")
        print(f"server:     {cluster.server}")
        print(f"logs:       {cluster.workdir / 'logs'}")
        print(f"export KUBECONFIG={cluster.kubeconfig_path}")
        print("Press Ctrl-C to stop.", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    except (LocalClusterError, BinariesError, OSError, ValueError) as exc:
        return _error(str(exc))
    finally:
        # A second Ctrl-C must not abandon a half-finished teardown; it is bounded by the stop grace periods.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if cluster is not None:
            cluster.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
