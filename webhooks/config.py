"""The `inferenceservice-config` ConfigMap as the admission handlers read it: parsed again only on change.

Every pod and InferenceService admission needs the configuration, so the handlers share one way to get it:
a provider callable (the informer cache in production) returns the ConfigMap's data, and the parsed
`InferenceServicesConfig` is kept until that data differs. A missing ConfigMap or a failing provider is a
`LookupError` with one line each handler turns into its own admission error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from apis.config import CONFIGMAP_NAME, InferenceServicesConfig

ConfigProvider = Callable[[], Mapping[str, str] | None]
"""Returns the `inferenceservice-config` ConfigMap's data, or None when the ConfigMap does not exist."""

SHIPPED_CONFIG = InferenceServicesConfig.from_configmap({})
"""The ConfigMap values KServe ships, for callers without a provider."""


class ConfigView:
    """The parsed ConfigMap, rebuilt only when the provider's data changes."""

    def __init__(self, provider: ConfigProvider | None) -> None:
        self._provider = provider
        self._config: InferenceServicesConfig | None = None

    def current(self) -> InferenceServicesConfig:
        """The current config (the shipped one without a provider); `LookupError` when it cannot be read."""
        if self._provider is None:
            return SHIPPED_CONFIG
        try:
            data = self._provider()
        except Exception as exc:  # cache not synced, API error: an admission error, not a crash
            raise LookupError(f"cannot read ConfigMap {CONFIGMAP_NAME}: {exc}") from exc
        if data is None:
            raise LookupError(f"ConfigMap {CONFIGMAP_NAME} not found in the controller namespace")
        if self._config is None or self._config.data != data:
            self._config = InferenceServicesConfig.from_configmap(data)
        return self._config
