"""A Knative Serving test double for the offline local control plane (see `double.py` for what and why)."""

from e2e.knative_double.double import (
    CONTROLLER_NAME,
    DEFAULT_DOMAIN,
    DEFAULT_QUEUE_PROXY_IMAGE,
    FAIL_REVISION_ANNOTATION,
    KSVC,
    Failure,
    KnativeServingDouble,
    Revision,
    install,
)

__all__ = [
    "CONTROLLER_NAME",
    "DEFAULT_DOMAIN",
    "DEFAULT_QUEUE_PROXY_IMAGE",
    "FAIL_REVISION_ANNOTATION",
    "KSVC",
    "Failure",
    "KnativeServingDouble",
    "Revision",
    "install",
]
