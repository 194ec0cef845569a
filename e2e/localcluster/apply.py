"""Apply YAML manifests to a cluster without kubectl.

``make run``, the integration tests and e2e must install the CRDs and config of ``config/`` on a fresh
machine, where no kubectl can be assumed. This module does what ``kubectl apply --server-side`` does for
plain manifests: CustomResourceDefinitions first (waiting until each is Established, so objects of those
kinds can follow), then Namespaces, then everything else in file order, each with server-side apply so
re-applying is idempotent. Kustomize is not interpreted here: ``kustomization.yaml`` files are skipped;
``kustomize()`` renders a base with kubectl's built-in kustomize (kubectl comes from ``binaries``).

Plain HTTPS keeps this synchronous and dependency-free; the kubeconfig may authenticate with a bearer token
(inline or file) or a client certificate.
"""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

FIELD_MANAGER = "kserve-localcluster"
KUSTOMIZE_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
SKIPPED_FILES = ("kustomization.yaml", "kustomization.yml")


class ApplyError(RuntimeError):
    """A manifest could not be read or applied."""


@dataclass(frozen=True)
class Manifest:
    source: str
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body["kind"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    def describe(self) -> str:
        namespace = self.body["metadata"].get("namespace")
        where = f"{namespace}/{self.name}" if namespace else self.name
        return f"{self.kind} {where} ({self.source})"


def _manifest_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.suffix in MANIFEST_SUFFIXES and p.name not in SKIPPED_FILES
        )
    if path.is_file():
        return [path]
    raise ApplyError(f"no such file or directory: {path}")


def load_manifests(paths: Sequence[Path]) -> list[Manifest]:
    """Read every document of the given files/directories (directories recursively, sorted)."""
    manifests: list[Manifest] = []
    for root in paths:
        for file in _manifest_files(Path(root)):
            try:
                documents = list(yaml.safe_load_all(file.read_text()))
            except (OSError, yaml.YAMLError) as exc:
                raise ApplyError(f"cannot read {file}: {exc}".splitlines()[0]) from exc
            for index, doc in enumerate(documents):
                if doc is None:
                    continue
                manifests.extend(_expand(doc, f"{file}#{index}"))
    return manifests


def _expand(doc: Any, source: str) -> Iterator[Manifest]:
    if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
        raise ApplyError(f"{source}: not a Kubernetes object (needs apiVersion and kind)")
    if str(doc["kind"]).endswith("List") and isinstance(doc.get("items"), list):
        for item in doc["items"]:
            yield from _expand(item, source)
        return
    metadata = doc.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("name"):
        raise ApplyError(f"{source}: {doc['kind']} has no metadata.name")
    yield Manifest(source=source, body=doc)


def decode_body(raw: bytes) -> dict[str, Any]:
    """A response body as a dict: JSON objects as-is, anything else (``/readyz`` says ``ok``) as
    ``{"message": text}``."""
    try:
        decoded = json.loads(raw or b"{}")
    except ValueError:
        return {"message": raw.decode(errors="replace").strip()}
    return decoded if isinstance(decoded, dict) else {"message": str(decoded)}


