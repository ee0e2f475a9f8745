"""JSON Schema -> Gemini ``Schema`` (pure, stdlib only, no I/O).

Gemini's ``functionDeclarations[].parameters`` and ``generationConfig.responseSchema``
accept only an OpenAPI-3.0 subset and answer anything else with 400 "Invalid JSON
payload received. Unknown name ...". Clients send full JSON Schema (Claude Code,
Codex CLI, MCP servers, pydantic). :func:`to_gemini_schema` rewrites such a schema
so that every level uses only :data:`ALLOWED_KEYS`, keeps the meaning wherever
Gemini can express it, and moves what it cannot into the description as short
text, so the model still sees the constraint. The input is never mutated, the
result shares nothing with it, the function never raises on any JSON value, and
it is idempotent: ``f(f(x)) == f(x)``.

Rules
-----
References
  ``$ref`` to any local JSON pointer (``#``, ``#/$defs/X``, ``#/definitions/X``,
  ``#/$defs/A/properties/b``, ``#/properties/x/items``) is inlined. Keywords next
  to a ``$ref`` are merged over the referenced schema (they win). A reference
  already being expanded ``MAX_REF_DEPTH`` (3) times becomes
  ``{"type": "OBJECT", "description": "<name> (recursive; structure omitted)"}``;
  an unresolvable one (external, anchor, missing) becomes an OBJECT whose
  description says so. After ``NODE_BUDGET`` converted nodes further references
  are no longer expanded (guards against exponential blow-up). ``$defs``,
  ``definitions``, ``$schema``, ``$id``, ``$comment`` are dropped.
Types
  Names are upper-cased (STRING NUMBER INTEGER BOOLEAN ARRAY OBJECT); unknown
  names are dropped. ``"null"`` (alone or in a list) becomes ``nullable: true``.
  A list with several non-null types becomes ``anyOf`` with one member per type;
  type-specific keywords (``properties``, ``items``, ``minLength``, ``minimum``...)
  go only to the matching member, ``enum``/``const`` values are split by type.
  Keywords that apply to another type than the node's are dropped (JSON Schema
  ignores them for other types anyway).
  Every output node has a ``type`` or an ``anyOf`` (Gemini/Vertex reject a
  property "that didn't specify the schema type field"). A node without one is
  inferred: properties/required/additionalProperties -> OBJECT, items/minItems ->
  ARRAY, enum/pattern/minLength -> STRING, minimum/maximum -> NUMBER, then from
  format, default or example; otherwise OBJECT at the root and STRING elsewhere.
  The same applies to non-dict schemas (``true``, ``false``, ``null``, anything):
  they mean "any value" and become ``{"type": "OBJECT"}`` at the root and
  ``{"type": "STRING"}`` inside.
Arrays
  ARRAY without ``items`` gets ``items: {"type": "STRING"}`` (Gemini answers 400
  "...items: missing field" otherwise); ``items: {}`` / ``true`` likewise.
  Tuple forms (``items: [..]``, ``prefixItems``) become ``items`` with ``anyOf``
  of the positions. ``uniqueItems`` -> note "Items must be unique.".
Unions
  ``oneOf`` is treated as ``anyOf`` (if both are given, ``anyOf`` wins). Members
  that are only ``{"type": "null"}`` make the result nullable; a member that
  allows anything makes the union allow anything (the union is dropped); one
  remaining member is inlined (the parent's keywords, e.g. its description,
  win). Otherwise the parent's non-annotation keywords are distributed into each
  member (A and (B or C) == (A and B) or (A and C)), nested pure unions are
  flattened, equal members collapsed, and the parent keeps only title,
  description, nullable and example next to ``anyOf``; a ``default`` on a union
  moves into the description ("Default: x.") since Gemini rejects it there.
  ``allOf`` members are merged into the parent: properties and required are
  unioned, every other keyword is first-wins (the parent first).
const / enum
  ``const: "s"`` -> ``enum: ["s"]``, type STRING. A non-string const keeps (or
  gets) its type and adds "Must be 5."; ``const: null`` -> nullable.
  Gemini enums are string-only: an all-string enum is kept (type STRING). A
  non-string enum is not stringified, since the model would then send "1" where
  the tool expects 1; instead the enum is dropped, the type kept (or inferred
  when the values share one) and "One of: 1, 2, 3." added. ``null`` in an enum
  is removed and sets nullable. An enum on a non-STRING type becomes the note.
Numbers
  ``exclusiveMinimum``/``exclusiveMaximum`` (numeric and draft-4 boolean forms)
  -> ``minimum``/``maximum`` plus "Must be > 0." / "Must be < 10.".
  ``multipleOf`` -> "Must be a multiple of N.". Non-finite bounds are dropped.
Objects
  ``properties`` keys are property names, never keywords. ``required`` (and
  ``propertyOrdering``) are filtered to names present in ``properties``; an
  empty ``properties`` map is dropped, the OBJECT type kept.
  ``additionalProperties``/``patternProperties`` are dropped; a schema-valued
  one on an object without properties adds "Map of string to <type>.".
  ``dependentRequired`` becomes a note.
Annotations
  ``title``, ``description``, ``default`` and ``example`` are kept (values
  copied; non-finite numbers drop them); the first of ``examples`` becomes
  ``example``. ``format`` is kept only where Gemini supports it (STRING: enum,
  date-time; INTEGER: int32, int64; NUMBER: float, double); others become
  "Format: uri." notes. ``deprecated: true`` -> "Deprecated.". Notes are
  appended to the description on a new line.
Everything else
  (``not``, ``if``/``then``/``else``, ``contains``, ``unevaluated*``,
  ``readOnly``, ``writeOnly``, ``contentEncoding``, ``discriminator``, vendor
  keys...) is dropped. Gemini's snake_case aliases (``any_of``, ``max_items``,
  ``property_ordering``...) are read as their camelCase keys.
Limits
  Nesting deeper than ``MAX_DEPTH`` (32) is cut to a STRING whose description
  says so (idempotence is only promised below that depth). Past ``WORK_LIMIT``
  steps (only contrived input gets there, e.g. type lists times unions nested
  many levels deep, whose exact rewrite grows exponentially) the result is
  ``{"type": "OBJECT", "description": "(schema too large to convert)"}``.

Notes on Gemini behaviour that this cannot fix: an OBJECT without properties
(e.g. ``dict[str, Any]``, Qwen Code's free-form ``arguments``) is refused
("...properties: should be non-empty for OBJECT type"); :func:`open_object`
finds one, and the caller then sends the client's JSON Schema as
``parametersJsonSchema`` (which takes free-form objects, as Gemini CLI's own
tools use it) so the model still answers with an object. The root of
``parameters`` should be an OBJECT, which the caller must ensure if the client's
root is a union.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import unquote

__all__ = ["ALLOWED_KEYS", "open_object", "to_gemini_schema"]

# Order used for the output dicts (readability only).
_KEY_ORDER = (
    "type", "format", "title", "description", "nullable", "enum",
    "maxItems", "minItems", "properties", "required", "minProperties",
    "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
    "propertyOrdering", "default", "items", "minimum", "maximum",
)
ALLOWED_KEYS: frozenset[str] = frozenset(_KEY_ORDER)

MAX_REF_DEPTH = 3     # expansions of one $ref inside itself
MAX_DEPTH = 32        # schema nesting (properties, items, unions, refs)
NODE_BUDGET = 10_000  # converted nodes after which $refs are not expanded any more
WORK_LIMIT = 100_000  # beyond this the schema is given up on (contrived input only)

_TYPES = {
    "string": "STRING", "number": "NUMBER", "integer": "INTEGER",
    "boolean": "BOOLEAN", "array": "ARRAY", "object": "OBJECT",
}
_FORMATS = {
    "STRING": ("enum", "date-time"),
    "INTEGER": ("int32", "int64"),
    "NUMBER": ("float", "double"),
}
_ALIASES = {
    "any_of": "anyOf", "one_of": "oneOf", "all_of": "allOf",
    "property_ordering": "propertyOrdering", "max_items": "maxItems",
    "min_items": "minItems", "min_length": "minLength", "max_length": "maxLength",
    "min_properties": "minProperties", "max_properties": "maxProperties",
}
_COUNT_KEYS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")

# JSON Schema keywords that only constrain one instance type.
_OBJ_RAW = frozenset({
    "properties", "required", "additionalProperties", "patternProperties",
    "minProperties", "maxProperties", "propertyNames", "dependentRequired",
    "dependentSchemas", "dependencies", "unevaluatedProperties", "propertyOrdering",
})
_ARR_RAW = frozenset({
    "items", "prefixItems", "additionalItems", "minItems", "maxItems", "uniqueItems",
    "contains", "minContains", "maxContains", "unevaluatedItems",
})
_STR_RAW = frozenset({"minLength", "maxLength", "pattern", "contentEncoding", "contentMediaType"})
_NUM_RAW = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})
_TYPED_RAW = _OBJ_RAW | _ARR_RAW | _STR_RAW | _NUM_RAW | {"format"}
_RAW_FOR = {
    "OBJECT": _OBJ_RAW,
    "ARRAY": _ARR_RAW,
    "STRING": _STR_RAW | {"format"},
    "INTEGER": _NUM_RAW | {"format"},
    "NUMBER": _NUM_RAW | {"format"},
    "BOOLEAN": frozenset(),
}

# Output keywords that only apply to one type (pruned from nodes of other types).
_OBJ_OUT = ("properties", "required", "minProperties", "maxProperties", "propertyOrdering")
_ARR_OUT = ("items", "minItems", "maxItems")
_STR_OUT = ("minLength", "maxLength", "pattern")
_NUM_OUT = ("minimum", "maximum")

# Private keys of the intermediate ("open") form; never in the output.
_NOTES = "\0notes"
_MAP = "\0map"
_ANNOTATIONS = frozenset({"title", "description", "nullable", "default", "example", _NOTES})

_DROP = object()


class _TooBig(Exception):
    pass


class _Ctx:
    __slots__ = ("root", "active", "nodes", "work")

    def __init__(self, root: Any) -> None:
        self.root = root
        self.active: dict[str, int] = {}
        self.nodes = 0  # converted nodes (limits $ref expansion)
        self.work = 0  # converted + closed nodes (limits everything)

    def tick(self) -> None:
        self.work += 1
        if self.work > WORK_LIMIT:
            raise _TooBig


def to_gemini_schema(schema: Any) -> dict:
    """Return a Gemini-compatible copy of the JSON Schema ``schema`` (see module doc)."""
    try:
        return _sanitize(schema)
    except _TooBig:
        return {"type": "OBJECT", "description": "(schema too large to convert)"}
    except Exception:  # last resort; the rules above are meant to make this unreachable
        return {"type": "OBJECT"}


def open_object(converted: dict) -> bool:
    """Whether a :func:`to_gemini_schema` result holds an OBJECT without properties below its
    root, which Gemini's Schema refuses. (At the root it means a tool without parameters.)"""
    nodes = [converted]
    while nodes:
        node = nodes.pop()
        if node is not converted and node.get("type") == "OBJECT" and not node.get("properties"):
            return True
        nodes += [*(node.get("properties") or {}).values(), *node.get("anyOf", ())]
        if isinstance(node.get("items"), dict):
            nodes.append(node["items"])
    return False


