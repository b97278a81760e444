#!/usr/bin/env python3
"""Lints and renders the Helm chart in helm/riposte, and checks what it renders.

Helm runs in-process through `helm_python` (PyPI `helm-python-sdk`: Helm v4's own Go SDK built
as a shared library), so `helm lint --strict` and `helm template` work offline without a `helm`
binary. Every rendered object is validated against the Kubernetes JSON schemas of the oldest
and the newest version the chart supports (PyPI `kubernetes-validate`, strict: unknown fields
are errors). Then the manifests are checked for what Riposte needs: the kinds of each mode,
probes, the hardened security context, that secret values appear only in Secrets, that the
server configuration has the keys the server reads, and that bad values are refused with the
reason. scripts/test installs both packages (pinned) when they are missing.

Helm runs in a child process under a timeout, so a hang in native code cannot hang the suite.
The script prints one line per check that failed and ends with `N passed, N failed`.

    python3 tests/helm/check_chart.py
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "riposte"
SUBCHART = CHART / "charts" / "redis"
RELEASE = "demo"
NAMESPACE = "soc"
FULLNAME = "demo-riposte"
# The chart's kubeVersion says >=1.25; the newest is whatever kubernetes-validate ships.
KUBE_VERSIONS = ["1.25.0", None]
HELM_TIMEOUT_SECONDS = 120
UID = 10001

# Canary secret values planted in the values: each may appear only inside Secret objects.
CANARY = {
    "webhook": "CANARYwebhook7f3a",
    "plugin": "CANARYplugin91bd",
    "metrics": "rpt_CANARYmetrics55e0",
    "external_redis": "CANARYredisurlpw2c",
    "bundled_redis": "CANARYbundledpw8d",
}

# Top-level keys of the server's configuration file (RawConfig in crates/server/src/config.rs,
# which refuses unknown keys).
SERVER_CONFIG_KEYS = {
    "listen", "playbooks", "plugins", "data_dir", "redis", "sqlite", "workers", "webhooks",
    "auth", "egress", "api",
}


# --- Scenarios ---------------------------------------------------------------------------

def scale_out_values() -> dict:
    return yaml.safe_load((CHART / "examples" / "scale-out.yaml").read_text())


BUNDLED_REDIS = {
    "redis": {"enabled": True, "auth": {"password": CANARY["bundled_redis"]}},
    "workers": {"enabled": True, "replicas": 2},
    "api": {"replicas": 2},
}

# Everything optional on: ServiceMonitor, NetworkPolicy with peers, ingress with TLS, external
# Redis from a value, every kind of secret, existing-secret references, extra plugins.
FULL = {
    "externalRedis": {"url": f"rediss://:{CANARY['external_redis']}@redis.internal:6380/2",
                      "port": 6380, "caSecret": {"name": "redis-ca", "key": "ca.crt"}},
    "api": {"replicas": 2, "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 5}},
    "workers": {"enabled": True, "replicas": 3, "autoscaling": {"enabled": True}},
    "ingress": {"enabled": True, "host": "soar.example.org", "className": "nginx",
                "tls": {"enabled": True}},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus"}},
                "token": {"value": CANARY["metrics"]}},
    "networkPolicy": {
        "enabled": True,
        "apiFrom": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "ingress-nginx"}}}],
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "monitoring"}}}],
        "egress": {"extra": [{"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
                              "ports": [{"port": 8443, "protocol": "TCP"}]}]},
    },
    "config": {"egress": {"allow_private": ["10.20.0.0/16"]}},
    "auth": {
        "profiles": {
            "quickstart": {"type": "bearer", "tokens_env": ["RIPOSTE_QUICKSTART_TOKEN"]},
            "wazuh": {"type": "bearer", "tokens_env": ["RIPOSTE_WAZUH_TOKEN"]},
            "elastic-siem": {"type": "bearer", "tokens_env": ["RIPOSTE_ELASTIC_TOKEN"]},
        },
        "secrets": {"RIPOSTE_WAZUH_TOKEN": CANARY["webhook"]},
        "generate": ["RIPOSTE_QUICKSTART_TOKEN"],
    },
    "apiTokens": {"oncall": {"role": "responder", "sha256": "9f86d081884c7d659a2feaa0c55ad015"
                             "a3bf4f1b2b0b822cd15d6c15b0f00a08", "groups": ["soc-oncall"]}},
    "pluginSecrets": {"abuseipdb_key": CANARY["plugin"]},
    "secrets": {
        "existingSecrets": ["siem-tokens"],
        "env": [{"name": "RIPOSTE_ELASTIC_TOKEN", "secretName": "elastic", "key": "token"}],
    },
    "plugins": {"extra": {"initContainer": {"image": "registry.example.org/soc/plugins:1.2"}}},
}

# The single node's variants: no persistence, playbooks from a ConfigMap of yours, plugins
# from a volume.
SQLITE_VARIANTS = {
    "persistence": {"enabled": False},
    "playbooks": {"existingConfigMap": "my-playbooks"},
    "plugins": {"extra": {"volume": {"configMap": {"name": "my-plugins"}}}},
    "networkPolicy": {"enabled": False},
}

# (name, values, message the refusal must contain).
REFUSALS = [
    ("SQLite with 2 API replicas", {"api": {"replicas": 2}},
     "api.replicas is 2 but the store is SQLite"),
    ("SQLite with worker pods", {"workers": {"enabled": True}},
     "workers.enabled needs Redis"),
    ("SQLite with API autoscaling", {"api": {"autoscaling": {"enabled": True}}},
     "api.autoscaling.enabled needs Redis"),
    ("a string where the schema wants an integer", {"api": {"replicas": "two"}},
     "at '/api/replicas': got string, want integer"),
    ("a misspelled server configuration key", {"config": {"workers": {"concurency": 8}}},
     "additional properties 'concurency' not allowed"),
    ("an API token pasted where its SHA-256 belongs",
     {"apiTokens": {"oncall": {"role": "admin", "sha256": "rpt_notahash"}}},
     "at '/apiTokens/oncall/sha256'"),
    ("ingress enabled without a host", {"ingress": {"enabled": True}},
     "ingress.enabled is true but ingress.host is empty"),
    ("the bundled and an external Redis at once",
     {"redis": {"enabled": True}, "externalRedis": {"url": "redis://r:6379"}},
     "choose the bundled Redis or an external one"),
    ("a bad appendfsync for the bundled Redis",
     {"redis": {"enabled": True, "appendfsync": "sometimes"}},
     "at '/appendfsync': value must be one of"),
    ("a metrics token from a Secret without its SHA-256",
     {"metrics": {"serviceMonitor": {"enabled": True}, "token": {"existingSecret": "prom"}}},
     "metrics.token.sha256 is empty"),
]


# --- Running Helm -------------------------------------------------------------------------

def helm_worker() -> None:
    """The child process: runs the jobs read from stdin with Helm, prints their results."""
    import helm_python as helm

    results = []
    for job in json.load(sys.stdin):
        try:
            if job["op"] == "lint":
                report = helm.lint(job["chart"], job["values"], strict=True)
                results.append({"ok": True, "report": report})
            else:
                # A fresh handle per render: Helm's dependency processing (conditions) edits
                # the loaded chart in place.
                with helm.Chart.load(job["chart"]) as chart:
                    files = chart.render(job["values"], name=RELEASE, namespace=NAMESPACE,
                                         is_install=True)
                results.append({"ok": True, "files": files})
        except helm.HelmError as error:
            results.append({"ok": False, "error": str(error)})
    json.dump(results, sys.stdout)


def run_helm(jobs: list[dict]) -> list[dict]:
    child = subprocess.run(
        [sys.executable, __file__, "--helm-worker"], input=json.dumps(jobs),
        capture_output=True, text=True, timeout=HELM_TIMEOUT_SECONDS,
    )
    if child.returncode != 0:
        sys.exit(f"the Helm child process failed ({child.returncode}):\n{child.stderr}")
    return json.loads(child.stdout)


# --- Checks -------------------------------------------------------------------------------

class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []
        self.scope = ""

    def expect(self, condition: Any, message: str) -> bool:
        if condition:
            self.passed += 1
        else:
            self.failed.append(f"[{self.scope}] {message}")
            print(f"FAIL [{self.scope}] {message}")
        return bool(condition)


class Manifests:
    """The objects one render produced, and NOTES.txt."""

    def __init__(self, files: dict[str, str]) -> None:
        self.notes = ""
        self.objects: list[dict] = []
        for path, text in sorted(files.items()):
            if path.endswith("NOTES.txt"):
                self.notes = text
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    doc["__source"] = path
                    self.objects.append(doc)

    def kinds(self) -> set[str]:
        return {o["kind"] for o in self.objects}

    def of(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict | None:
        return next((o for o in self.of(kind) if o["metadata"]["name"] == name), None)

    def workloads(self) -> list[dict]:
        return [o for o in self.objects if o["kind"] in ("Deployment", "StatefulSet")]


def strip(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k != "__source"}


def walk_strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from walk_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk_strings(v)


def secret_values(secret: dict) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env") or []}


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def containers(workload: dict) -> list[dict]:
    spec = pod_spec(workload)
    return list(spec.get("initContainers") or []) + list(spec["containers"])


def check_schemas(c: Checks, m: Manifests, validate: Callable) -> None:
    for obj in m.objects:
        name = f"{obj['kind']} {obj['metadata']['name']}"
        if obj["kind"] == "ServiceMonitor":
            # A CRD: not in the Kubernetes schemas; check_service_monitor looks at it.
            continue
        for version in KUBE_VERSIONS:
            problem = validate(strip(obj), version)
            c.expect(problem is None, f"{name} does not validate against Kubernetes "
                                      f"{version or 'latest'}: {problem}")


def check_labels(c: Checks, m: Manifests) -> None:
    for obj in m.objects:
        labels = obj["metadata"].get("labels") or {}
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                    "app.kubernetes.io/managed-by"):
            c.expect(key in labels, f"{obj['kind']} {obj['metadata']['name']} has no {key} label")


def check_security(c: Checks, m: Manifests) -> None:
    for w in m.workloads():
        name = f"{w['kind']} {w['metadata']['name']}"
        spec = pod_spec(w)
        pod = spec.get("securityContext") or {}
        c.expect(pod.get("runAsNonRoot") is True, f"{name}: pod runAsNonRoot is not true")
        c.expect(pod.get("runAsUser") == UID, f"{name}: pod runAsUser is not {UID}")
        c.expect(pod.get("fsGroup") == UID, f"{name}: pod fsGroup is not {UID}")
        c.expect((pod.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
                 f"{name}: pod seccompProfile is not RuntimeDefault")
        c.expect(spec.get("automountServiceAccountToken") is False,
                 f"{name}: the service account token is mounted")
        for ctr in containers(w):
            where = f"{name} container {ctr['name']}"
            sc = ctr.get("securityContext") or {}
            c.expect(sc.get("runAsNonRoot") is True, f"{where}: runAsNonRoot is not true")
            c.expect(sc.get("runAsUser") == UID, f"{where}: runAsUser is not {UID}")
            c.expect(sc.get("readOnlyRootFilesystem") is True,
                     f"{where}: readOnlyRootFilesystem is not true")
            c.expect(sc.get("allowPrivilegeEscalation") is False,
                     f"{where}: allowPrivilegeEscalation is not false")
            c.expect((sc.get("capabilities") or {}).get("drop") == ["ALL"],
                     f"{where}: capabilities do not drop ALL")
            c.expect((sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
                     f"{where}: seccompProfile is not RuntimeDefault")
            c.expect(ctr.get("resources", {}).get("limits", {}).get("memory"),
                     f"{where}: no memory limit")


def riposte_workloads(m: Manifests) -> list[dict]:
    return [w for w in m.of("Deployment")
            if w["metadata"]["labels"].get("app.kubernetes.io/name") == "riposte"]


def check_probes(c: Checks, m: Manifests) -> None:
    for w in m.workloads():
        for ctr in pod_spec(w)["containers"]:
            where = f"{w['metadata']['name']} container {ctr['name']}"
            for probe in ("livenessProbe", "readinessProbe"):
                c.expect(probe in ctr, f"{where}: no {probe}")
    for w in riposte_workloads(m):
        component = w["metadata"]["labels"]["app.kubernetes.io/component"]
        want_port = {"api": 8080, "worker": 9090}[component]
        ctr = pod_spec(w)["containers"][0]
        where = f"{w['metadata']['name']}"
        ports = {p["name"]: p["containerPort"] for p in ctr.get("ports") or []}
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"),
                            ("readinessProbe", "/readyz")):
            get = (ctr.get(probe) or {}).get("httpGet") or {}
            c.expect(get.get("path") == path, f"{where}: {probe} is not on {path}")
            port = get.get("port")
            c.expect(ports.get(port, port) == want_port,
                     f"{where}: {probe} is on port {port}, not {want_port}")
        startup = ctr.get("startupProbe") or {}
        budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
        c.expect(budget >= 120, f"{where}: the startup probe allows {budget}s, less than the "
                                "two minutes the plugins may take to compile")


def check_secrets_stay_secret(c: Checks, m: Manifests, canaries: list[str]) -> None:
    in_secrets = "\n".join(v for s in m.of("Secret") for v in secret_values(s).values())
    for canary in canaries:
        # A canary that is not in any Secret was not planted: the check below would prove nothing.
        c.expect(canary in in_secrets, f"the canary {canary} is in no Secret")
    for obj in m.objects:
        if obj["kind"] == "Secret":
            continue
        text = "\n".join(walk_strings(strip(obj)))
        for canary in canaries:
            c.expect(canary not in text,
                     f"the secret value {canary} appears in {obj['kind']} {obj['metadata']['name']}")
    for canary in canaries:
        c.expect(canary not in m.notes, f"the secret value {canary} appears in NOTES.txt")
    for w in m.workloads():
        for ctr in containers(w):
            for e in ctr.get("env") or []:
                value = e.get("value", "")
                c.expect("@" not in value or "$(" in value,
                         f"{w['metadata']['name']}: env {e['name']} looks like a URL with "
                         "credentials in a plain value")


def config_of(c: Checks, m: Manifests) -> dict:
    cm = m.get("ConfigMap", f"{FULLNAME}-config")
    if not c.expect(cm is not None, "no ConfigMap with the server configuration"):
        return {}
    config = yaml.safe_load(cm["data"]["riposte.yaml"])
    c.expect(isinstance(config, dict), "riposte.yaml is not a YAML mapping")
    return config or {}


def check_config(c: Checks, m: Manifests, redis: bool) -> dict:
    config = config_of(c, m)
    c.expect(set(config) <= SERVER_CONFIG_KEYS,
             f"riposte.yaml has keys the server refuses: {set(config) - SERVER_CONFIG_KEYS}")
    for key in ("listen", "playbooks", "plugins", "data_dir", "workers", "webhooks", "auth"):
        c.expect(key in config, f"riposte.yaml has no `{key}`")
    c.expect(config.get("listen") == "0.0.0.0:8080", "riposte.yaml does not listen on 0.0.0.0:8080")
    c.expect(config.get("data_dir") == "/var/lib/riposte", "data_dir is not /var/lib/riposte")
    if redis:
        c.expect((config.get("redis") or {}).get("url_env") == "RIPOSTE_REDIS_URL",
                 "Redis mode without redis.url_env: RIPOSTE_REDIS_URL")
        c.expect("sqlite" not in config, "Redis mode with a sqlite section")
    else:
        c.expect("redis" not in config, "SQLite mode with a redis section (the server would "
                                        "refuse to start without a URL)")
    for name, profile in (config.get("auth") or {}).items():
        c.expect(set(profile) <= {"type", "header", "prefix", "tolerance", "secrets_env",
                                  "tokens_env", "credentials_env"},
                 f"auth profile {name} has keys the server refuses")
    # Every pod points the server at the same folders as the file (the variables win).
    for w in riposte_workloads(m):
        ctr = pod_spec(w)["containers"][0]
        env = env_of(ctr)
        for var, key in (("RIPOSTE_PLAYBOOKS", "playbooks"), ("RIPOSTE_PLUGINS", "plugins"),
                         ("RIPOSTE_DATA_DIR", "data_dir"), ("RIPOSTE_LISTEN", "listen")):
            c.expect(env.get(var, {}).get("value") == config.get(key),
                     f"{w['metadata']['name']}: {var} differs from the file's {key}")
        mounts = {v["mountPath"]: v["name"] for v in ctr.get("volumeMounts") or []}
        c.expect(config.get("playbooks", "").startswith("/etc/riposte/playbooks")
                 and "/etc/riposte/playbooks" in mounts,
                 f"{w['metadata']['name']}: the playbooks folder is not mounted")
        c.expect("/var/lib/riposte" in mounts and "/tmp" in mounts,
                 f"{w['metadata']['name']}: /var/lib/riposte or /tmp is not a writable volume")
        args = ctr.get("args") or []
        c.expect(args[1:] == ["--config", "/etc/riposte/config/riposte.yaml"]
                 and mounts.get("/etc/riposte/config") == "config",
                 f"{w['metadata']['name']}: not started with the mounted config file")
    return config


def check_env_sources(c: Checks, m: Manifests, config: dict, existing: set[str]) -> None:
    """Every variable an auth profile names is in the chart's Secret or a Secret of yours."""
    env_secret = m.get("Secret", f"{FULLNAME}-env")
    provided = set(secret_values(env_secret)) if env_secret else set()
    for w in riposte_workloads(m):
        ctr = pod_spec(w)["containers"][0]
        refs = {r["secretRef"]["name"] for r in ctr.get("envFrom") or []}
        c.expect(f"{FULLNAME}-env" in refs, f"{w['metadata']['name']}: the chart's Secret is "
                                            "not in envFrom")
        c.expect(existing <= refs, f"{w['metadata']['name']}: envFrom misses {existing - refs}")
        named = {e["name"] for e in ctr.get("env") or []}
        for profile in (config.get("auth") or {}).values():
            for var in (profile.get("tokens_env", []) + profile.get("secrets_env", [])
                        + profile.get("credentials_env", [])):
                c.expect(var in provided or var in named,
                         f"{var} (named by an auth profile) comes from no Secret")