class _Client:
    """Just enough of a Kubernetes REST client: one kubeconfig, JSON in and out, bounded timeouts."""

    def __init__(self, kubeconfig: Path, scratch: Path) -> None:
        try:
            config = yaml.safe_load(kubeconfig.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ApplyError(f"cannot read kubeconfig {kubeconfig}: {exc}".splitlines()[0]) from exc
        if not isinstance(config, dict):
            raise ApplyError(f"kubeconfig {kubeconfig} is not a mapping")
        base = kubeconfig.parent
        context = self._named(config, "contexts", config.get("current-context"), kubeconfig)["context"]
        cluster = self._named(config, "clusters", context.get("cluster"), kubeconfig)["cluster"]
        user = self._named(config, "users", context.get("user"), kubeconfig).get("user") or {}
        self.server = str(cluster.get("server", "")).rstrip("/")
        if not self.server:
            raise ApplyError(f"kubeconfig {kubeconfig}: cluster has no server")
        self.default_namespace = str(context.get("namespace") or "default")
        self.headers: dict[str, str] = {}
        self.context = self._ssl_context(cluster, user, base, scratch)
        token = user.get("token")
        if not token and user.get("tokenFile"):
            token = (base / user["tokenFile"]).read_text().strip()
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif "exec" in user or "auth-provider" in user:
            raise ApplyError(f"kubeconfig {kubeconfig}: exec/auth-provider credentials are not supported")

    @staticmethod
    def _named(config: dict[str, Any], section: str, name: Any, path: Path) -> dict[str, Any]:
        for entry in config.get(section) or []:
            if isinstance(entry, dict) and entry.get("name") == name:
                return entry
        raise ApplyError(f"kubeconfig {path}: no entry {name!r} in {section}")

    @staticmethod
    def _material(entry: dict[str, Any], key: str, base: Path, scratch: Path) -> Path | None:
        if entry.get(f"{key}-data"):
            target = scratch / key
            target.write_bytes(base64.b64decode(entry[f"{key}-data"]))
            return target
        if entry.get(key):
            return base / str(entry[key])
        return None

    def _ssl_context(
        self, cluster: dict[str, Any], user: dict[str, Any], base: Path, scratch: Path
    ) -> ssl.SSLContext | None:
        if not self.server.startswith("https://"):
            return None
        if cluster.get("insecure-skip-tls-verify"):
            context = ssl._create_unverified_context()
        else:
            ca = self._material(cluster, "certificate-authority", base, scratch)
            context = ssl.create_default_context(cafile=str(ca) if ca else None)
        cert = self._material(user, "client-certificate", base, scratch)
        key = self._material(user, "client-key", base, scratch)
        if cert and key:
            context.load_cert_chain(str(cert), str(key))
        return context

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {**self.headers, "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(f"{self.server}{path}", data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S, context=self.context) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            exc.close()
            return exc.code, decode_body(raw)
        except (OSError, ValueError) as exc:
            raise ApplyError(f"{method} {self.server}{path} failed: {exc}") from exc


class _Applier:
    def __init__(self, client: _Client, field_manager: str, deadline: float) -> None:
        self.client = client
        self.field_manager = field_manager
        self.deadline = deadline
        self.discovery: dict[str, dict[str, tuple[str, bool]]] = {}

    def resource(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(plural, namespaced) for a kind; re-discovers until the deadline so fresh CRDs are found."""
        while True:
            group_path = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            kinds = self.discovery.get(api_version)
            if kinds is None or kind not in kinds:
                status, payload = self.client.request("GET", group_path)
                if status == 200:
                    kinds = {
                        r["kind"]: (r["name"], bool(r.get("namespaced")))
                        for r in payload.get("resources", [])
                        if "/" not in r["name"]
                    }
                    self.discovery[api_version] = kinds
            if kinds is not None and kind in kinds:
                return kinds[kind]
            if time.monotonic() > self.deadline:
                raise ApplyError(f"the server does not serve kind {kind} in {api_version}")
            time.sleep(0.2)

    def apply(self, manifest: Manifest) -> None:
        body = manifest.body
        plural, namespaced = self.resource(str(body["apiVersion"]), manifest.kind)
        prefix = "/api/v1" if body["apiVersion"] == "v1" else f"/apis/{body['apiVersion']}"
        if namespaced:
            namespace = body["metadata"].get("namespace") or self.client.default_namespace
            body = {**body, "metadata": {**body["metadata"], "namespace": namespace}}
            prefix += f"/namespaces/{urllib.parse.quote(namespace)}"
        query = urllib.parse.urlencode({"fieldManager": self.field_manager, "force": "true"})
        path = f"{prefix}/{plural}/{urllib.parse.quote(manifest.name)}?{query}"
        status, payload = self.client.request("PATCH", path, body, "application/apply-patch+yaml")
        if status >= 300:
            raise ApplyError(
                f"applying {manifest.describe()} failed: HTTP {status}: {payload.get('message', payload)}"
            )

    def wait_established(self, manifest: Manifest) -> None:
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{urllib.parse.quote(manifest.name)}"
        while True:
            status, payload = self.client.request("GET", path)
            # A just-created CRD has ``status.conditions: null`` until the controller first sees it.
            conditions = ((payload.get("status") or {}).get("conditions") or []) if status == 200 else []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                return
            if time.monotonic() > self.deadline:
                raise ApplyError(f"CRD {manifest.name} not Established in time ({manifest.source})")
            time.sleep(0.1)


def apply_manifests(
    kubeconfig: Path,
    paths: Sequence[Path],
    *,
    field_manager: str = FIELD_MANAGER,
    timeout: float = 120.0,
) -> None:
    """Server-side apply every manifest under ``paths``: CRDs first (until Established), Namespaces, rest."""
    manifests = load_manifests(paths)
    crds = [m for m in manifests if m.kind == "CustomResourceDefinition"]
    namespaces = [m for m in manifests if m.kind == "Namespace"]
    rest = [m for m in manifests if m.kind not in ("CustomResourceDefinition", "Namespace")]
    with tempfile.TemporaryDirectory(prefix="kserve-apply-") as scratch:
        client = _Client(Path(kubeconfig), Path(scratch))
        applier = _Applier(client, field_manager, time.monotonic() + timeout)
        for crd in crds:
            applier.apply(crd)
        for crd in crds:
            applier.wait_established(crd)
        for manifest in namespaces + rest:
            applier.apply(manifest)


def kustomize(kubectl: Path, base: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize base` as a list of objects."""
    try:
        done = subprocess.run(
            [str(kubectl), "kustomize", str(base)],
            capture_output=True,
            text=True,
            timeout=KUSTOMIZE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ApplyError(f"kubectl kustomize {base} failed: {exc}") from exc
    if done.returncode != 0:
        first = (done.stderr.strip().splitlines() or ["(no output)"])[0]
        raise ApplyError(f"kubectl kustomize {base} failed: {first}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if isinstance(doc, dict)]
