"""JSON schemas a client sends for constrained decoding (`response_format`, a function's
parameters): checked as JSON Schema, held to what the engine's grammar enforces, and
nested into a larger grammar with their references intact.

The engine's grammar compiler (xgrammar, bundled with openvino-genai) silently ignores some
keywords; an output constrained by such a schema could break it, so those are refused with
a 400 that names the keyword and where it is, rather than accepted and dropped. Measured
on genai 2026.4.1 by sampling a probe model under each keyword and validating what came out
(the list below); `format` is an annotation in JSON Schema and is enforced for the formats
xgrammar knows (date, date-time, time, email, uuid, ipv4, ipv6, hostname, uri, duration).
Anything else that cannot compile is refused by the compiler itself, before the request
is admitted (app/engine/grammar_check.py)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

# Keywords the grammar does not enforce, and why a client would care.
UNENFORCED: dict[str, str] = {
    "not": "negation",
    "if": "conditional subschemas",
    "then": "conditional subschemas",
    "else": "conditional subschemas",
    "contains": "array containment",
    "minContains": "array containment",
    "maxContains": "array containment",
    "dependentRequired": "dependent properties",
    "dependentSchemas": "dependent properties",
    "dependencies": "dependent properties",
    "uniqueItems": "unique array items",
    "multipleOf": "multiples",
    "unevaluatedItems": "unevaluated array items",
    "$dynamicRef": "dynamic references",
    "$dynamicAnchor": "dynamic references",
    "$recursiveRef": "recursive references",
    "$recursiveAnchor": "recursive references",
}
# With `pattern`, xgrammar ignores these (it warns: "Specifying pattern and
# minLength/maxLength/format is not supported yet").
_NOT_WITH_PATTERN = ("minLength", "maxLength", "format")

_BOUNDS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
# Where a schema holds subschemas; everything else is data (enum, const, default,
# examples) or an annotation, and is never walked into.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_VALUES = (
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
    "items",
    "additionalItems",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "unevaluatedItems",
)
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems", "items")


class SchemaError(ValueError):
    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def subschemas(schema: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object in `schema`, itself included, with its JSON pointer."""
    if not isinstance(schema, dict):
        return
    yield path, schema
    for key in _SCHEMA_MAPS:
        value = schema.get(key)
        if isinstance(value, dict):
            for name, sub in value.items():
                yield from subschemas(sub, f"{path}/{key}/{_escape(name)}")
    for key in _SCHEMA_VALUES:
        value = schema.get(key)
        if isinstance(value, dict):
            yield from subschemas(value, f"{path}/{key}")
    for key in _SCHEMA_LISTS:
        value = schema.get(key)
        if isinstance(value, list):
            for i, sub in enumerate(value):
                yield from subschemas(sub, f"{path}/{key}/{i}")


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def check_valid(schema: dict[str, Any], param: str) -> None:
    """A 400 (SchemaError) for a schema that is not valid JSON Schema, or that refers
    outside itself or to nothing: for every schema a client sends, enforced or not."""
    from jsonschema import exceptions, validators

    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        raise SchemaError(f"Invalid JSON schema: {exc.message}", param) from exc
    for path, sub in subschemas(schema):
        ref = sub.get("$ref")
        if not isinstance(ref, str):
            continue
        if ref != "#" and not ref.startswith("#/"):
            raise SchemaError(
                f"JSON schema '$ref' {ref!r} (at {path}) is not supported: only JSON "
                f"pointers within the schema ('#/$defs/...') are, not anchors or other "
                f"documents.",
                param,
            )
        if _target(schema, ref) is _MISSING:
            raise SchemaError(
                f"JSON schema '$ref' {ref!r} (at {path}) points at nothing in the schema.",
                param,
            )


