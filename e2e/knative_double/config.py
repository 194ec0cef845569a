"""Knative Serving's settings the double reads: ConfigMap `config-deployment` and per-revision annotations.

Facts from Knative Serving v1.10.2 (tag knative-v1.10.2, commit 500756c):

* `pkg/deployment/config.go`: ConfigMap `config-deployment` in `knative-serving`; `queue-sidecar-image`
  (older key `queueSidecarImage`), `progress-deadline` (older key `progressDeadline`, a Go duration, default
  600s, positive and whole seconds), `queue-sidecar-cpu-request` (default `25m`) and the other queue-proxy
  resource keys. A ConfigMap that does not parse is rejected and the last good configuration stays.
  Knative refuses a ConfigMap without an image; the double falls back to its `--queue-proxy-image` flag.
* `pkg/apis/autoscaling/register.go`: `autoscaling.knative.dev/min-scale` (`minScale`), `max-scale`
  (`maxScale`), `initial-scale` (`initialScale`); integer values (`strconv.ParseInt`, 32 bit).
* `pkg/apis/serving/register.go`: `serving.knative.dev/progress-deadline` on a revision overrides the
  ConfigMap's deadline for that revision's Deployment.

config-autoscaler is not read: its defaults (initial-scale 1, zero initial scale not allowed, min-scale 0,
max-scale 0 = unbounded) are what the double uses.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

SYSTEM_NAMESPACE = "knative-serving"
CONFIG_DEPLOYMENT = "config-deployment"
QUEUE_SIDECAR_IMAGE_KEYS = ("queue-sidecar-image", "queueSidecarImage")
PROGRESS_DEADLINE_KEYS = ("progress-deadline", "progressDeadline")
DEFAULT_PROGRESS_DEADLINE = 600.0
ACTIVATION_TIMEOUT_BUFFER = 30.0
"""Seconds the autoscaler waits past the progress deadline before it gives up activating a revision."""

QUEUE_RESOURCE_KEYS = {
    ("requests", "cpu"): ("queue-sidecar-cpu-request", "queueSidecarCPURequest"),
    ("requests", "memory"): ("queue-sidecar-memory-request", "queueSidecarMemoryRequest"),
    ("requests", "ephemeral-storage"): (
        "queue-sidecar-ephemeral-storage-request",
        "queueSidecarEphemeralStorageRequest",
    ),
    ("limits", "cpu"): ("queue-sidecar-cpu-limit", "queueSidecarCPULimit"),
    ("limits", "memory"): ("queue-sidecar-memory-limit", "queueSidecarMemoryLimit"),
    ("limits", "ephemeral-storage"): (
        "queue-sidecar-ephemeral-storage-limit",
        "queueSidecarEphemeralStorageLimit",
    ),
}
DEFAULT_QUEUE_CPU_REQUEST = "25m"

MIN_SCALE_KEYS = ("autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/minScale")
MAX_SCALE_KEYS = ("autoscaling.knative.dev/max-scale", "autoscaling.knative.dev/maxScale")
INITIAL_SCALE_KEYS = ("autoscaling.knative.dev/initial-scale", "autoscaling.knative.dev/initialScale")
PROGRESS_DEADLINE_ANNOTATION = "serving.knative.dev/progress-deadline"
DEFAULT_INITIAL_SCALE = 1

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[numkMGTPE])?$")


def parse_duration(text: str) -> float:
    """Seconds of a Go `time.ParseDuration` string (`600s`, `1m30s`, `1.5h`, `0`); ValueError otherwise."""
    s = text.strip()
    sign = 1.0
    if s and s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total, pos = 0.0, 0
    while pos < len(s):
        match = _DURATION_PART.match(s, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return sign * total


def _first(data: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    """Knative's key priority: the first key present wins (the new spelling before the old one)."""
    for key in keys:
        if key in data:
            return str(data[key])
    return None


@dataclass(frozen=True, slots=True)
class DeploymentConfig:
    """What the double uses of `config-deployment`."""

    queue_sidecar_image: str
    progress_deadline: float = DEFAULT_PROGRESS_DEADLINE
    queue_resources: dict[str, dict[str, str]] = field(
        default_factory=lambda: {"requests": {"cpu": DEFAULT_QUEUE_CPU_REQUEST}}
    )

    @classmethod
    def parse(cls, data: Mapping[str, Any], fallback_image: str) -> DeploymentConfig:
        """The configuration of a ConfigMap's data; ValueError for a value Knative would reject."""
        image = _first(data, QUEUE_SIDECAR_IMAGE_KEYS)
        if image is not None and not image.strip():
            raise ValueError("queue-sidecar-image cannot be empty")
        deadline = DEFAULT_PROGRESS_DEADLINE
        raw = _first(data, PROGRESS_DEADLINE_KEYS)
        if raw is not None:
            deadline = parse_duration(raw)
            if deadline <= 0:
                raise ValueError(f"progress-deadline cannot be a non-positive duration, was {raw!r}")
            if deadline != int(deadline):
                raise ValueError(f"progress-deadline must be rounded to a whole second, was {raw!r}")
        resources: dict[str, dict[str, str]] = {"requests": {"cpu": DEFAULT_QUEUE_CPU_REQUEST}}
        for (kind, name), keys in QUEUE_RESOURCE_KEYS.items():
            value = _first(data, keys)
            if value is None:
                continue
            if not _QUANTITY.match(value.strip()):
                raise ValueError(f"{keys[0]}: invalid quantity {value!r}")
            resources.setdefault(kind, {})[name] = value.strip()
        return cls(image.strip() if image else fallback_image, deadline, resources)


def annotation_int(annotations: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
    """An integer annotation (first present key); None when absent or not a 32-bit integer."""
    raw = _first(annotations, keys)
    if raw is None:
        return None
    try:
        value = int(raw.strip(), 10)
    except ValueError:
        return None
    return value if -(2**31) <= value < 2**31 else None


@dataclass(frozen=True, slots=True)
class ScaleBounds:
    """A revision's scale settings from its annotations (config-autoscaler defaults otherwise)."""

    min_scale: int = 0
    max_scale: int = 0
    initial_scale: int = DEFAULT_INITIAL_SCALE

    @classmethod
    def of(cls, annotations: Mapping[str, Any]) -> ScaleBounds:
        minimum = max(annotation_int(annotations, MIN_SCALE_KEYS) or 0, 0)
        maximum = max(annotation_int(annotations, MAX_SCALE_KEYS) or 0, 0)
        initial = annotation_int(annotations, INITIAL_SCALE_KEYS)
        # A zero initial scale needs config-autoscaler's allow-zero-initial-scale, which is off by default.
        if initial is None or initial < 1:
            initial = DEFAULT_INITIAL_SCALE
        return cls(minimum, maximum, initial)


def progress_deadline(annotations: Mapping[str, Any], config: DeploymentConfig) -> float:
    """The revision's progress deadline in seconds: its annotation if it parses, else the ConfigMap's."""
    raw = annotations.get(PROGRESS_DEADLINE_ANNOTATION)
    if raw is not None:
        try:
            value = parse_duration(str(raw))
        except ValueError:
            log.warning("ignoring unparsable %s=%r", PROGRESS_DEADLINE_ANNOTATION, raw)
        else:
            if value > 0:
                return value
    return config.progress_deadline