def _sanitize(schema: Any) -> dict:
    ctx = _Ctx(schema if isinstance(schema, dict) else {})
    return _fresh(_close(_convert(schema, ctx, 0), ctx, root=True))


# --------------------------------------------------------------------------- convert
# _convert turns one raw JSON Schema node into the "open" form: Gemini keys, but the
# type may be missing, required is unfiltered, anyOf members are open too, notes are
# kept apart (_NOTES) and the additionalProperties note is pending (_MAP). Property
# values and items are closed at once. _close then produces the final node.


def _convert(node: Any, ctx: _Ctx, depth: int) -> dict:
    ctx.nodes += 1
    ctx.tick()
    if not isinstance(node, dict):
        return {}
    if depth > MAX_DEPTH:
        return {_NOTES: ["(structure omitted: nested too deeply)"]}
    node = _unalias(node)
    ref = node.get("$ref")
    if isinstance(ref, str):
        return _convert_ref(ref, node, ctx, depth)
    types, null = _parse_types(node.get("type"))
    if len(types) > 1:
        return _convert_multi(node, types, null, ctx, depth)

    out: dict = {}
    notes: list[str] = []
    if types:
        out["type"] = types[0]
    if null or node.get("nullable") is True:
        out["nullable"] = True
    for key in ("title", "description"):
        if isinstance(node.get(key), str):
            out[key] = node[key]

    if "const" in node:
        _apply_const(node["const"], out, notes)
    elif isinstance(node.get("enum"), list):
        _apply_enum(node["enum"], out, notes)

    _apply_numbers(node, out, notes)
    for key in _COUNT_KEYS:
        n = _count(node.get(key))
        if n is not None:
            out[key] = n
    if isinstance(node.get("pattern"), str):
        out["pattern"] = node["pattern"]
    if isinstance(node.get("format"), str) and node["format"]:
        out["format"] = node["format"]

    # arrays
    items = node.get("items")
    tuple_items = items if isinstance(items, list) else None
    if tuple_items is None and not isinstance(items, dict) and isinstance(node.get("prefixItems"), list):
        tuple_items = node["prefixItems"]
    if tuple_items:
        members = [_convert(m, ctx, depth + 2) for m in tuple_items]
        out["items"] = _close({"anyOf": members}, ctx)
    elif isinstance(items, (dict, bool)):
        out["items"] = _close(_convert(items, ctx, depth + 1), ctx)
    if node.get("uniqueItems") is True:
        notes.append("Items must be unique.")

    # objects
    props = node.get("properties")
    if isinstance(props, dict):
        out["properties"] = {
            name: _close(_convert(sub, ctx, depth + 1), ctx)
            for name, sub in props.items()
            if isinstance(name, str)
        }
    for key in ("required", "propertyOrdering"):
        names = node.get(key)
        if isinstance(names, list):
            names = _dedupe(n for n in names if isinstance(n, str))
            if names:
                out[key] = names
    _apply_map(node, out, ctx, depth)
    dep = node.get("dependentRequired")
    if isinstance(dep, dict):
        for name, needs in dep.items():
            if isinstance(name, str) and isinstance(needs, list):
                needs = [n for n in needs if isinstance(n, str)]
                if needs:
                    notes.append(f"If {name} is given, {', '.join(needs)} must be given too.")

    # annotations
    if node.get("deprecated") is True:
        notes.append("Deprecated.")
    if "default" in node:
        value = _copy_json(node["default"])
        if value is not _DROP:
            out["default"] = value
    example = _DROP
    if "example" in node:
        example = _copy_json(node["example"])
    elif isinstance(node.get("examples"), list) and node["examples"]:
        example = _copy_json(node["examples"][0])
    if example is not _DROP:
        out["example"] = example

    # composition
    union = node.get("anyOf")
    if not isinstance(union, list) or not union:
        union = node.get("oneOf")
    if isinstance(union, list) and union:
        out["anyOf"] = [_convert(m, ctx, depth + 1) for m in union]
    if notes:
        out[_NOTES] = notes
    all_of = node.get("allOf")
    if isinstance(all_of, list):
        for member in all_of:
            out = _merge(out, _convert(member, ctx, depth + 1))
    return out


