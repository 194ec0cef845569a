"""A Knative Serving test double for the local control plane (see `double.py` for what and why)."""

from e2e.knative_double.double import (
    CONTROLLER_NAME,
    DEFAULT_DOMAIN,
    DEFAULT_QUEUE_PROXY_IMAGE,
    FAIL_REVISION_ANNOTATION,
    KnativeServingDouble,
    install,
)
from e2e.knative_double.history import Failure, Revision
from e2e.knative_double.resources import KSVC
from e2e.knative_double.revision import READINESS_DEPLOYMENT, READINESS_MODES, READINESS_PODS

__all__ = [
    "CONTROLLER_NAME",
    "DEFAULT_DOMAIN",
    "DEFAULT_QUEUE_PROXY_IMAGE",
    "FAIL_REVISION_ANNOTATION",
    "KSVC",
    "READINESS_DEPLOYMENT",
    "READINESS_MODES",
    "READINESS_PODS",
    "Failure",
    "KnativeServingDouble",
    "Revision",
    "install",
]
