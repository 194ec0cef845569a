"""`python -m e2e.knative_double --kubeconfig K`: the Knative Serving double as its own process.

It runs on the same manager shell as kserve-manager (flags, logging, signals, exit codes), so every
kserve-manager flag works here too. Next to a manager on the same machine the double must not take the
manager's metrics and probe ports, so those servers are off unless `--metrics-addr` or
`--health-probe-addr` is given.

`--revision-readiness=pods` (the default) makes a revision Ready when its pods are Ready, which needs a
cluster with nodes; `--revision-readiness=deployment` is the node-less approximation for an API-only control
plane, where pods never run: a revision is Ready once its Deployment's pods exist.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from e2e.knative_double.double import DEFAULT_DOMAIN, DEFAULT_QUEUE_PROXY_IMAGE, KnativeServingDouble, install
from e2e.knative_double.revision import READINESS_MODES, READINESS_PODS
from manager.cli import run_manager
from manager.manager import Manager

PROG = "python -m e2e.knative_double"
OFF_BY_DEFAULT = ("--metrics-addr", "--health-probe-addr")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Knative Serving test double: revisions, Deployments, Services and ksvc status as "
        "Knative Serving v1.10.2 makes them.",
        epilog="Every kserve-manager flag (--kubeconfig, --log-level, --max-concurrent-reconciles, ...) is "
        "accepted too; the metrics and probe servers are off unless their address is given.",
    )
    parser.add_argument(
        "--domain", default=DEFAULT_DOMAIN, help=f"Knative's default domain [{DEFAULT_DOMAIN}]"
    )
    parser.add_argument(
        "--queue-proxy-image",
        default=DEFAULT_QUEUE_PROXY_IMAGE,
        help="queue-proxy image when knative-serving/config-deployment sets no queue-sidecar-image",
    )
    parser.add_argument(
        "--revision-readiness",
        choices=READINESS_MODES,
        default=READINESS_PODS,
        help="when a revision is Ready: 'pods' when its pods are Ready (needs nodes), 'deployment' once its "
        f"Deployment's pods exist (node-less control plane) [{READINESS_PODS}]",
    )
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        KnativeServingDouble.validate(args.domain, args.queue_proxy_image)
    except ValueError as exc:
        parser.error(str(exc))
    defaults = [f"{flag}=0" for flag in OFF_BY_DEFAULT if not any(a.split("=")[0] == flag for a in rest)]

    def setup(manager: Manager) -> None:
        install(
            manager,
            revision_readiness=args.revision_readiness,
            domain=args.domain,
            queue_proxy_image=args.queue_proxy_image,
            max_concurrent_reconciles=max(manager.options.max_concurrent_reconciles, 4),
        )

    return run_manager(setup, [*defaults, *rest])


if __name__ == "__main__":
    sys.exit(main())