def check_playbooks(c: Checks, m: Manifests) -> None:
    cm = m.get("ConfigMap", f"{FULLNAME}-playbooks")
    if not c.expect(cm is not None, "no playbooks ConfigMap"):
        return
    rendered = yaml.safe_load(cm["data"].get("hello-webhook.yaml", ""))
    original = yaml.safe_load((ROOT / "playbooks" / "hello-webhook.yaml").read_text())
    c.expect(rendered == original, "the chart's hello-webhook playbook differs from "
                                   "playbooks/hello-webhook.yaml")


def check_references(c: Checks, m: Manifests, external: set[str]) -> None:
    """Names the manifests point at exist: volumes, Secrets, Services, scale targets."""
    names = {(o["kind"], o["metadata"]["name"]) for o in m.objects}
    for w in m.workloads():
        spec = pod_spec(w)
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates") or []}
        for ctr in containers(w):
            for mount in ctr.get("volumeMounts") or []:
                c.expect(mount["name"] in volumes or mount["name"] in claims,
                         f"{w['metadata']['name']}: mount {mount['name']} has no volume")
            refs = [r["secretRef"]["name"] for r in ctr.get("envFrom") or []]
            refs += [e["valueFrom"]["secretKeyRef"]["name"] for e in ctr.get("env") or []
                     if "secretKeyRef" in e.get("valueFrom", {})]
            for ref in refs:
                c.expect(("Secret", ref) in names or ref in external,
                         f"{w['metadata']['name']}: Secret {ref} is neither rendered nor declared")
        for v in volumes.values():
            if "configMap" in v:
                ref = v["configMap"]["name"]
                c.expect(("ConfigMap", ref) in names or ref in external,
                         f"{w['metadata']['name']}: ConfigMap {ref} is neither rendered nor declared")
            if "secret" in v:
                ref = v["secret"]["secretName"]
                c.expect(("Secret", ref) in names or ref in external,
                         f"{w['metadata']['name']}: Secret {ref} is neither rendered nor declared")
            if "persistentVolumeClaim" in v:
                ref = v["persistentVolumeClaim"]["claimName"]
                c.expect(("PersistentVolumeClaim", ref) in names or ref in external,
                         f"{w['metadata']['name']}: PVC {ref} is neither rendered nor declared")
        name = spec.get("serviceAccountName")
        c.expect(("ServiceAccount", name) in names, f"{w['metadata']['name']}: no ServiceAccount {name}")
    pods = {w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"] for w in m.workloads()}

    def selects(selector: dict) -> list[str]:
        return [n for n, labels in pods.items()
                if selector and all(labels.get(k) == v for k, v in selector.items())]

    for svc in m.of("Service"):
        c.expect(selects(svc["spec"]["selector"]), f"Service {svc['metadata']['name']} selects no pod")
    for pdb in m.of("PodDisruptionBudget"):
        c.expect(len(selects(pdb["spec"]["selector"]["matchLabels"])) == 1,
                 f"PDB {pdb['metadata']['name']} does not select exactly one workload")
    for np in m.of("NetworkPolicy"):
        c.expect(selects(np["spec"]["podSelector"]["matchLabels"]),
                 f"NetworkPolicy {np['metadata']['name']} selects no pod")
    for hpa in m.of("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        c.expect(("Deployment", target["name"]) in names,
                 f"HPA {hpa['metadata']['name']} scales a Deployment that does not exist")
        deployment = m.get("Deployment", target["name"])
        c.expect(deployment is not None and "replicas" not in deployment["spec"],
                 f"Deployment {target['name']} sets replicas although an HPA owns the count")
        c.expect(all(ctr.get("resources", {}).get("requests", {}).get("cpu")
                     for ctr in (pod_spec(deployment)["containers"] if deployment else [])),
                 f"HPA {hpa['metadata']['name']}: its pods have no CPU request to scale on")
    for ing in m.of("Ingress"):
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                svc = m.get("Service", backend["name"])
                c.expect(svc is not None and backend["port"].get("name") in
                         [p["name"] for p in svc["spec"]["ports"]],
                         f"Ingress {ing['metadata']['name']} points at a missing Service or port")
    for w in m.workloads():
        annotations = w["spec"]["template"]["metadata"].get("annotations") or {}
        c.expect(any(k.startswith("checksum/") for k in annotations),
                 f"{w['metadata']['name']}: no checksum annotation to roll pods on change")


def component(m: Manifests, name: str) -> dict | None:
    return m.get("Deployment", f"{FULLNAME}-{name}")


def check_single_node(c: Checks, m: Manifests, persistent: bool) -> None:
    kinds = m.kinds()
    for kind in ("Deployment", "Service", "ConfigMap", "Secret", "ServiceAccount"):
        c.expect(kind in kinds, f"no {kind}")
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "StatefulSet", "Ingress",
                 "ServiceMonitor"):
        c.expect(kind not in kinds, f"a {kind} in the SQLite single-node mode")
    c.expect(len(m.of("Deployment")) == 1, "more than one Deployment with SQLite")
    c.expect(("PersistentVolumeClaim" in kinds) == persistent,
             "a PVC, or none, against persistence.enabled")
    api = component(m, "api")
    if not c.expect(api is not None, "no API Deployment"):
        return
    c.expect(api["spec"].get("replicas") == 1, "SQLite node with replicas other than 1")
    c.expect(api["spec"]["strategy"]["type"] == "Recreate", "SQLite node without strategy Recreate")
    ctr = pod_spec(api)["containers"][0]
    env = env_of(ctr)
    c.expect(ctr["args"][0] == "serve", "the node does not run `riposte serve`")
    c.expect("RIPOSTE_WORKERS" not in env, "the single node is API-only (RIPOSTE_WORKERS set)")
    c.expect("RIPOSTE_REDIS_URL" not in env, "the SQLite node has a Redis URL")
    data = next(v for v in pod_spec(api)["volumes"] if v["name"] == "data")
    c.expect(("persistentVolumeClaim" in data) == persistent,
             "the data volume is not a PVC with persistence, or an emptyDir without")


