"""Registration of KServe's admission webhooks on the manager's webhook HTTPS server.

The paths are KServe's (they are what the shipped Mutating/ValidatingWebhookConfigurations call). Handlers
read `inferenceservice-config` and the ClusterStorageContainers from the shared informer cache, never from
the API server per request, so an admission costs no extra round trip for configuration. The server starts
before the caches (controller-runtime's order) but `/readyz` stays red until they have synced, so no traffic
reaches it before then.

In self-signed mode the certificate is shared by all replicas through the Secret named by `SECRET_NAME` (the
variable KServe's Deployment already sets to the cert-manager Secret's name); without it, it stays in this
process (`make run`, tests), which is right for one replica only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from apis import constants as c
from apis.resources import CLUSTER_STORAGE_CONTAINERS
from manager.client import CONFIGMAPS
from manager.manager import Manager
from webhooks.certs import SECRET_NAME_ENV, setup_self_signed
from webhooks.inferenceservice import (
    InferenceServiceDefaulter,
    InferenceServiceValidator,
)
from webhooks.injectors.credentials import ClientCredentialLookup
from webhooks.pod_mutator import PodMutator, PodMutatorHandler
from webhooks.server import WebhookServer
from webhooks.trainedmodel import TrainedModelValidator

POD_MUTATOR_PATH = "/mutate-pods"
ISVC_DEFAULTER_PATH = "/mutate-serving-kserve-io-v1beta1-inferenceservice"
ISVC_VALIDATOR_PATH = "/validate-serving-kserve-io-v1beta1-inferenceservice"
TM_VALIDATOR_PATH = "/validate-serving-kserve-io-v1alpha1-trainedmodel"


def setup_webhooks(manager: Manager, environ: Mapping[str, str] | None = None) -> WebhookServer:
    """Create the webhook server with every KServe webhook, and its certificate management when asked."""
    options = manager.options
    namespace = options.namespace
    configmaps = manager.cache.informer(CONFIGMAPS, namespace).store
    storage_container_store = manager.cache.informer(CLUSTER_STORAGE_CONTAINERS).store

    def config() -> Mapping[str, str] | None:
        # Read in place, not deep-copied per admission: the store replaces objects, never edits them.
        configmap = configmaps.get(namespace, c.INFERENCE_SERVICE_CONFIGMAP)
        return None if configmap is None else configmap.get("data") or {}

    def storage_containers() -> list[Mapping[str, Any]]:
        # Read in place like the ConfigMap: the injector and the validator only read them.
        return list(storage_container_store)

    if options.webhook_self_signed:
        setup_self_signed(
            manager,
            namespace=namespace,
            cert_dir=options.webhook_cert_dir,
            secret_name=(os.environ if environ is None else environ).get(SECRET_NAME_ENV, ""),
            service_name=options.webhook_service_name,
            ip_addresses=options.webhook_cert_ips,
        )
    server = WebhookServer(
        host=options.webhook_host, port=options.webhook_port, cert_dir=options.webhook_cert_dir
    )
    mutator = PodMutator(config, ClientCredentialLookup(manager.client), storage_containers)
    server.register(POD_MUTATOR_PATH, PodMutatorHandler(mutator))
    server.register(ISVC_DEFAULTER_PATH, InferenceServiceDefaulter(config))
    server.register(ISVC_VALIDATOR_PATH, InferenceServiceValidator(config, storage_containers))
    server.register(TM_VALIDATOR_PATH, TrainedModelValidator())
    manager.add_runnable(server, needs_leader=False)
    manager.add_readyz_check("webhook", server.check)
    return server