def _convert_ref(ref: str, node: dict, ctx: _Ctx, depth: int) -> dict:
    siblings = {k: v for k, v in node.items() if k != "$ref"}
    base = _convert(siblings, ctx, depth) if siblings else {}
    name = _ref_name(ref, ctx.root)
    count = ctx.active.get(ref, 0)
    if count >= MAX_REF_DEPTH:
        target = {"type": "OBJECT", _NOTES: [f"{name} (recursive; structure omitted)"]}
    elif ctx.nodes > NODE_BUDGET:
        target = {"type": "OBJECT", _NOTES: [f"{name} (structure omitted)"]}
    else:
        found, raw = _resolve(ref, ctx.root)
        if not found:
            target = {"type": "OBJECT", _NOTES: [f"{ref[:100]} (unresolved reference; structure omitted)"]}
        else:
            ctx.active[ref] = count + 1
            try:
                target = _convert(raw, ctx, depth + 1)
            finally:
                ctx.active[ref] = count
    return _merge(base, target)


def _convert_multi(node: dict, types: list[str], null: bool, ctx: _Ctx, depth: int) -> dict:
    """A node with several non-null types: anyOf with one member per type."""
    generic = {k: v for k, v in node.items() if k not in _TYPED_RAW and k not in ("type", "enum", "const")}
    parent = _convert(generic, ctx, depth)
    if null:
        parent["nullable"] = True
    has_const = "const" in node
    enum = node.get("enum") if isinstance(node.get("enum"), list) else None
    members = []
    for t in types:
        raw = {k: v for k, v in node.items() if k in _RAW_FOR[t]}
        raw["type"] = t
        member = _convert(raw, ctx, depth + 1)
        notes = list(member.get(_NOTES, ()))
        if has_const:
            value = node["const"]
            if value is None:
                parent["nullable"] = True
                continue
            if not _matches(value, t):
                continue
            _apply_const(value, member, notes)
        elif enum is not None:
            values = [v for v in enum if v is None or _matches(v, t)]
            if not any(v is not None for v in values):
                continue
            _apply_enum(values, member, notes)
        if member.pop("nullable", False):
            parent["nullable"] = True
        if notes:
            member[_NOTES] = notes
        members.append(member)
    if not members and not (has_const and node["const"] is None):
        # enum/const matched none of the types: keep the types, say the values in words
        members = [{"type": t} for t in types]
        if has_const:
            parent[_NOTES] = [*parent.get(_NOTES, ()), f"Must be {_render(node['const'])}."]
        elif enum:
            parent[_NOTES] = [*parent.get(_NOTES, ()), _one_of(enum)]
    if members:
        if parent.get("anyOf"):
            members = [_merge(m, {"anyOf": parent["anyOf"]}) for m in members]
        parent["anyOf"] = members
    return parent