def check_redis_mode(c: Checks, m: Manifests, workers: bool, bundled: bool) -> None:
    kinds = m.kinds()
    c.expect("PersistentVolumeClaim" not in kinds, "a PVC for Riposte pods in Redis mode")
    c.expect(("StatefulSet" in kinds) == bundled, "a Redis StatefulSet, or none, against redis.enabled")
    c.expect((component(m, "worker") is not None) == workers,
             "a worker Deployment, or none, against workers.enabled")
    c.expect("PodDisruptionBudget" in kinds, "no PodDisruptionBudget in Redis mode")
    api = component(m, "api")
    if not c.expect(api is not None, "no API Deployment"):
        return
    c.expect(api["spec"]["strategy"]["type"] == "RollingUpdate", "API pods do not roll")
    api_env = env_of(pod_spec(api)["containers"][0])
    c.expect(pod_spec(api)["containers"][0]["args"][0] == "serve", "API pods do not run serve")
    c.expect((api_env.get("RIPOSTE_WORKERS", {}).get("value") == "0") == workers,
             "API pods are not API-only (RIPOSTE_WORKERS=0) exactly when worker pods run")
    deployments = [api] + ([component(m, "worker")] if workers else [])
    for d in deployments:
        if not c.expect(d is not None, "a Deployment is missing"):
            continue
        env = env_of(pod_spec(d)["containers"][0])
        url = env.get("RIPOSTE_REDIS_URL")
        c.expect(url is not None, f"{d['metadata']['name']} has no RIPOSTE_REDIS_URL")
        if bundled and url:
            c.expect("$(REDIS_PASSWORD)" in url.get("value", "")
                     and "secretKeyRef" in env.get("REDIS_PASSWORD", {}).get("valueFrom", {}),
                     f"{d['metadata']['name']}: the bundled Redis URL does not take its "
                     "password from the Secret")
        elif url:
            c.expect("secretKeyRef" in url.get("valueFrom", {}),
                     f"{d['metadata']['name']}: the external Redis URL is not from a Secret")
        data = next(v for v in pod_spec(d)["volumes"] if v["name"] == "data")
        c.expect("emptyDir" in data, f"{d['metadata']['name']}: data is not an emptyDir in Redis mode")
    if workers:
        worker = component(m, "worker")
        if worker:
            ctr = pod_spec(worker)["containers"][0]
            c.expect(ctr["args"][0] == "worker", "worker pods do not run `riposte worker`")
            c.expect(env_of(ctr).get("RIPOSTE_OPS_LISTEN", {}).get("value") == "0.0.0.0:9090",
                     "worker pods do not set RIPOSTE_OPS_LISTEN=0.0.0.0:9090")
            c.expect([p["containerPort"] for p in ctr["ports"]] == [9090],
                     "worker pods expose more than the ops port")


