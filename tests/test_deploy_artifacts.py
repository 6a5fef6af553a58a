"""Offline checks of the deployment artifacts (SPEC §7): Dockerfile, compose.yaml, k8s/.

compose.yaml and every Kubernetes manifest are validated against the official JSON schemas
vendored under tests/schemas/ (see its README.md); the other tests pin down the operational
promises: probes, resources, hardening, network isolation, one-shot migrations, alerts and
no secret values in the files.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from license_backend.settings import LbsSettings
from repository_service.settings import QrsSettings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
SCHEMAS = ROOT / "tests" / "schemas"
K8S_SCHEMAS = SCHEMAS / "k8s" / "v1.30.0-local-strict"
NAMESPACE = "site-licensing"
PART_OF = {"app.kubernetes.io/part-of": "site-licensing"}

# Not Kubernetes API objects of the vendored schemas: kustomize's own file and a CRD kind.
NOT_MANIFESTS = {"kustomization.yaml", "alerts.yaml"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)
INTERPOLATION = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}$")

LBS = {"app.kubernetes.io/name": "license-backend", "app.kubernetes.io/component": "server"}
QRS = {"app.kubernetes.io/name": "repository-service", "app.kubernetes.io/component": "server"}
LBS_JOB = {"app.kubernetes.io/name": "license-backend", "app.kubernetes.io/component": "migration"}
QRS_JOB = {
    "app.kubernetes.io/name": "repository-service",
    "app.kubernetes.io/component": "migration",
}
POSTGRES = {"app.kubernetes.io/name": "postgres"}
OTHER = {"app.kubernetes.io/name": "something-else"}


# ---- loading --------------------------------------------------------------------------------


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name not in NOT_MANIFESTS)


def k8s_objects() -> list[tuple[str, dict[str, Any]]]:
    return [(path.name, doc) for path in k8s_manifest_files() for doc in load_yaml_docs(path)]


def objects_of(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_objects() if doc["kind"] == kind]


def by_name(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in objects_of(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


@functools.cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


# ---- schema validation ----------------------------------------------------------------------


def k8s_schema_file(doc: dict[str, Any]) -> Path:
    """Return the vendored schema of a manifest: kubernetes-validate's kind-group-version."""
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", doc["apiVersion"])
    return K8S_SCHEMAS / f"{doc['kind'].lower()}-{group_version}.json"


@functools.cache
def k8s_registry() -> Registry:
    definitions = json.loads((K8S_SCHEMAS / "_definitions.json").read_text())
    return Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))


def k8s_errors(doc: dict[str, Any]) -> list[str]:
    schema_file = k8s_schema_file(doc)
    assert schema_file.exists(), (
        f"no vendored schema for {doc['apiVersion']} {doc['kind']}: "
        "run python tests/schemas/vendor_schemas.py"
    )
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.Draft202012Validator(schema, registry=k8s_registry())
    return [
        f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))
    ]


def compose_errors(document: dict[str, Any]) -> list[str]:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    return [
        f"{'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


@pytest.mark.parametrize(
    "doc",
    [doc for _, doc in k8s_objects()],
    ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in k8s_objects()],
)
def test_k8s_manifest_matches_kubernetes_schema(doc: dict[str, Any]) -> None:
    assert k8s_errors(doc) == []


def test_k8s_schema_rejects_unknown_and_mistyped_fields() -> None:
    deployment = json.loads(json.dumps(by_name("Deployment", "repository-service")))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenessprobe"] = container.pop("livenessProbe")  # a typo'd field name
    container["ports"][0]["containerPort"] = "4242"  # a string where an integer belongs
    errors = k8s_errors(deployment)
    assert any("livenessprobe" in e for e in errors), errors
    assert any("containerPort" in e for e in errors), errors


def test_compose_matches_compose_spec_schema() -> None:
    assert compose_errors(compose()) == []


def test_compose_schema_rejects_unknown_fields() -> None:
    document = json.loads(json.dumps(compose()))
    document["services"]["qrs-1"]["restart_policy"] = "always"
    assert any("restart_policy" in e for e in compose_errors(document))


# ---- kustomization and manifests ------------------------------------------------------------


