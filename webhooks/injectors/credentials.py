"""Model-storage credentials for the containers that download models (KServe's `CredentialBuilder`).

The storage initializer and the agent's model puller read from S3 or GCS with credentials the user attached
to the pod's ServiceAccount (its `secrets` list), or to the pod directly through the annotation named by
`credentials.storageSecretNameAnnotation`, or, for the `storage:` spec, from the `storage-config` secret.
This module turns those secrets into env vars and volumes on one container, as KServe v0.11 does:

- ServiceAccount missing: nothing injected, not an error (KServe logs and continues).
- ServiceAccount annotated `eks.amazonaws.com/role-arn` (IRSA): S3 endpoint/region/... env vars from the
  ServiceAccount's annotations or the config, no keys.
- Per secret, the first match wins: the S3 secret-key entry -> `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
  secretKeyRefs plus the S3 settings from the secret's `serving.kserve.io/s3-*` annotations (falling back
  to the config); the GCS credential file -> volume `user-gcp-sa` at `/var/secrets/` and
  `GOOGLE_APPLICATION_CREDENTIALS`. Azure, HTTPS-header and HDFS secrets are not implemented and are
  skipped like any unrecognised secret.

The lookups go through the small `CredentialLookup` protocol so the logic is testable without an API
server; `ClientCredentialLookup` is the production implementation (live GETs with the client's timeout, as
KServe does, so the manager needs `get` on ServiceAccounts and Secrets, never `list`/`watch` on Secrets).
A secret named by the pod annotation or by the storage spec that does not exist is an error; a stale entry
in a ServiceAccount's `secrets` list is skipped.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from apis.config import CredentialsConfig, S3Config
from apis.constants import STORAGE_SPEC_KEY_ANNOTATION, STORAGE_SPEC_PARAM_ANNOTATION
from manager.client import SECRETS, SERVICEACCOUNTS, Client
from manager.errors import NotFound
from webhooks.injectors.pod import (
    Container,
    MutationError,
    Pod,
    ensure_mount,
    ensure_volume,
    get_annotations,
    merge_env,
)

log = logging.getLogger(__name__)

IRSA_ROLE_ARN_ANNOTATION = "eks.amazonaws.com/role-arn"
S3_ENDPOINT_ANNOTATION = "serving.kserve.io/s3-endpoint"
S3_USE_HTTPS_ANNOTATION = "serving.kserve.io/s3-usehttps"
S3_REGION_ANNOTATION = "serving.kserve.io/s3-region"
S3_VERIFY_SSL_ANNOTATION = "serving.kserve.io/s3-verifyssl"
S3_USE_VIRTUAL_BUCKET_ANNOTATION = "serving.kserve.io/s3-usevirtualbucket"
S3_USE_ANONYMOUS_CREDENTIAL_ANNOTATION = "serving.kserve.io/s3-useanoncredential"
S3_CA_BUNDLE_ANNOTATION = "serving.kserve.io/s3-cabundle"

GCS_VOLUME_NAME = "user-gcp-sa"
GCS_MOUNT_PATH = "/var/secrets/"
GCS_CREDENTIAL_ENV = "GOOGLE_APPLICATION_CREDENTIALS"

STORAGE_CONFIG_ENV = "STORAGE_CONFIG"
STORAGE_OVERRIDE_CONFIG_ENV = "STORAGE_OVERRIDE_CONFIG"
URI_SCHEME_PLACEHOLDER = "<scheme-placeholder>"

# (annotation, env var, config attribute) for the S3 settings after the endpoint, in KServe's order.
_S3_SETTINGS = (
    (S3_REGION_ANNOTATION, "AWS_DEFAULT_REGION", "s3_region"),
    (S3_VERIFY_SSL_ANNOTATION, "S3_VERIFY_SSL", "s3_verify_ssl"),
    (S3_USE_VIRTUAL_BUCKET_ANNOTATION, "S3_USER_VIRTUAL_BUCKET", "s3_use_virtual_bucket"),
    (S3_USE_ANONYMOUS_CREDENTIAL_ANNOTATION, "awsAnonymousCredential", "s3_use_anonymous_credential"),
    (S3_CA_BUNDLE_ANNOTATION, "AWS_CA_BUNDLE", "s3_ca_bundle"),
)


class CredentialLookup(Protocol):
    """Read access to the pod namespace's ServiceAccounts and Secrets; None when the object does not exist."""

    async def get_service_account(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The ServiceAccount as JSON, or None if not found."""
        ...

    async def get_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The Secret as JSON (`data` base64-encoded, as the API serves it), or None if not found."""
        ...


class ClientCredentialLookup:
    """`CredentialLookup` over the manager's API client (each call bounded by the client's timeout)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def get_service_account(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """GET the ServiceAccount; None on 404."""
        try:
            return await self._client.get(SERVICEACCOUNTS, name, namespace)
        except NotFound:
            return None

    async def get_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """GET the Secret; None on 404."""
        try:
            return await self._client.get(SECRETS, name, namespace)
        except NotFound:
            return None


def _metadata_annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return (
        {k: v for k, v in annotations.items() if isinstance(v, str)} if isinstance(annotations, dict) else {}
    )


def _secret_data(secret: Mapping[str, Any]) -> Mapping[str, Any]:
    data = secret.get("data")
    return data if isinstance(data, dict) else {}


def s3_setting_envs(annotations: Mapping[str, str], config: S3Config) -> list[dict[str, Any]]:
    """The S3 endpoint and settings env vars: each from the annotation if present, else from the config."""
    envs: list[dict[str, Any]] = []
    endpoint = annotations.get(S3_ENDPOINT_ANNOTATION)
    use_https = annotations.get(S3_USE_HTTPS_ANNOTATION) if endpoint is not None else None
    if endpoint is None and config.s3_endpoint:
        endpoint, use_https = config.s3_endpoint, config.s3_use_https or None
    if endpoint is not None:
        scheme = "http" if use_https == "0" else "https"
        if use_https is not None:
            envs.append({"name": "S3_USE_HTTPS", "value": use_https})
        envs.append({"name": "S3_ENDPOINT", "value": endpoint})
        envs.append({"name": "AWS_ENDPOINT_URL", "value": f"{scheme}://{endpoint}"})
    for annotation, env_name, attribute in _S3_SETTINGS:
        value = annotations.get(annotation)
        if value is None:
            value = getattr(config, attribute) or None
        if value is not None:
            envs.append({"name": env_name, "value": value})
    return envs


def _secret_key_env(env_name: str, secret_name: str, key: str) -> dict[str, Any]:
    return {"name": env_name, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}


class CredentialInjector:
    """Adds storage credentials to one container of a pod, from the config and the namespace's secrets."""

    def __init__(self, config: Callable[[], CredentialsConfig], lookup: CredentialLookup) -> None:
        self._config = config
        self.lookup = lookup

    @property
    def config(self) -> CredentialsConfig:
        """The `credentials` key, read only when a credential is actually needed."""
        return self._config()

    async def _get(self, kind: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        try:
            if kind == "ServiceAccount":
                found = await self.lookup.get_service_account(namespace, name)
            else:
                found = await self.lookup.get_secret(namespace, name)
        except Exception as exc:  # an API error or timeout must become an admission error, not a crash
            raise MutationError(f"cannot read {kind} {namespace}/{name}: {exc}") from exc
        if found is not None and not isinstance(found, Mapping):
            raise MutationError(
                f"cannot read {kind} {namespace}/{name}: lookup returned {type(found).__name__}"
            )
        return found

    async def inject_service_account_credentials(
        self, pod: Pod, namespace: str, container: Container
    ) -> None:
        """KServe's `CreateSecretVolumeAndEnv`: the ServiceAccount's (or annotated) secrets."""
        account_name = pod["spec"].get("serviceAccountName") or "default"
        account = await self._get("ServiceAccount", namespace, account_name)
        if account is None:
            log.info(
                "ServiceAccount %s/%s not found; injecting no storage credentials", namespace, account_name
            )
            return
        account_annotations = _metadata_annotations(account)
        if IRSA_ROLE_ARN_ANNOTATION in account_annotations:
            merge_env(container, s3_setting_envs(account_annotations, self.config.s3))
        named = get_annotations(pod).get(self.config.storage_secret_name_annotation)
        if named is not None:
            secret = await self._get("Secret", namespace, named)
            if secret is None:
                raise MutationError(
                    f"Secret {namespace}/{named} named by annotation "
                    f'"{self.config.storage_secret_name_annotation}" does not exist'
                )
            self._apply_secret(pod, container, named, secret)
            return
        refs = account.get("secrets") or []
        for ref in refs if isinstance(refs, list) else []:
            name = ref.get("name") if isinstance(ref, dict) else None
            if not isinstance(name, str) or not name:
                continue
            secret = await self._get("Secret", namespace, name)
            if secret is None:
                log.info(
                    "Secret %s/%s listed by ServiceAccount %s not found; skipped",
                    namespace,
                    name,
                    account_name,
                )
                continue
            self._apply_secret(pod, container, name, secret)

    def _apply_secret(self, pod: Pod, container: Container, name: str, secret: Mapping[str, Any]) -> None:
        data = _secret_data(secret)
        s3 = self.config.s3
        gcs_file = self.config.gcs.gcs_credential_file_name
        if s3.s3_secret_access_key_name in data:
            envs = [
                _secret_key_env("AWS_ACCESS_KEY_ID", name, s3.s3_access_key_id_name),
                _secret_key_env("AWS_SECRET_ACCESS_KEY", name, s3.s3_secret_access_key_name),
                *s3_setting_envs(_metadata_annotations(secret), s3),
            ]
            merge_env(container, envs)
        elif gcs_file in data:
            ensure_volume(pod, {"name": GCS_VOLUME_NAME, "secret": {"secretName": name}})
            ensure_mount(container, {"name": GCS_VOLUME_NAME, "mountPath": GCS_MOUNT_PATH, "readOnly": True})
            merge_env(container, [{"name": GCS_CREDENTIAL_ENV, "value": GCS_MOUNT_PATH + gcs_file}])
        else:
            log.debug("Secret %s holds no S3 or GCS credentials; skipped", name)

    async def inject_storage_spec_credentials(self, pod: Pod, namespace: str, container: Container) -> None:
        """KServe's `CreateStorageSpecSecretEnvs`: `STORAGE_CONFIG` and overrides from the storage spec."""
        pod_annotations = get_annotations(pod)
        params = self._override_params(pod_annotations)
        secret_name = pod_annotations.get(self.config.storage_secret_name_annotation) or (
            self.config.storage_spec_secret_name
        )
        secret = await self._get("Secret", namespace, secret_name)
        if secret is None:
            raise MutationError(f"storage spec Secret {namespace}/{secret_name} does not exist")
        data = _secret_data(secret)
        key = pod_annotations.get(STORAGE_SPEC_KEY_ANNOTATION, "")
        if key:
            if key not in data:
                raise MutationError(
                    f"storage key {key!r} not found in storage Secret {namespace}/{secret_name}"
                )
        else:
            key = f"default_{params['type']}" if "type" in params else "default"
            if key not in data:
                raise MutationError(
                    f"default storage key {key!r} not found in storage Secret {namespace}/{secret_name}"
                )
        stored = self._decode_storage_entry(data[key], key, secret_name)
        merge_env(
            container,
            [
                _secret_key_env(STORAGE_CONFIG_ENV, secret_name, key),
                {
                    "name": STORAGE_OVERRIDE_CONFIG_ENV,
                    "value": json.dumps(params, sort_keys=True, separators=(",", ":")),
                },
            ],
        )
        args = container.get("args") or []
        prefix = URI_SCHEME_PLACEHOLDER + "://"
        if args and args[0].startswith(prefix):
            storage_type = params.get("type") or stored.get("type", "")
            bucket = params.get("bucket") or stored.get("bucket", "")
            if storage_type not in ("s3", "gs"):
                raise MutationError(
                    f"unsupported storage type {storage_type!r} in storage Secret key {key!r}"
                )
            args[0] = f"{storage_type}://{bucket}/{args[0].removeprefix(prefix)}"

    @staticmethod
    def _override_params(pod_annotations: Mapping[str, str]) -> dict[str, str]:
        raw = pod_annotations.get(STORAGE_SPEC_PARAM_ANNOTATION)
        if raw is None:
            return {}
        try:
            params = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise MutationError(
                f'annotation "{STORAGE_SPEC_PARAM_ANNOTATION}" is not valid JSON: {exc.msg}'
            ) from None
        if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
            raise MutationError(
                f'annotation "{STORAGE_SPEC_PARAM_ANNOTATION}" must be a JSON object of strings'
            )
        return params

    @staticmethod
    def _decode_storage_entry(value: object, key: str, secret_name: str) -> dict[str, str]:
        where = f"storage Secret {secret_name} key {key!r}"
        try:
            decoded = json.loads(base64.b64decode(str(value), validate=True))
        except (binascii.Error, ValueError):
            raise MutationError(f"{where} is not base64-encoded JSON") from None
        if not isinstance(decoded, dict):
            raise MutationError(f"{where} must hold a JSON object")
        return {k: v for k, v in decoded.items() if isinstance(v, str)}