def check_bundled_redis(c: Checks, m: Manifests) -> None:
    sts = m.get("StatefulSet", f"{RELEASE}-redis")
    if not c.expect(sts is not None, "no Redis StatefulSet"):
        return
    ctr = pod_spec(sts)["containers"][0]
    args = ctr["args"]
    pairs = dict(zip(args[::2], args[1::2]))
    c.expect(pairs.get("--appendonly") == "yes", "Redis runs without the append-only file")
    c.expect(pairs.get("--appendfsync") == "everysec", "Redis appendfsync is not everysec")
    c.expect(pairs.get("--maxmemory-policy") == "noeviction", "Redis may evict keys")
    c.expect(pairs.get("--requirepass") == "$(REDIS_PASSWORD)", "Redis has no password from the Secret")
    c.expect(ctr["image"] == "redis:7.2", "the Redis image is not redis:7.2")
    c.expect(sts["spec"].get("volumeClaimTemplates"), "Redis has no PVC")
    c.expect(m.get("Service", f"{RELEASE}-redis") is not None,
             "no Service named as the Riposte pods' URL says")
    np = m.get("NetworkPolicy", f"{RELEASE}-redis")
    if c.expect(np is not None, "no NetworkPolicy for Redis"):
        peers = [p["podSelector"]["matchLabels"] for rule in np["spec"]["ingress"]
                 for p in rule["from"]]
        c.expect(len(peers) == 1 and peers[0].get("app.kubernetes.io/instance") == RELEASE
                 and peers[0].get("app.kubernetes.io/part-of") == "riposte",
                 f"Redis accepts connections from other pods than this release's Riposte: {peers}")
        # By labels every Riposte pod has, whatever nameOverride says.
        for workload in riposte_workloads(m):
            labels = workload["spec"]["template"]["metadata"]["labels"]
            c.expect(all(labels.get(k) == v for peer in peers[:1] for k, v in peer.items()),
                     f"Redis refuses {workload['metadata']['name']}: {labels} vs {peers}")
        c.expect(np["spec"].get("egress") == [] and "Egress" in np["spec"]["policyTypes"],
                 "Redis may open connections")
    # Riposte pods may reach Redis through their own policy.
    api_np = m.get("NetworkPolicy", f"{FULLNAME}-api")
    if c.expect(api_np is not None, "no NetworkPolicy for API pods"):
        c.expect(any(p.get("port") == 6379 for rule in api_np["spec"]["egress"]
                     for p in rule.get("ports", []) if rule.get("to")),
                 "API pods may not reach the bundled Redis")