def _apply_const(value: Any, out: dict, notes: list[str]) -> None:
    if value is None:
        out["nullable"] = True
    elif isinstance(value, str):
        out["enum"] = [value]
        out.setdefault("type", "STRING")
    else:
        notes.append(f"Must be {_render(value)}.")
        if "type" not in out:
            vt = _value_type(value)
            if vt:
                out["type"] = vt


def _apply_enum(values: list, out: dict, notes: list[str]) -> None:
    rest = [v for v in values if v is not None]
    if len(rest) < len(values):
        out["nullable"] = True
    if not rest:
        return
    if all(isinstance(v, str) for v in rest):
        out["enum"] = _dedupe(rest)
        out.setdefault("type", "STRING")
        return
    notes.append(_one_of(rest))
    if "type" not in out:
        kinds = {_value_type(v) for v in rest}
        if kinds == {"INTEGER"} or kinds == {"BOOLEAN"}:
            out["type"] = kinds.pop()
        elif kinds <= {"INTEGER", "NUMBER"}:
            out["type"] = "NUMBER"


def _apply_numbers(node: dict, out: dict, notes: list[str]) -> None:
    for bound, excl, op in (("minimum", "exclusiveMinimum", ">"), ("maximum", "exclusiveMaximum", "<")):
        value = _num(node.get(bound))
        raw_excl = node.get(excl)
        x = _num(raw_excl)
        if x is not None:
            if value is None or (x >= value if op == ">" else x <= value):
                value = x
                notes.append(f"Must be {op} {_num_text(x)}.")
        elif raw_excl is True and value is not None:
            notes.append(f"Must be {op} {_num_text(value)}.")
        if value is not None:
            out[bound] = value
    step = _num(node.get("multipleOf"))
    if step is not None and step > 0:
        notes.append(f"Must be a multiple of {_num_text(step)}.")


