"""The custom resources the manifests use, as JSON Schemas of their published CRDs' field
structure. kubernetes-validate carries only Kubernetes' own kinds, so these are checked
here instead: every field name, type, enum, bound and required field, as the CRDs declare
them. Their CEL rules are not evaluated, except the ones written out in `cel_rules`.

Sources: InferencePool from the Gateway API Inference Extension's
`api/v1/inferencepool_types.go` and its API reference (inference.networking.k8s.io/v1:
selector.matchLabels, targetPorts 1-8 ports, endpointPickerRef with its port required for
a Service, appProtocol); HTTPRoute v1 as Gateway API's standard channel defines it:
parentRefs, hostnames, and rules with matches, backendRefs and timeouts (Gateway API's
duration format) checked field by field; filters, header and query matches, and the
experimental channel's retry and sessionPersistence allowed as objects, unchecked."""

from __future__ import annotations

from typing import Any

_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
_LABEL_VALUE = {
    "type": "string",
    "maxLength": 63,
    "pattern": r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$",
}
_GROUP = {
    "type": "string",
    "maxLength": 253,
    "pattern": r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
}
_KIND = {
    "type": "string",
    "minLength": 1,
    "maxLength": 63,
    "pattern": r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$",
}
_PORT_NUMBER = {"type": "integer", "minimum": 1, "maximum": 65535}
_PORT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["number"],
    "properties": {"number": _PORT_NUMBER},
}
_DURATION = {"type": "string", "pattern": r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"}


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": _NAME,
                    "namespace": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": _LABEL_VALUE},
                    "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            "spec": spec,
            "status": {"type": "object"},
        },
    }


INFERENCE_POOL = _resource(
    "inference.networking.k8s.io/v1",
    "InferencePool",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["selector", "targetPorts", "endpointPickerRef"],
        "properties": {
            "selector": {
                "type": "object",
                "additionalProperties": False,
                "required": ["matchLabels"],
                "properties": {
                    "matchLabels": {
                        "type": "object",
                        "minProperties": 1,
                        "additionalProperties": _LABEL_VALUE,
                    }
                },
            },
            "targetPorts": {
                "type": "array",
                "minItems": 1,
                "maxItems": 8,
                "uniqueItems": True,
                "items": _PORT,
            },
            "appProtocol": {"enum": ["http", "kubernetes.io/h2c"]},
            "endpointPickerRef": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "group": _GROUP,
                    "kind": _KIND,
                    "name": _NAME,
                    "port": _PORT,
                    "failureMode": {"enum": ["FailOpen", "FailClose"]},
                },
            },
        },
    },
)

_PARENT_REF = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "group": _GROUP,
        "kind": _KIND,
        "namespace": {"type": "string", "minLength": 1, "maxLength": 63},
        "name": _NAME,
        "sectionName": {"type": "string", "minLength": 1, "maxLength": 253},
        "port": _PORT_NUMBER,
    },
}
_MATCH = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "path": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
                "value": {"type": "string", "maxLength": 1024, "pattern": "^/"},
            },
        },
        "headers": {"type": "array", "maxItems": 16, "items": {"type": "object"}},
        "queryParams": {"type": "array", "maxItems": 16, "items": {"type": "object"}},
        "method": {
            "enum": ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]
        },
    },
}
_BACKEND_REF = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "group": _GROUP,
        "kind": _KIND,
        "name": _NAME,
        "namespace": {"type": "string", "minLength": 1, "maxLength": 63},
        "port": _PORT_NUMBER,
        "weight": {"type": "integer", "minimum": 0, "maximum": 1000000},
        "filters": {"type": "array", "maxItems": 16, "items": {"type": "object"}},
    },
}
HTTP_ROUTE = _resource(
    "gateway.networking.k8s.io/v1",
    "HTTPRoute",
    {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "parentRefs": {"type": "array", "maxItems": 32, "items": _PARENT_REF},
            "hostnames": {"type": "array", "maxItems": 16, "items": {"type": "string"}},
            "rules": {
                "type": "array",
                "minItems": 1,
                "maxItems": 16,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 253},
                        "matches": {"type": "array", "maxItems": 64, "items": _MATCH},
                        "filters": {"type": "array", "maxItems": 16, "items": {"type": "object"}},
                        "backendRefs": {"type": "array", "maxItems": 16, "items": _BACKEND_REF},
                        "timeouts": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"request": _DURATION, "backendRequest": _DURATION},
                        },
                        "retry": {"type": "object"},
                        "sessionPersistence": {"type": "object"},
                    },
                },
            },
        },
    },
)

SCHEMAS = {
    ("inference.networking.k8s.io/v1", "InferencePool"): INFERENCE_POOL,
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): HTTP_ROUTE,
}


def cel_rules(obj: dict[str, Any]) -> list[str]:
    """The CRDs' CEL rules the manifests could break, evaluated by hand."""
    problems = []
    if obj["kind"] == "InferencePool":
        ref = obj["spec"]["endpointPickerRef"]
        # "port is required when kind is 'Service'" (kind defaults to Service)
        if ref.get("kind", "Service") == "Service" and "port" not in ref:
            problems.append("endpointPickerRef: port is required when kind is Service")
    if obj["kind"] == "HTTPRoute":
        for rule in obj["spec"].get("rules", []):
            for ref in rule.get("backendRefs", []):
                # "Must have port for Service reference"
                is_service = ref.get("group", "") == "" and ref.get("kind", "Service") == "Service"
                if is_service and "port" not in ref:
                    problems.append(f"backendRef {ref['name']}: a Service needs a port")
    return problems
