"""Istio networking names KServe v0.11 uses for its ingress VirtualService.

KServe v0.11 writes `networking.istio.io/v1alpha3` VirtualServices (HEAD moved to v1beta1); the shape is the
same, and the version here is the one the controller writes and watches.
"""

from __future__ import annotations

from typing import Final

ISTIO_NETWORKING_GROUP: Final = "networking.istio.io"
ISTIO_NETWORKING_VERSION: Final = "v1alpha3"
VIRTUAL_SERVICE_KIND: Final = "VirtualService"