def test_kustomization_lists_every_manifest_except_alerts() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    for name in listed:
        assert (K8S / name).is_file(), f"kustomization lists missing file {name}"
    assert "alerts.yaml" not in listed, "alerts.yaml needs a CRD; keep it out of kustomize"
    assert set(listed) == {p.name for p in k8s_manifest_files()}
    assert kustomization["namespace"] == NAMESPACE


def test_every_object_is_labelled_and_namespaced() -> None:
    for filename, doc in k8s_objects():
        meta = doc["metadata"]
        where = f"{filename}:{doc['kind']}/{meta['name']}"
        assert PART_OF.items() <= meta.get("labels", {}).items(), where
        if doc["kind"] != "Namespace":
            assert meta.get("namespace") == NAMESPACE, where
    assert by_name("Namespace", NAMESPACE)


def workloads() -> list[dict[str, Any]]:
    return objects_of("Deployment") + objects_of("Job")


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


@pytest.mark.parametrize("name", ["license-backend", "repository-service"])
def test_deployment_has_probes_on_the_health_endpoints(name: str) -> None:
    deployment = by_name("Deployment", name)
    for container in pod_spec(deployment)["containers"]:
        ports = {p.get("name") for p in container["ports"]} | {
            p["containerPort"] for p in container["ports"]
        }
        live, ready = container["livenessProbe"], container["readinessProbe"]
        assert live["httpGet"]["path"] == "/health/live"
        assert ready["httpGet"]["path"] == "/health/ready"
        for probe in (live, ready, container.get("startupProbe") or live):
            assert probe["httpGet"]["port"] in ports


@pytest.mark.parametrize(
    ("name", "port"), [("license-backend", 9200), ("repository-service", 4242)]
)
def test_deployment_runs_its_service_on_its_port(name: str, port: int) -> None:
    (container,) = pod_spec(by_name("Deployment", name))["containers"]
    assert container["command"] == [name]
    assert container["args"][0] == "serve"
    assert [p["containerPort"] for p in container["ports"]] == [port]
    config = by_name("ConfigMap", f"{name}-config")["data"]
    prefix = "LBS" if name == "license-backend" else "QRS"
    assert config[f"{prefix}_HOST"] == "0.0.0.0"
    assert config[f"{prefix}_PORT"] == str(port)


@pytest.mark.parametrize(
    "workload", workloads(), ids=lambda w: f"{w['kind']}/{w['metadata']['name']}"
)
def test_workload_has_resources_and_is_hardened(workload: dict[str, Any]) -> None:
    spec = pod_spec(workload)
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] != 0
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec.get("automountServiceAccountToken") is False
    writable = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
    for container in spec["containers"]:
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= container["resources"][kind].keys()
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        assert security.get("runAsNonRoot", True) is True
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert tmp and tmp[0]["name"] in writable, "a read-only root needs a writable /tmp"