def _apply_map(node: dict, out: dict, ctx: _Ctx, depth: int) -> None:
    """additionalProperties / patternProperties -> pending "Map of string to X." note."""
    label, value = "string", node.get("additionalProperties")
    if not isinstance(value, dict):
        pattern_props = node.get("patternProperties")
        if not (isinstance(pattern_props, dict) and len(pattern_props) == 1):
            return
        ((pattern, value),) = pattern_props.items()
        if not isinstance(value, dict):
            return
        if isinstance(pattern, str) and len(pattern) <= 60:
            label = f"string matching {pattern}"
    opened = _convert(value, ctx, depth + 1)
    if set(opened) <= _ANNOTATIONS:  # any value: nothing worth saying
        return
    out[_MAP] = f"Map of {label} to {_describe(_close(opened, ctx))}."


# --------------------------------------------------------------------------- close


def _close(node: dict, ctx: _Ctx, root: bool = False) -> dict:
    """Open form -> final Gemini node (always has a type or an anyOf)."""
    ctx.tick()
    n = dict(node)
    notes = list(n.pop(_NOTES, ()))
    members = n.pop("anyOf", None)
    if members:
        done = _close_union(n, notes, members, ctx, root)
        if done is not None:
            return done

    map_note = n.pop(_MAP, None)
    t = n.get("type") or _infer(n, map_note) or ("OBJECT" if root else "STRING")
    n["type"] = t
    if t != "OBJECT":
        for key in _OBJ_OUT:
            n.pop(key, None)
        map_note = None
    if t != "ARRAY":
        for key in _ARR_OUT:
            n.pop(key, None)
    if t != "STRING":
        for key in _STR_OUT:
            n.pop(key, None)
        if "enum" in n:
            notes.append(_one_of(n.pop("enum")))
    if t not in ("INTEGER", "NUMBER"):
        for key in _NUM_OUT:
            n.pop(key, None)
    fmt = n.pop("format", None)
    if isinstance(fmt, str) and fmt:
        if fmt in _FORMATS.get(t, ()) and (fmt != "enum" or "enum" in n):
            n["format"] = fmt
        elif fmt != "enum" and len(fmt) <= 40:
            notes.append(f"Format: {fmt}.")
    if t == "ARRAY" and not isinstance(n.get("items"), dict):
        n["items"] = {"type": "STRING"}
    if t == "OBJECT":
        props = n.get("properties") or {}
        if not props:
            n.pop("properties", None)
        for key in ("required", "propertyOrdering"):
            names = [name for name in n.pop(key, ()) if name in props]
            if names:
                n[key] = names
        if map_note and not props:
            notes.append(map_note)
    return _finish(n, notes)