def check_network_policies(c: Checks, m: Manifests, values: dict) -> None:
    np_values = values["networkPolicy"]
    api = m.get("NetworkPolicy", f"{FULLNAME}-api")
    worker = m.get("NetworkPolicy", f"{FULLNAME}-worker")
    if not (c.expect(api is not None, "no API NetworkPolicy")
            and c.expect(worker is not None, "no worker NetworkPolicy")):
        return
    for np in (api, worker):
        c.expect(sorted(np["spec"]["policyTypes"]) == ["Egress", "Ingress"],
                 f"{np['metadata']['name']} does not restrict both directions")
        egress = np["spec"]["egress"]
        c.expect(any({p.get("port") for p in r.get("ports", [])} == {53} for r in egress),
                 f"{np['metadata']['name']}: no DNS")
        c.expect(any(p.get("port") == values["externalRedis"]["port"] for r in egress
                     for p in r.get("ports", [])), f"{np['metadata']['name']}: no Redis port")
        https = [r for r in egress if [p.get("port") for p in r.get("ports", [])] == [443]]
        c.expect(https and all("10.0.0.0/8" in b["ipBlock"].get("except", [])
                               for b in https[0]["to"] if b["ipBlock"]["cidr"] == "0.0.0.0/0"),
                 f"{np['metadata']['name']}: HTTPS egress is not limited to public addresses")
        c.expect(any(r.get("ports") == [{"port": 8443, "protocol": "TCP"}] for r in egress),
                 f"{np['metadata']['name']}: networkPolicy.egress.extra is missing")
    api_rules = api["spec"]["ingress"]
    c.expect(len(api_rules) == 1 and [p["port"] for p in api_rules[0]["ports"]] == ["http"],
             "API pods accept other ports than http")
    c.expect(api_rules[0].get("from") == np_values["apiFrom"] + np_values["metricsFrom"],
             "API pods accept traffic from other peers than apiFrom and metricsFrom")
    worker_rules = worker["spec"]["ingress"]
    c.expect(len(worker_rules) == 1 and [p["port"] for p in worker_rules[0]["ports"]] == ["ops"]
             and worker_rules[0].get("from") == np_values["metricsFrom"],
             "worker pods accept other traffic than scrapes on 9090 from metricsFrom")