@pytest.mark.parametrize("name", ["license-backend", "repository-service"])
def test_deployment_spreads_and_is_covered_by_service_and_pdb(name: str) -> None:
    deployment = by_name("Deployment", name)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == name
    assert PART_OF.items() <= labels.items()
    assert selects(deployment["spec"]["selector"], labels)
    spread = pod_spec(deployment)["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} >= {"kubernetes.io/hostname"}
    assert all(selects(c["labelSelector"], labels) for c in spread)

    service = by_name("Service", name)
    assert selects({"matchLabels": service["spec"]["selector"]}, labels)
    port_names = {p["name"] for p in pod_spec(deployment)["containers"][0]["ports"]}
    assert all(p["targetPort"] in port_names for p in service["spec"]["ports"])
    # The Service must not send traffic to the migration Job's pods.
    job_labels = by_name("Job", f"{name}-migrate")["spec"]["template"]["metadata"]["labels"]
    assert not selects({"matchLabels": service["spec"]["selector"]}, job_labels)

    pdbs = [p for p in objects_of("PodDisruptionBudget") if selects(p["spec"]["selector"], labels)]
    assert len(pdbs) == 1


def test_repository_service_autoscales_and_names_each_replica() -> None:
    hpa = by_name("HorizontalPodAutoscaler", "repository-service")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "repository-service",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    deployment = by_name("Deployment", "repository-service")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    (container,) = pod_spec(deployment)["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["QRS_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    config = by_name("ConfigMap", "repository-service-config")["data"]
    jwks_path = Path(config["QRS_AUTH_JWKS_FILE"])
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert str(jwks_path.parent) in mounts, "QRS_AUTH_JWKS_FILE must be mounted"


def test_repository_service_trusts_the_vendor_root_from_a_mounted_config_map() -> None:
    config = by_name("ConfigMap", "repository-service-config")["data"]
    assert "QRS_LBS_JWKS_FILE" not in config
    root_file = Path(config["QRS_LBS_TRUST_ROOT_FILE"])
    spec = pod_spec(by_name("Deployment", "repository-service"))
    (container,) = spec["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(root_file.parent)]
    assert mount["readOnly"] is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    trust_root = by_name("ConfigMap", volume["configMap"]["name"])
    assert root_file.name in trust_root["data"]
    # The template holds no root: a site refuses to start until the vendor's is filled in.
    assert json.loads(trust_root["data"][root_file.name]) == {"keys": []}


@pytest.mark.parametrize("name", ["license-backend", "repository-service"])
def test_each_service_has_a_migration_job(name: str) -> None:
    job = by_name("Job", f"{name}-migrate")
    spec = pod_spec(job)
    (container,) = spec["containers"]
    assert [*container["command"], *container["args"]] == [name, "migrate"]
    assert spec["restartPolicy"] in {"Never", "OnFailure"}
    assert job["spec"]["backoffLimit"] >= 1


def test_secrets_are_templates_and_configmaps_hold_no_secrets() -> None:
    for secret in objects_of("Secret"):
        assert "data" not in secret, "templates use stringData with placeholders"
        for key, value in secret["stringData"].items():
            assert "REPLACE_ME" in value, f"{secret['metadata']['name']}.{key} is not a placeholder"
    for config in objects_of("ConfigMap"):
        for key in config["data"]:
            assert not SECRET_NAME.search(key) and "DATABASE_URL" not in key, (
                f"{config['metadata']['name']}.{key} belongs in a Secret"
            )


# ---- settings names -------------------------------------------------------------------------


def setting_names() -> set[str]:
    return {f"LBS_{field.upper()}" for field in LbsSettings.model_fields} | {
        f"QRS_{field.upper()}" for field in QrsSettings.model_fields
    }


def configured_names() -> Iterator[tuple[str, str]]:
    for config in objects_of("ConfigMap"):
        for key in config["data"]:
            yield f"k8s ConfigMap {config['metadata']['name']}", key
    for secret in objects_of("Secret"):
        for key in secret["stringData"]:
            yield f"k8s Secret {secret['metadata']['name']}", key
    for workload in workloads():
        for container in pod_spec(workload)["containers"]:
            for item in container.get("env", []):
                yield f"k8s {workload['kind']} {workload['metadata']['name']}", item["name"]
    for name, service in compose()["services"].items():
        for key in compose_env(service):
            yield f"compose service {name}", key
        for secret in service.get("secrets", []):
            if isinstance(secret, dict) and "target" in secret:
                yield f"compose service {name} secret", Path(secret["target"]).name


def test_every_lbs_and_qrs_variable_is_a_real_setting() -> None:
    known = setting_names()
    unknown = [
        f"{where}: {key}"
        for where, key in configured_names()
        if key.startswith(("LBS_", "QRS_")) and key not in known
    ]
    assert unknown == []


# ---- network policy -------------------------------------------------------------------------


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Return whether a Kubernetes label selector matches a label set."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        present = key in labels
        ok = {
            "In": present and labels.get(key) in values,
            "NotIn": not present or labels.get(key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]
        if not ok:
            return False
    return True


def policies(labels: dict[str, str], direction: str) -> list[dict[str, Any]]:
    """Return the NetworkPolicies that isolate pods with `labels` in `direction`."""
    found = []
    for policy in objects_of("NetworkPolicy"):
        spec = policy["spec"]
        types = spec.get("policyTypes") or ["Ingress"] + (["Egress"] if "egress" in spec else [])
        if direction in types and selects(spec["podSelector"], labels):
            found.append(spec)
    return found


def port_allowed(rule: dict[str, Any], port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    return not ports or any(
        p.get("port") in (None, port) and p.get("protocol", "TCP") == protocol for p in ports
    )


def peer_allowed(rule: dict[str, Any], key: str, peer: dict[str, str] | None) -> bool:
    """`peer` is a pod of this namespace by labels, or None for anything outside it."""
    peers = rule.get(key)
    if not peers:
        return True
    for item in peers:
        if "ipBlock" in item:
            return True  # an address range may cover anything, pods included
        if peer is None:
            if "namespaceSelector" in item:
                return True
        elif selects(item.get("podSelector", {}), peer):
            return True  # a namespaceSelector, if any, may include this namespace
    return False


def admits(
    direction: str,
    pod: dict[str, str],
    peer: dict[str, str] | None,
    port: int,
    protocol: str = "TCP",
) -> bool:
    """Return whether the policies let `pod` talk to / hear from `peer` on `port`."""
    key, rules_key = ("from", "ingress") if direction == "Ingress" else ("to", "egress")
    isolating = policies(pod, direction)
    if not isolating:
        return True
    return any(
        port_allowed(rule, port, protocol) and peer_allowed(rule, key, peer)
        for spec in isolating
        for rule in spec.get(rules_key, [])
    )


def connects(client: dict[str, str], server: dict[str, str], port: int) -> bool:
    return admits("Egress", client, server, port) and admits("Ingress", server, client, port)


def test_namespace_denies_all_traffic_by_default() -> None:
    default_deny = [
        p["spec"]
        for p in objects_of("NetworkPolicy")
        if p["spec"]["podSelector"] == {}
        and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert default_deny, "no default-deny NetworkPolicy"
    assert not connects(OTHER, OTHER, 8080)
    assert not admits("Egress", OTHER, None, 443)


def test_only_repository_service_pods_reach_the_license_backend() -> None:
    assert connects(QRS, LBS, 9200)
    for client in (OTHER, POSTGRES, LBS, LBS_JOB, QRS_JOB):
        assert not admits("Ingress", LBS, client, 9200), client
    assert not admits("Ingress", LBS, None, 9200), "LBS is open outside the namespace"
    assert not admits("Ingress", LBS, QRS, 5432), "QRS may use the LBS port only"
    for spec in policies(LBS, "Ingress"):
        for rule in spec.get("ingress", []):
            assert rule.get("from"), "an ingress rule without `from` admits everyone"
            assert [p["port"] for p in rule.get("ports", [])] == [9200]


def test_only_the_services_reach_postgres() -> None:
    for client in (LBS, QRS, LBS_JOB, QRS_JOB):
        assert connects(client, POSTGRES, 5432), client
        assert admits("Egress", client, None, 5432), "a managed Postgres must stay reachable"
    for client in (OTHER, POSTGRES):
        assert not connects(client, POSTGRES, 5432), client
    assert not admits("Ingress", POSTGRES, None, 5432)


def test_repository_service_is_reachable_and_dns_works() -> None:
    assert admits("Ingress", QRS, OTHER, 4242)
    assert admits("Ingress", QRS, None, 4242), "the ingress controller must reach the QRS"
    assert not admits("Ingress", QRS, OTHER, 22)
    for pod in (LBS, QRS, LBS_JOB, QRS_JOB, OTHER):
        assert admits("Egress", pod, None, 53, "UDP") and admits("Egress", pod, None, 53, "TCP")


# ---- alerts ---------------------------------------------------------------------------------


def alert_rules() -> dict[str, dict[str, Any]]:
    (rule_object,) = load_yaml_docs(K8S / "alerts.yaml")
    assert rule_object["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule_object["kind"] == "PrometheusRule"
    assert rule_object["metadata"]["namespace"] == NAMESPACE
    rules = [rule for group in rule_object["spec"]["groups"] for rule in group["rules"]]
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names repeat"
    return {rule["alert"]: rule for rule in rules}


def balanced(expr: str) -> bool:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    stack: list[str] = []
    for char in expr:
        if char in "([{":
            stack.append(")]}"["([{".index(char)])
        elif char in ")]}" and (not stack or stack.pop() != char):
            return False
    return not stack


def test_alert_rules_parse_and_are_complete() -> None:
    for name, rule in alert_rules().items():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
        assert isinstance(rule["expr"], str) and balanced(rule["expr"]), name
        assert re.fullmatch(r"\d+[smhd]", rule["for"]), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"], name


@pytest.mark.parametrize(
    "pattern",
    [
        r"qrs_seconds_since_last_successful_poll\b.*>\s*3600\b",
        r"qrs_definition_expires_in_seconds\b.*<\s*(7\s*\*\s*86400|604800)\b",
        r'sum\b.*rate\(\s*qrs_access_decisions_total\{granted="false"\}\[5m\]\s*\)\s*\)\s*>',
        r'kube_pod_status_ready\{[^}]*condition="false"',
        r"\bup(\{[^}]*\})?\s*==\s*0\b",
    ],
)
def test_alerts_watch_the_service_metrics(pattern: str) -> None:
    assert any(re.search(pattern, rule["expr"]) for rule in alert_rules().values()), pattern


# ---- Dockerfile -----------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Return the Dockerfile's instructions as (KEYWORD, arguments), grouped by stage."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stages.append([])
        assert stages, "the Dockerfile must start with FROM"
        stages[-1].append((keyword, args.strip()))
    return stages


def instructions(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for key, args in stage if key == keyword]


def test_dockerfile_is_multi_stage_with_a_slim_runtime() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    final = stages[-1]
    assert instructions(final, "FROM")[0].split()[0] == "python:3.11-slim"
    copies = instructions(final, "COPY")
    assert any(c.startswith("--from=") and "/opt/venv" in c for c in copies), copies
    assert all(c.startswith("--from=") for c in copies), "the runtime copies the venv only"
    build_tools = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cmake|[a-z0-9]+-dev)\b")
    for run in instructions(final, "RUN"):
        assert not ("apt-get install" in run and build_tools.search(run)), run


def test_dockerfile_runs_as_a_numeric_non_root_user() -> None:
    users = instructions(dockerfile_stages()[-1], "USER")
    assert users, "the runtime stage has no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_dockerfile_healthcheck_probes_liveness_with_python() -> None:
    (healthcheck,) = instructions(dockerfile_stages()[-1], "HEALTHCHECK")
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"]
    compile(command[2], "<healthcheck>", "exec")
    assert "/health/live" in command[2]
    assert "curl" not in healthcheck and "wget" not in healthcheck


def test_dockerfile_exposes_both_ports_and_runs_a_console_script() -> None:
    final = dockerfile_stages()[-1]
    exposed = {port for args in instructions(final, "EXPOSE") for port in args.split()}
    assert {"4242", "9200"} <= exposed
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    (cmd,) = instructions(final, "CMD")
    assert json.loads(cmd)[0] in scripts
    assert not instructions(final, "ENTRYPOINT"), "the first argument must choose the service"


def test_dockerfile_bakes_in_no_secrets() -> None:
    for stage in dockerfile_stages():
        for keyword in ("ENV", "ARG"):
            for args in instructions(stage, keyword):
                words = shlex.split(args)
                if keyword == "ENV" and len(words) == 2 and "=" not in words[0]:
                    words = [f"{words[0]}={words[1]}"]  # the legacy `ENV KEY value` form
                for word in words:
                    name = word.split("=", 1)[0]
                    assert not SECRET_NAME.search(name), f"{keyword} {name} in the Dockerfile"


def test_dockerfile_bakes_the_trust_root_build_arg_in_as_the_sites_default() -> None:
    final = dockerfile_stages()[-1]
    args = [shlex.split(a)[0].split("=", 1)[0] for a in instructions(final, "ARG")]
    assert "LBS_TRUST_ROOT" in args
    env = dict(word.split("=", 1) for e in instructions(final, "ENV") for word in shlex.split(e))
    root_file = env["QRS_LBS_TRUST_ROOT_FILE"]
    assert "lbs_trust_root_file" in QrsSettings.model_fields
    writes = [r for r in instructions(final, "RUN") if "$LBS_TRUST_ROOT" in r]
    assert writes and f"> {root_file}" in writes[0]
    # The root is checked at build time with the same code the site uses.
    assert "roots_from_document" in writes[0]


def test_dockerignore_keeps_the_context_small_and_secret_free() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".licensing", "tests", "bench", "secrets", ".env"} <= ignored
    assert ignored & {"**/__pycache__", "__pycache__"}


# ---- compose --------------------------------------------------------------------------------


def services_running(script: str, subcommand: str) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if command_of(service)[:2] == [script, subcommand]
    }


def test_compose_postgres_keeps_its_data_and_reports_health() -> None:
    postgres = compose()["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    volumes = [
        v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in postgres["volumes"]
    ]
    named = [v.split(":")[0] for v in volumes if v.endswith(":/var/lib/postgresql/data")]
    assert named and named[0] in compose()["volumes"], "the data directory needs a named volume"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    env = compose_env(postgres)
    assert "POSTGRES_PASSWORD" not in env
    assert env["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/")


def test_compose_migrations_are_one_shot_and_gate_the_services() -> None:
    services = compose()["services"]
    migrations = {
        **services_running("license-backend", "migrate"),
        **services_running("repository-service", "migrate"),
    }
    assert set(migrations) == {"lbs-migrate", "qrs-migrate"}
    for name, service in migrations.items():
        assert service["restart"] == "no", name
        assert service["depends_on"]["db-init"]["condition"] == "service_completed_successfully"
    assert services["db-init"]["restart"] == "no"
    assert services["db-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for script, migration in (
        ("license-backend", "lbs-migrate"),
        ("repository-service", "qrs-migrate"),
    ):
        for name, service in services_running(script, "serve").items():
            assert "--no-migrate" in command_of(service), name
            condition = service["depends_on"][migration]["condition"]
            assert condition == "service_completed_successfully", name
            assert "healthcheck" in service, name


def test_compose_runs_two_repository_service_replicas() -> None:
    replicas = services_running("repository-service", "serve")
    assert len(replicas) >= 2
    ids = [compose_env(service)["QRS_INSTANCE_ID"] for service in replicas.values()]
    assert len(set(ids)) == len(ids)
    urls = {compose_env(service)["QRS_DATABASE_URL"] for service in replicas.values()}
    assert len(urls) == 1, "replicas share one database"
    host_ports = [p.rsplit(":", 1)[0] for s in replicas.values() for p in s.get("ports", [])]
    assert len(set(host_ports)) == len(host_ports)
    lbs_url = {compose_env(service)["QRS_LBS_URL"] for service in replicas.values()}
    lbs_env = compose_env(compose()["services"]["license-backend"])
    assert lbs_url == {lbs_env["LBS_PUBLIC_URL"]}, "the QRS must expect the LBS's `iss`"


def test_compose_sites_trust_the_backend_root_from_a_file() -> None:
    declared = {**compose().get("configs", {}), **compose().get("secrets", {})}
    for name, service in services_running("repository-service", "serve").items():
        env = compose_env(service)
        assert "QRS_LBS_JWKS_FILE" not in env, name
        root_file = env["QRS_LBS_TRUST_ROOT_FILE"]
        mounted = {
            item["target"]: item["source"]
            for item in [*service.get("configs", []), *service.get("secrets", [])]
            if isinstance(item, dict)
        }
        assert root_file in mounted, f"{name}: QRS_LBS_TRUST_ROOT_FILE is not mounted"
        assert declared[mounted[root_file]]["file"].startswith("./secrets/"), name


def test_compose_services_use_their_own_databases() -> None:
    databases: dict[str, set[str]] = {}
    for service in compose()["services"].values():
        for key, value in compose_env(service).items():
            if key.endswith("_DATABASE_URL"):
                databases.setdefault(key, set()).add(value.rsplit("/", 1)[-1])
    assert databases == {"LBS_DATABASE_URL": {"lbs"}, "QRS_DATABASE_URL": {"qrs"}}


def test_compose_holds_no_literal_secrets() -> None:
    declared = compose().get("secrets", {})
    for definition in declared.values():
        assert set(definition) == {"file"} and definition["file"].startswith("./secrets/")
    for name, service in compose()["services"].items():
        for key, value in compose_env(service).items():
            if key.endswith("_FILE"):
                assert value.startswith(("/run/secrets/", "/etc/")), f"{name}: {key}"
            elif SECRET_NAME.search(key):
                assert INTERPOLATION.match(value), f"{name}: {key} has a literal value"
            if "://" in value:
                assert not re.search(r"://[^/@:]+:[^@$]+@", value), f"{name}: password in {key}"
        for secret in service.get("secrets", []):
            source = secret if isinstance(secret, str) else secret["source"]
            assert source in declared, f"{name} uses undeclared secret {source}"