def _close_union(n: dict, notes: list[str], members: list[dict], ctx: _Ctx, root: bool) -> dict | None:
    """Close a node with anyOf members; None means "close it as a plain node"."""
    alive = []
    for member in members:
        if member.get("nullable") is True and set(member) <= _ANNOTATIONS:
            n["nullable"] = True  # a {"type": "null"} member
        else:
            alive.append(member)
    if not alive or any(set(m) <= _ANNOTATIONS for m in alive):
        return None  # only null, or one member allows anything: no union left
    if len(alive) == 1:
        return _close(_merge({**n, _NOTES: notes}, alive[0]), ctx, root)

    shared = {k: v for k, v in n.items() if k not in _ANNOTATIONS}
    closed: list[dict] = []
    for member in alive:
        c = _close(_merge(member, shared) if shared else member, ctx)
        if set(c) <= {"anyOf", "nullable"} and "anyOf" in c:  # nested pure union: flatten
            if c.get("nullable"):
                n["nullable"] = True
            sub = c["anyOf"]
        else:
            sub = [c]
        for s in sub:
            if s not in closed:
                closed.append(s)
    head = {k: v for k, v in n.items() if k in _ANNOTATIONS}
    if len(closed) == 1:
        return _close(_merge({**head, _NOTES: notes}, closed[0]), ctx, root)
    if "default" in head:
        notes.append(f"Default: {_render(head.pop('default'))}.")
    head["anyOf"] = closed
    return _finish(head, notes)


def _finish(n: dict, notes: list[str]) -> dict:
    if notes:
        text = " ".join(_dedupe(notes))
        base = n.get("description")
        n["description"] = f"{base}\n{text}" if base else text
    if n.get("nullable") is not True:
        n.pop("nullable", None)
    return {k: n[k] for k in _KEY_ORDER if k in n}


def _infer(n: dict, map_note: Any) -> str | None:
    if map_note or any(k in n for k in _OBJ_OUT):
        return "OBJECT"
    if any(k in n for k in _ARR_OUT):
        return "ARRAY"
    if "enum" in n or any(k in n for k in _STR_OUT):
        return "STRING"
    if any(k in n for k in _NUM_OUT):
        return "NUMBER"
    fmt = n.get("format")
    if isinstance(fmt, str):
        for t in ("INTEGER", "NUMBER"):
            if fmt in _FORMATS[t]:
                return t
        return "STRING"
    for key in ("default", "example"):
        if key in n:
            vt = _value_type(n[key])
            if vt:
                return vt
    return None


# --------------------------------------------------------------------------- helpers


