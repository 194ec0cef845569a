"""The Service in front of a RawDeployment component's pods.

Named and labelled like the component's Deployment (`reconcilers.deployment.component_metadata`) and
selecting its pods by `app: isvc.<name>`, it is what the Ingress, the transformer (`--predictor_host`) and
in-cluster clients call. Its ports are KServe v0.11's:

- the first container port is published on port 80 (`CommonDefaultHttpPort`) with that port's name and
  protocol, every further container port on its own number (protocol TCP unless given);
- a container without ports gets one port named like the component, 80 -> 8080;
- with a logger or a batcher, port 80 targets the agent (9081), which forwards to the model server.
"""

from __future__ import annotations

from typing import Any, Final

from apis import constants as c
from apis.inferenceservice import InferenceService
from manager.client import SERVICES, Object
from reconcilers.components import Component
from reconcilers.deployment import DEFAULT_HTTP_PORT, component_metadata

SERVICE_PORT: Final = 80
AGENT_PORT: Final = 9081


def _ports(built: Component) -> list[Object]:
    containers = built.pod_spec.get("containers") or []
    if not containers:
        return []
    container_ports: list[Any] = containers[0].get("ports") or []
    if not container_ports:
        return [
            {"name": built.name, "port": SERVICE_PORT, "targetPort": DEFAULT_HTTP_PORT, "protocol": "TCP"}
        ]
    first = container_ports[0]
    published: Object = {}
    if first.get("name"):
        published["name"] = first["name"]
    published["port"] = SERVICE_PORT
    published["targetPort"] = first.get("containerPort")
    if first.get("protocol"):
        published["protocol"] = first["protocol"]
    ports = [published]
    for port in container_ports[1:]:
        extra: Object = {}
        if port.get("name"):
            extra["name"] = port["name"]
        extra["port"] = port.get("containerPort")
        extra["targetPort"] = port.get("containerPort")
        extra["protocol"] = port.get("protocol") or "TCP"
        ports.append(extra)
    return ports


def desired_service(isvc: InferenceService, built: Component) -> Object:
    """The ClusterIP Service of one built component (see the module docstring for its ports)."""
    ports = _ports(built)
    if ports and (built.spec.logger is not None or built.spec.batcher is not None):
        ports[0]["targetPort"] = AGENT_PORT
    spec: Object = {"selector": {c.RAW_APP_LABEL: c.raw_app_label(built.name)}}
    if ports:
        spec["ports"] = ports
    return {
        "apiVersion": SERVICES.api_version,
        "kind": SERVICES.kind,
        "metadata": component_metadata(isvc, built),
        "spec": spec,
    }
