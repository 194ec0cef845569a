"""`kserve-manager`: the KServe controller manager process.

Wires the domain onto the generic runtime in `manager/` (flags, signals and exit codes live in
`manager.cli`): the InferenceService controller, the TrainedModel controller (each with its own event
broadcaster) and the admission webhooks. Like KServe, it reads `inferenceservice-config` once at start-up to
decide what to watch: no Istio VirtualService watch when `ingress.disableIstioVirtualHost` is true (the CRD
may not even exist then). Unlike KServe, an unreadable ConfigMap does not stop the process: it is logged, the
defaults are used for the watches, and every InferenceService reports the problem in its conditions.
"""

from __future__ import annotations

import logging
import sys

from apis import constants as c
from apis.config import ConfigError, InferenceServicesConfig
from controllers.inferenceservice import setup_inferenceservice_controller
from controllers.trainedmodel import setup_trainedmodel_controller
from manager.cli import run_manager
from manager.client import CONFIGMAPS
from manager.errors import ApiError
from manager.manager import Manager
from webhooks.setup import setup_webhooks

log = logging.getLogger(__name__)

CACHE_TRANSFORMS = True
"""Whether the InferenceService controller shrinks what it caches (nothing else in this process reads the
dropped fields); a benchmark turns it off to measure the difference."""


async def watch_virtual_services(manager: Manager) -> bool:
    """Whether the Istio VirtualService kind must be watched, from the ConfigMap at start-up."""
    namespace = manager.options.namespace
    try:
        configmap = await manager.client.get(CONFIGMAPS, c.INFERENCE_SERVICE_CONFIGMAP, namespace)
        config = InferenceServicesConfig.from_configmap(configmap.get("data") or {})
        return not config.ingress().disable_istio_virtual_host
    except (ApiError, ConfigError) as exc:
        log.warning(
            "cannot read %s/%s at start-up (%s); watching VirtualServices",
            namespace,
            c.INFERENCE_SERVICE_CONFIGMAP,
            exc,
        )
        return True


async def setup(manager: Manager) -> None:
    """Register every controller and webhook of the KServe manager."""
    workers = manager.options.max_concurrent_reconciles
    setup_inferenceservice_controller(
        manager,
        max_concurrent_reconciles=workers,
        watch_virtual_services=await watch_virtual_services(manager),
        cache_transforms=CACHE_TRANSFORMS,
    )
    setup_trainedmodel_controller(manager, max_concurrent_reconciles=workers)
    setup_webhooks(manager)


def main() -> None:
    """Console-script entry point."""
    sys.exit(run_manager(setup))


if __name__ == "__main__":
    main()