def _merge(a: dict, b: dict) -> dict:
    """Merge open nodes: a wins, properties/required/notes are unioned."""
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif key == "properties":
            merged = dict(out[key])
            for name, sub in value.items():
                merged.setdefault(name, sub)
            out[key] = merged
        elif key in ("required", "propertyOrdering", _NOTES):
            out[key] = _dedupe([*out[key], *value])
    return out


def _unalias(node: dict) -> dict:
    if not any(k in _ALIASES for k in node):
        return node
    out = dict(node)
    for snake, camel in _ALIASES.items():
        if snake in out:
            value = out.pop(snake)
            out.setdefault(camel, value)
    return out


def _parse_types(raw: Any) -> tuple[list[str], bool]:
    types: list[str] = []
    null = False
    for t in raw if isinstance(raw, list) else [raw]:
        if not isinstance(t, str):
            continue
        t = t.lower()
        if t == "null":
            null = True
        elif t in _TYPES and _TYPES[t] not in types:
            types.append(_TYPES[t])
    return types, null


def _resolve(ref: str, root: Any) -> tuple[bool, Any]:
    if not ref.startswith("#"):
        return False, None
    pointer = unquote(ref[1:])
    if pointer == "":
        return True, root
    if not pointer.startswith("/"):
        return False, None  # "#anchor"
    current = root
    for part in pointer[1:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif (isinstance(current, list) and part.isascii() and part.isdigit() and len(part) < 10
              and int(part) < len(current)):
            current = current[int(part)]
        else:
            return False, None
    return True, current


def _ref_name(ref: str, root: Any) -> str:
    tail = unquote(ref.rsplit("#", 1)[-1]).rstrip("/").rsplit("/", 1)[-1]
    tail = tail.replace("~1", "/").replace("~0", "~")
    if not tail:
        title = root.get("title") if isinstance(root, dict) else None
        tail = title if isinstance(title, str) and title else "root"
    return tail[:80]


def _matches(value: Any, t: str) -> bool:
    if t == "STRING":
        return isinstance(value, str)
    if t == "BOOLEAN":
        return isinstance(value, bool)
    if t == "INTEGER":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if t == "NUMBER":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "ARRAY":
        return isinstance(value, list)
    return isinstance(value, dict)


def _value_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "INTEGER"
    if isinstance(value, float):
        return "NUMBER"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, list):
        return "ARRAY"
    if isinstance(value, dict):
        return "OBJECT"
    return None


def _num(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _count(value: Any) -> int | None:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    value = _num(value)
    if value is None or value < 0 or (isinstance(value, float) and not value.is_integer()):
        return None
    return int(value)


def _num_text(value: int | float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    try:
        return repr(value)
    except ValueError:  # int too large to print
        return "…"


def _render(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    except (ValueError, TypeError, RecursionError):
        text = "…"
    return text if len(text) <= 80 else text[:79] + "…"


def _one_of(values: list) -> str:
    shown = ", ".join(_render(v) for v in values[:30])
    return f"One of: {shown}{', …' if len(values) > 30 else ''}."


def _describe(schema: dict, depth: int = 0) -> str:
    if depth > 3:
        return "value"
    if "anyOf" in schema:
        return " or ".join(_describe(m, depth + 1) for m in schema["anyOf"])
    t = schema.get("type", "value")
    if t == "ARRAY":
        return "array of " + _describe(schema.get("items") or {}, depth + 1)
    return str(t).lower()


def _dedupe(items: Any) -> list:
    """Order-preserving dedupe of strings (or other hashables)."""
    seen: set = set()
    out: list = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _copy_json(value: Any, depth: int = 0) -> Any:
    """Copy a JSON value; _DROP for non-JSON, non-finite or absurdly deep values."""
    if depth > MAX_DEPTH:
        return _DROP
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _DROP
    if isinstance(value, list):
        out = []
        for item in value:
            item = _copy_json(item, depth + 1)
            if item is _DROP:
                return _DROP
            out.append(item)
        return out
    if isinstance(value, dict):
        copied = {}
        for key, item in value.items():
            item = _copy_json(item, depth + 1)
            if not isinstance(key, str) or item is _DROP:
                return _DROP
            copied[key] = item
        return copied
    return _DROP


def _fresh(value: Any) -> Any:
    """Deep copy without sharing (the open form shares closed sub-nodes)."""
    if isinstance(value, dict):
        return {k: _fresh(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fresh(v) for v in value]
    return value
