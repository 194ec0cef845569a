"""Model-storage credentials for the containers that download models (KServe's `CredentialBuilder`).

The storage initializer and the agent's model puller read from object stores with credentials the user
attached to the pod's ServiceAccount (its `secrets` list), or to the pod directly through the annotation
named by `credentials.storageSecretNameAnnotation`, or, for the `storage:` spec, from the `storage-config`
Secret. This module turns those Secrets into env vars and volumes on one container, as KServe v0.11 does:

- ServiceAccount missing: nothing injected, not an error (KServe logs and continues).
- ServiceAccount annotated `eks.amazonaws.com/role-arn` (IRSA): the S3 settings env vars from the
  ServiceAccount's annotations or the config, no keys.
- Per Secret, the first of these that its data has decides, in KServe's order: the S3 secret-key entry
  (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` secretKeyRefs, then the S3 settings from the Secret's
  `serving.kserve.io/s3-*` annotations, else the config); the GCS credential file (volume `user-gcp-sa` at
  `/var/secrets/`, `GOOGLE_APPLICATION_CREDENTIALS`); `AZ_CLIENT_ID` or `AZURE_CLIENT_ID` (the four
  `AZURE_*` env vars, each from the legacy `AZ_*` key when the Secret has it); `AZURE_STORAGE_ACCESS_KEY`;
  `https-host` (env `<host>-headers` holding the Secret's `headers`, when it has them); `HDFS_NAMENODE`
  (the whole Secret mounted read-only at `/var/secrets/kserve-hdfscreds`). Other Secrets are skipped.
- Storage spec (`CreateStorageSpecSecretEnvs`): `STORAGE_CONFIG` refers to the Secret's entry (the key the
  spec names, else `default_<type>`, else `default` when no type is given), `STORAGE_OVERRIDE_CONFIG` holds
  the spec's parameters as Go would encode them, and a `<scheme-placeholder>://` URI becomes
  `s3://<bucket>/<path>` or `<type>://<path>`. A missing Secret or default entry is fine as long as the type
  is known; a named key that is missing, an unsupported or empty type in the entry, no type at all, and an
  S3 path without a bucket are admission errors.

The lookups go through the small `CredentialLookup` protocol so the logic is testable without an API
server; `ClientCredentialLookup` is the production implementation (live GETs with the client's timeout, as
KServe does, so the manager needs `get` on ServiceAccounts and Secrets, never `list`/`watch` on Secrets).
A Secret named by the pod annotation that does not exist is an error, as in KServe.

Deliberate differences (README): env vars are set by name, never duplicated (KServe appends all but the S3
ones, so two Secrets of a kind give a container two `GOOGLE_APPLICATION_CREDENTIALS` and two mounts at one
path, which the API server rejects); and a stale entry in a ServiceAccount's `secrets` list (the Secret no
longer exists) is skipped with a log line, where KServe fails every pod using that ServiceAccount.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from apis.config import CredentialsConfig, S3Config
from apis.constants import STORAGE_SPEC_KEY_ANNOTATION, STORAGE_SPEC_PARAM_ANNOTATION
from apis.storage import go_json
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

IRSA_ROLE_ARN_ANNOTATION: Final = "eks.amazonaws.com/role-arn"
S3_ENDPOINT_ANNOTATION: Final = "serving.kserve.io/s3-endpoint"
S3_USE_HTTPS_ANNOTATION: Final = "serving.kserve.io/s3-usehttps"
S3_REGION_ANNOTATION: Final = "serving.kserve.io/s3-region"
S3_VERIFY_SSL_ANNOTATION: Final = "serving.kserve.io/s3-verifyssl"
S3_USE_VIRTUAL_BUCKET_ANNOTATION: Final = "serving.kserve.io/s3-usevirtualbucket"
S3_USE_ANONYMOUS_CREDENTIAL_ANNOTATION: Final = "serving.kserve.io/s3-useanoncredential"
S3_CA_BUNDLE_ANNOTATION: Final = "serving.kserve.io/s3-cabundle"

GCS_VOLUME_NAME: Final = "user-gcp-sa"
GCS_MOUNT_PATH: Final = "/var/secrets/"
GCS_CREDENTIAL_ENV: Final = "GOOGLE_APPLICATION_CREDENTIALS"

AZURE_STORAGE_ACCESS_KEY: Final = "AZURE_STORAGE_ACCESS_KEY"
AZURE_CLIENT_ID: Final = "AZURE_CLIENT_ID"
LEGACY_AZURE_CLIENT_ID: Final = "AZ_CLIENT_ID"
# The service-principal env vars, in KServe's order, each with the legacy data key that takes precedence.
_AZURE_KEYS: Final = (
    ("AZURE_SUBSCRIPTION_ID", "AZ_SUBSCRIPTION_ID"),
    ("AZURE_TENANT_ID", "AZ_TENANT_ID"),
    (AZURE_CLIENT_ID, LEGACY_AZURE_CLIENT_ID),
    ("AZURE_CLIENT_SECRET", "AZ_CLIENT_SECRET"),
)

HTTPS_HOST_KEY: Final = "https-host"
HTTPS_HEADERS_KEY: Final = "headers"
HTTPS_HEADERS_ENV_SUFFIX: Final = "-headers"

HDFS_NAMENODE_KEY: Final = "HDFS_NAMENODE"
HDFS_VOLUME_NAME: Final = "hdfs-secrets"
HDFS_MOUNT_PATH: Final = "/var/secrets/kserve-hdfscreds"

STORAGE_CONFIG_ENV: Final = "STORAGE_CONFIG"
STORAGE_OVERRIDE_CONFIG_ENV: Final = "STORAGE_OVERRIDE_CONFIG"
URI_SCHEME_PLACEHOLDER: Final = "<scheme-placeholder>"
DEFAULT_STORAGE_KEY: Final = "default"
STORAGE_SPEC_TYPES: Final = ("s3", "hdfs", "webhdfs")
"""Storage types a `storage-config` entry may name (KServe `SupportedStorageSpecTypes`)."""
BUCKET_STORAGE_TYPES: Final = ("s3",)
"""Types whose URI is `<type>://<bucket>/<path>` (KServe `StorageBucketTypes`)."""

# (annotation, env var, config attribute) of the S3 settings after the endpoint, in KServe's order.
_S3_SETTINGS: Final = (
    (S3_VERIFY_SSL_ANNOTATION, "S3_VERIFY_SSL", "s3_verify_ssl"),
    (S3_USE_ANONYMOUS_CREDENTIAL_ANNOTATION, "awsAnonymousCredential", "s3_use_anonymous_credential"),
    (S3_REGION_ANNOTATION, "AWS_DEFAULT_REGION", "s3_region"),
    (S3_USE_VIRTUAL_BUCKET_ANNOTATION, "S3_USER_VIRTUAL_BUCKET", "s3_use_virtual_bucket"),
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


def _decoded(value: object, where: str) -> str:
    """A Secret data value as text (invalid UTF-8 replaced, as Go's JSON encoding of a string does)."""
    try:
        return base64.b64decode(str(value), validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        raise MutationError(f"{where} is not base64-encoded") from None


def s3_setting_envs(annotations: Mapping[str, str], config: S3Config) -> list[dict[str, Any]]:
    """KServe `BuildS3EnvVars`: the endpoint env vars, then each setting from its annotation, else the config.

    An annotation that is present wins even when empty (it then suppresses the config's value); the config's
    `s3UseHttps` only shows as `S3_USE_HTTPS` when it is "0" (http), as in KServe.
    """
    envs: list[dict[str, Any]] = []
    endpoint = annotations.get(S3_ENDPOINT_ANNOTATION)
    use_https: str | None
    if endpoint is not None:
        use_https = annotations.get(S3_USE_HTTPS_ANNOTATION)
    elif config.s3_endpoint:
        endpoint = config.s3_endpoint
        use_https = "0" if config.s3_use_https == "0" else None
    if endpoint is not None:
        if use_https is not None:
            envs.append({"name": "S3_USE_HTTPS", "value": use_https})
        envs.append({"name": "S3_ENDPOINT", "value": endpoint})
        scheme = "http" if use_https == "0" else "https"
        envs.append({"name": "AWS_ENDPOINT_URL", "value": f"{scheme}://{endpoint}"})
    for annotation, env_name, attribute in _S3_SETTINGS:
        value = annotations[annotation] if annotation in annotations else getattr(config, attribute)
        if value:
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
            secret = await self._get("Secret", namespace, named) if named else None
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
        """KServe `mountSecretCredential`: the first kind of credential the Secret's data holds."""
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
        elif LEGACY_AZURE_CLIENT_ID in data or AZURE_CLIENT_ID in data:
            merge_env(
                container,
                [
                    _secret_key_env(env_name, name, legacy if legacy in data else env_name)
                    for env_name, legacy in _AZURE_KEYS
                ],
            )
        elif AZURE_STORAGE_ACCESS_KEY in data:
            merge_env(container, [_secret_key_env(AZURE_STORAGE_ACCESS_KEY, name, AZURE_STORAGE_ACCESS_KEY)])
        elif HTTPS_HOST_KEY in data:
            if HTTPS_HEADERS_KEY in data:
                where = f"Secret {name} key"
                host = _decoded(data[HTTPS_HOST_KEY], f"{where} {HTTPS_HOST_KEY!r}")
                headers = _decoded(data[HTTPS_HEADERS_KEY], f"{where} {HTTPS_HEADERS_KEY!r}")
                merge_env(container, [{"name": host + HTTPS_HEADERS_ENV_SUFFIX, "value": headers}])
        elif HDFS_NAMENODE_KEY in data:
            ensure_volume(pod, {"name": HDFS_VOLUME_NAME, "secret": {"secretName": name}})
            ensure_mount(
                container, {"name": HDFS_VOLUME_NAME, "mountPath": HDFS_MOUNT_PATH, "readOnly": True}
            )
        else:
            log.debug("Secret %s holds no storage credentials KServe knows; skipped", name)

    async def inject_storage_spec_credentials(self, pod: Pod, namespace: str, container: Container) -> None:
        """KServe's `CreateStorageSpecSecretEnvs` for the storage-initializer `container` (see the module)."""
        pod_annotations = get_annotations(pod)
        params = _override_params(pod_annotations)
        storage_type = params.get("type", "")
        bucket = params.get("bucket", "")
        key = pod_annotations.get(STORAGE_SPEC_KEY_ANNOTATION, "")
        config = self.config
        secret_name = pod_annotations.get(
            config.storage_secret_name_annotation, config.storage_spec_secret_name
        )
        if not secret_name:
            raise MutationError(
                f'annotation "{config.storage_secret_name_annotation}" names no storage Secret (it is empty)'
            )
        secret = await self._get("Secret", namespace, secret_name)
        stored: object = None
        if secret is None:
            if key:
                raise MutationError(
                    f"storage Secret {namespace}/{secret_name} does not exist (the storage spec names its "
                    f"key {key!r})"
                )
        else:
            data = _secret_data(secret)
            if key:
                if key not in data:
                    raise MutationError(
                        f"storage key {key!r} not found in storage Secret {namespace}/{secret_name}"
                    )
            else:
                key = f"{DEFAULT_STORAGE_KEY}_{storage_type}" if storage_type else DEFAULT_STORAGE_KEY
            stored = data.get(key)
        envs: list[dict[str, Any]] = []
        if stored is not None:
            where = f"storage Secret {namespace}/{secret_name} key {key!r}"
            if not storage_type:
                entry = _storage_entry(_decoded(stored, where), where)
                if "type" in entry:
                    storage_type = entry["type"]
                    if storage_type not in STORAGE_SPEC_TYPES:
                        raise MutationError(
                            f"{where}: storage type {storage_type!r} is not supported; use one of "
                            f"{', '.join(STORAGE_SPEC_TYPES)}"
                        )
                if not bucket:
                    bucket = entry.get("bucket", "")
            envs.append(_secret_key_env(STORAGE_CONFIG_ENV, secret_name, key))
        if not storage_type:
            raise MutationError(
                "unable to determine the storage type of the storage spec: set storage.parameters.type, or "
                f'"type" in the entry of storage Secret {namespace}/{secret_name}'
            )
        args = container.get("args") or []
        prefix = URI_SCHEME_PLACEHOLDER + "://"
        if args and args[0].startswith(prefix):
            path = args[0].removeprefix(prefix)
            if storage_type in BUCKET_STORAGE_TYPES:
                if not bucket:
                    raise MutationError(
                        f"storage type {storage_type!r} requires a bucket, but neither the storage spec's "
                        "parameters nor the storage Secret entry has one"
                    )
                args[0] = f"{storage_type}://{bucket}/{path}"
            else:
                args[0] = f"{storage_type}://{path}"
        if params:
            envs.append({"name": STORAGE_OVERRIDE_CONFIG_ENV, "value": go_json(params)})
        merge_env(container, envs)


def _override_params(pod_annotations: Mapping[str, str]) -> dict[str, str]:
    """The storage spec's parameters from their annotation (a JSON object of strings; null means "")."""
    raw = pod_annotations.get(STORAGE_SPEC_PARAM_ANNOTATION)
    if raw is None:
        return {}
    try:
        params = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise MutationError(
            f'annotation "{STORAGE_SPEC_PARAM_ANNOTATION}" is not valid JSON: {exc.msg}'
        ) from None
    if params is None:
        return {}
    if not isinstance(params, dict) or not all(v is None or isinstance(v, str) for v in params.values()):
        raise MutationError(f'annotation "{STORAGE_SPEC_PARAM_ANNOTATION}" must be a JSON object of strings')
    return {k: v or "" for k, v in params.items()}


def _storage_entry(text: str, where: str) -> dict[str, str]:
    """A `storage-config` entry: a JSON object of strings (null means ""), as Go decodes it."""
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MutationError(f"{where} is not valid JSON: {exc.msg}") from None
    if entry is None:
        return {}
    if not isinstance(entry, dict) or not all(v is None or isinstance(v, str) for v in entry.values()):
        raise MutationError(f"{where} must hold a JSON object of strings")
    return {k: v or "" for k, v in entry.items()}