def check_enforceable(schema: dict[str, Any], param: str) -> None:
    """A 400 (SchemaError) for a valid schema the grammar could not hold an output to: a
    keyword it ignores, or a part no value can satisfy (the grammar would let a model
    start that part and then allow no token at all)."""
    check_valid(schema, param)
    for path, sub in subschemas(schema):
        for keyword, what in UNENFORCED.items():
            if keyword in sub:
                raise SchemaError(
                    f"JSON schema keyword '{keyword}' (at {path}) is not supported: the "
                    f"grammar that constrains the output cannot enforce {what}.",
                    param,
                )
        all_of = sub.get("allOf")
        if isinstance(all_of, list) and len(all_of) > 1:
            raise SchemaError(
                f"JSON schema keyword 'allOf' with {len(all_of)} subschemas (at {path}) is "
                f"not supported: the grammar enforces only one; merge them into one schema.",
                param,
            )
        bounds = [sub[k] for k in _BOUNDS if isinstance(sub.get(k), int | float)]
        lower = any(k in sub for k in _BOUNDS[:2])
        upper = any(k in sub for k in _BOUNDS[2:])
        if lower and upper and any(not float(b).is_integer() for b in bounds):
            raise SchemaError(
                f"A number range with a fractional bound on both sides (at {path}) is not "
                f"supported: the grammar for it admits text that is not a number. Use "
                f"whole-number bounds, or one bound.",
                param,
            )
        if "pattern" in sub:
            for keyword in _NOT_WITH_PATTERN:
                if keyword in sub:
                    raise SchemaError(
                        f"JSON schema keyword '{keyword}' beside 'pattern' (at {path}) is not "
                        f"supported: the grammar enforces the pattern alone; write the "
                        f"length into the pattern.",
                        param,
                    )
        properties = sub.get("properties")
        required = sub.get("required")
        open_keys = "patternProperties" in sub or isinstance(sub.get("additionalProperties"), dict)
        if isinstance(required, list) and isinstance(properties, dict) and not open_keys:
            undefined = [name for name in required if name not in properties]
            if undefined:
                raise SchemaError(
                    f"JSON schema 'required' names {undefined[0]!r} (at {path}), which "
                    f"'properties' does not define: the grammar would leave it out.",
                    param,
                )
    unsatisfiable = _unsatisfiable(schema)
    if unsatisfiable is not None:
        raise SchemaError(
            f"JSON schema at {unsatisfiable} admits no value (a reference cycle with no way "
            f"out, or an empty enum): the output could never be completed.",
            param,
        )


_MISSING = object()


def _target(root: Any, ref: str) -> Any:
    from urllib.parse import unquote

    node = root
    for raw in ref[2:].split("/") if ref != "#" else []:
        part = unquote(raw).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _unsatisfiable(root: dict[str, Any]) -> str | None:
    """The pointer of a subschema that no value satisfies, among those an output can
    enter, or None. A least fixed point: every subschema starts unsatisfiable and becomes
    satisfiable once a value for it can be built from satisfiable parts, so a reference
    cycle that never reaches a leaf stays unsatisfiable."""
    from urllib.parse import unquote

    nodes = dict(subschemas(root))
    ok: dict[str, bool] = {path: False for path in nodes}

    def sat(sub: Any, path: str) -> bool:
        if sub is True or sub == {}:
            return True
        if not isinstance(sub, dict):
            return sub is not False
        return ok.get(path, True)

    def satisfiable(path: str, sub: dict[str, Any]) -> bool:
        ref = sub.get("$ref")
        if isinstance(ref, str) and not ok.get("#" + unquote(ref[1:]), True):
            return False
        if sub.get("enum") == []:
            return False
        needs: list[tuple[Any, str]] = []  # parts every value must have a value of
        for key in ("anyOf", "oneOf"):
            options = sub.get(key)
            if (
                isinstance(options, list)
                and options
                and not any(sat(o, f"{path}/{key}/{i}") for i, o in enumerate(options))
            ):
                return False
        if isinstance(sub.get("allOf"), list):
            needs += [(o, f"{path}/allOf/{i}") for i, o in enumerate(sub["allOf"])]
        properties = sub.get("properties")
        if isinstance(properties, dict):
            needs += [
                (properties[name], f"{path}/properties/{_escape(name)}")
                for name in sub.get("required") or []
                if name in properties
            ]
        if isinstance(sub.get("minItems"), int) and sub["minItems"] > 0:
            prefix = sub.get("prefixItems")
            if isinstance(prefix, list) and prefix:
                needs += [(o, f"{path}/prefixItems/{i}") for i, o in enumerate(prefix)]
            elif isinstance(sub.get("items"), dict | bool):
                needs.append((sub["items"], f"{path}/items"))
        return all(sat(part, where) for part, where in needs)

    changed = True
    while changed:
        changed = False
        for path, sub in nodes.items():
            if not ok[path] and satisfiable(path, sub):
                ok[path] = changed = True
    # Any part an output can enter; a definition is entered through its references.
    for path in nodes:
        if not ok[path] and not _defined_only(path):
            return path
    return None


def _defined_only(path: str) -> bool:
    """A definition is reached only through references, which are checked where they are."""
    parts = path.split("/")
    return len(parts) >= 3 and parts[-2] in ("$defs", "definitions")


def nest(schema: dict[str, Any], key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(a reference to use where the schema goes, the schema to put at `$defs/<key>` of
    the enclosing grammar's root). Every reference within the schema is rewritten to point
    under `#/$defs/<key>`, so `#`, `#/$defs/Item` or `#/properties/a` keep meaning what they
    meant, at any depth and in recursion."""
    from urllib.parse import unquote

    moved = copy.deepcopy(schema)
    prefix = f"#/$defs/{_escape(key)}"
    for _, sub in subschemas(moved):
        ref = sub.get("$ref")
        if isinstance(ref, str) and ref.startswith("#"):
            # Percent-decoded: the grammar compiler looks keys up as they are written.
            sub["$ref"] = prefix + unquote(ref[1:])
    return {"$ref": prefix}, moved