def check_service_monitor(c: Checks, m: Manifests) -> None:
    sms = m.of("ServiceMonitor")
    if not c.expect(len(sms) == 1, "no ServiceMonitor"):
        return
    sm = sms[0]
    c.expect(sm["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor apiVersion")
    c.expect(set(sm["spec"]) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"},
             "ServiceMonitor spec has unknown fields")
    endpoints = {e["port"]: e for e in sm["spec"]["endpoints"]}
    c.expect(set(endpoints) == {"http", "ops"}, f"ServiceMonitor scrapes ports {set(endpoints)}")
    secret = m.get("Secret", f"{FULLNAME}-metrics")
    env_secret = m.get("Secret", f"{FULLNAME}-env")
    for port, e in endpoints.items():
        c.expect(e.get("path") == "/metrics", f"ServiceMonitor {port}: path is not /metrics")
        creds = (e.get("authorization") or {}).get("credentials") or {}
        c.expect(e["authorization"].get("type") == "Bearer" and creds.get("name") ==
                 f"{FULLNAME}-metrics" and creds.get("key") == "token",
                 f"ServiceMonitor {port}: no bearer token from {FULLNAME}-metrics")
    selected = [s["metadata"]["name"] for s in m.of("Service")
                if all(s["metadata"]["labels"].get(k) == v
                       for k, v in sm["spec"]["selector"]["matchLabels"].items())]
    c.expect(sorted(selected) == [FULLNAME, f"{FULLNAME}-worker"],
             f"ServiceMonitor selects Services {selected}")
    if c.expect(secret is not None and env_secret is not None, "no metrics token Secret"):
        token = secret_values(secret)["token"]
        declared = secret_values(env_secret).get("RIPOSTE_API_TOKEN_PROMETHEUS", "")
        c.expect(declared == f"viewer:{hashlib.sha256(token.encode()).hexdigest()}",
                 "the server does not know the scrape token as a viewer by its SHA-256")


def check_secret_env(c: Checks, m: Manifests) -> None:
    env = secret_values(m.get("Secret", f"{FULLNAME}-env") or {})
    c.expect(env.get("RIPOSTE_WAZUH_TOKEN") == CANARY["webhook"], "webhook secret not in the Secret")
    c.expect(env.get("RIPOSTE_SECRET_ABUSEIPDB_KEY") == CANARY["plugin"],
             "plugin secret not RIPOSTE_SECRET_ABUSEIPDB_KEY")
    c.expect(env.get("RIPOSTE_API_TOKEN_ONCALL") == "responder:9f86d081884c7d659a2feaa0c55ad015"
             "a3bf4f1b2b0b822cd15d6c15b0f00a08:soc-oncall", "API token line is not role:sha256:groups")
    c.expect(len(env.get("RIPOSTE_QUICKSTART_TOKEN", "")) == 43, "no generated quickstart token")
    url = secret_values(m.get("Secret", f"{FULLNAME}-external-redis") or {}).get("redis-url")
    c.expect(url == FULL["externalRedis"]["url"], "the external Redis URL is not in its Secret")
    api = component(m, "api")
    if api:
        init = pod_spec(api).get("initContainers") or []
        c.expect([i["image"] for i in init] == ["registry.example.org/soc/plugins:1.2"],
                 "no init container copying the extra plugins")
        env_vars = env_of(pod_spec(api)["containers"][0])
        c.expect(env_vars["RIPOSTE_PLUGINS"]["value"] == "/opt/riposte/extra-plugins",
                 "RIPOSTE_PLUGINS does not point at the extra plugins")
        c.expect("secretKeyRef" in env_vars.get("RIPOSTE_ELASTIC_TOKEN", {}).get("valueFrom", {}),
                 "secrets.env is not a secretKeyRef")
    # A private authority for rediss://: its Secret mounted in every Riposte pod, and named.
    for workload in riposte_workloads(m):
        spec = pod_spec(workload)
        volume = next((v for v in spec.get("volumes") or [] if v["name"] == "redis-ca"), {})
        c.expect(volume.get("secret", {}).get("secretName") == "redis-ca"
                 and volume["secret"].get("items") == [{"key": "ca.crt", "path": "ca.pem"}],
                 f"{workload['metadata']['name']}: the Redis CA Secret is not a volume")
        ctr = spec["containers"][0]
        c.expect(any(mnt["name"] == "redis-ca" and mnt["mountPath"] == "/etc/riposte/redis-ca"
                     for mnt in ctr.get("volumeMounts") or []),
                 f"{workload['metadata']['name']}: the Redis CA is not mounted")
        c.expect(env_of(ctr).get("RIPOSTE_REDIS_CA_FILE", {}).get("value")
                 == "/etc/riposte/redis-ca/ca.pem",
                 f"{workload['metadata']['name']}: RIPOSTE_REDIS_CA_FILE is not the mounted CA")


# --- Main ---------------------------------------------------------------------------------

def merged(*parts: dict) -> dict:
    def merge(a: dict, b: dict) -> dict:
        out = copy.deepcopy(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out
    result: dict = {}
    for p in parts:
        result = merge(result, p)
    return result


def make_validator() -> Callable[[dict, str | None], str | None]:
    import kubernetes_validate

    latest = kubernetes_validate.utils.latest_version()

    def validate(obj: dict, version: str | None) -> str | None:
        try:
            kubernetes_validate.validate(obj, version or latest, strict=True)
            return None
        except kubernetes_validate.ValidationError as error:
            return f"{error.message} at {'.'.join(map(str, error.path))}"
        except kubernetes_validate.SchemaNotFoundError as error:
            return error.message

    return validate


def main() -> int:
    started = time.monotonic()
    try:
        validate = make_validator()
        import helm_python  # noqa: F401  (checked here for a clear message; used by the child)
    except ImportError as error:
        sys.exit(f"{error}: install the pinned packages scripts/test installs "
                 "(helm-python-sdk, kubernetes-validate)")

    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    scenarios = {
        "default values": {},
        "examples/scale-out.yaml": scale_out_values(),
        "bundled Redis": BUNDLED_REDIS,
        "everything on": FULL,
        "SQLite variants": SQLITE_VARIANTS,
    }
    jobs = [{"op": "lint", "chart": str(CHART), "values": v} for v in scenarios.values()]
    jobs.append({"op": "lint", "chart": str(SUBCHART), "values": {}})
    jobs += [{"op": "render", "chart": str(CHART), "values": v} for v in scenarios.values()]
    jobs += [{"op": "render", "chart": str(CHART), "values": v} for _, v, _ in REFUSALS]
    results = run_helm(jobs)
    lints, results = results[:len(scenarios) + 1], results[len(scenarios) + 1:]
    renders, refusals = results[:len(scenarios)], results[len(scenarios):]

    c = Checks()
    for name, lint in zip(list(scenarios) + ["charts/redis"], lints):
        c.scope = f"lint {name}"
        report = lint.get("report") or {}
        # --strict: warnings count as errors; infos (such as "icon is recommended") do not.
        problems = [msg for msg in report.get("messages", []) if msg["severity"] >= 2]
        c.expect(lint["ok"] and not problems and not report.get("errors"),
                 f"helm lint --strict: {lint.get('error') or problems or report.get('errors')}")

    rendered: dict[str, Manifests] = {}
    for name, result in zip(scenarios, renders):
        c.scope = f"template {name}"
        if c.expect(result["ok"], f"helm template failed: {result.get('error')}"):
            rendered[name] = Manifests(result["files"])

    for name, m in rendered.items():
        c.scope = name
        values = merged(defaults, scenarios[name])
        check_schemas(c, m, validate)
        check_labels(c, m)
        check_security(c, m)
        check_probes(c, m)
        check_references(c, m, external={"my-playbooks", "my-plugins", "riposte-redis",
                                          "siem-tokens", "elastic", "redis-ca"})
        redis = bool(values["redis"]["enabled"] or values["externalRedis"]["url"]
                     or values["externalRedis"]["existingSecret"])
        config = check_config(c, m, redis)
        check_env_sources(c, m, config, set(values["secrets"]["existingSecrets"]))
        canaries = [v for k, v in CANARY.items()
                    if (k == "bundled_redis" and name == "bundled Redis")
                    or (k != "bundled_redis" and name == "everything on")]
        check_secrets_stay_secret(c, m, canaries)

    if m := rendered.get("default values"):
        c.scope = "default values"
        check_single_node(c, m, persistent=True)
        check_playbooks(c, m)
        c.expect("/hooks/hello" in m.notes and '"ip": "185.220.101.45"' in m.notes
                 and "RIPOSTE_QUICKSTART_TOKEN" in m.notes and "/api/v1/runs" in m.notes,
                 "NOTES.txt does not show the first webhook and how to list runs")
        c.expect(len(m.of("NetworkPolicy")) == 1, "the default install has no NetworkPolicy")
    if m := rendered.get("SQLite variants"):
        c.scope = "SQLite variants"
        check_single_node(c, m, persistent=False)
        c.expect(m.get("ConfigMap", f"{FULLNAME}-playbooks") is None,
                 "a playbooks ConfigMap although existingConfigMap is set")
        c.expect("NetworkPolicy" not in m.kinds(), "a NetworkPolicy although disabled")
    if m := rendered.get("examples/scale-out.yaml"):
        c.scope = "examples/scale-out.yaml"
        check_redis_mode(c, m, workers=True, bundled=False)
        hpa = m.get("HorizontalPodAutoscaler", f"{FULLNAME}-worker")
        c.expect(hpa is not None and hpa["spec"]["minReplicas"] == 3
                 and hpa["spec"]["maxReplicas"] == 10
                 and hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu",
                 "workers are not autoscaled on CPU from 3 to 10")
        c.expect((component(m, "api") or {}).get("spec", {}).get("replicas") == 2,
                 "the example does not run 2 API pods")
        ing = m.of("Ingress")
        c.expect(len(ing) == 1 and ing[0]["spec"]["rules"][0]["host"] == "riposte.example.com"
                 and ing[0]["spec"].get("tls"), "the example has no TLS ingress for its host")
        c.expect(m.get("Secret", f"{FULLNAME}-external-redis") is None,
                 "the chart made a Redis URL Secret although an existing one is named")
    if m := rendered.get("bundled Redis"):
        c.scope = "bundled Redis"
        check_redis_mode(c, m, workers=True, bundled=True)
        check_bundled_redis(c, m)
        c.expect(m.get("Deployment", f"{FULLNAME}-worker")["spec"].get("replicas") == 2,
                 "worker replicas are not the value given")
    if m := rendered.get("everything on"):
        c.scope = "everything on"
        check_redis_mode(c, m, workers=True, bundled=False)
        check_network_policies(c, m, merged(defaults, FULL))
        check_service_monitor(c, m)
        check_secret_env(c, m)
        c.expect({h["metadata"]["name"] for h in m.of("HorizontalPodAutoscaler")}
                 == {f"{FULLNAME}-api", f"{FULLNAME}-worker"}, "API and worker HPAs")

    for (name, _values, message), result in zip(REFUSALS, refusals):
        c.scope = f"refuses {name}"
        c.expect(not result["ok"], "rendered although it should be refused")
        c.expect(message in result.get("error", ""),
                 f"refused without saying {message!r}: {result.get('error', '')[:300]}")

    elapsed = time.monotonic() - started
    print(f"helm chart: {len(rendered)} renders, {len(REFUSALS)} refusals, "
          f"{sum(len(m.objects) for m in rendered.values())} objects checked in {elapsed:.1f}s")
    print(f"{c.passed} passed, {len(c.failed)} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--helm-worker"]:
        helm_worker()
    else:
        sys.exit(main())
