"""converters.gemini_schema: JSON Schema from real clients -> Gemini's OpenAPI subset."""

from __future__ import annotations

import copy
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converters import canonical as cn
from converters import gemini
from converters import gemini_schema as gs
from converters.gemini_schema import ALLOWED_KEYS, open_object, to_gemini_schema

GEMINI_TYPES = {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT"}
FORMATS = {"STRING": {"enum", "date-time"}, "INTEGER": {"int32", "int64"}, "NUMBER": {"float", "double"}}


def assert_gemini(schema, path="$"):
    """Strict check: only allowed keys, and the shapes Gemini rejects never appear."""
    assert isinstance(schema, dict), path
    assert set(schema) <= ALLOWED_KEYS, (path, set(schema) - ALLOWED_KEYS)
    assert "type" in schema or "anyOf" in schema, (path, "no type")  # Vertex: "didn't specify the schema type"
    t = schema.get("type")
    if t is not None:
        assert t in GEMINI_TYPES, (path, t)
    if "anyOf" in schema:
        assert isinstance(schema["anyOf"], list) and len(schema["anyOf"]) >= 2, path
        assert "default" not in schema, path
        for i, member in enumerate(schema["anyOf"]):
            assert_gemini(member, f"{path}.anyOf[{i}]")
    if t == "ARRAY":
        assert "items" in schema, (path, "ARRAY without items")  # Gemini: "items: missing field"
    if "items" in schema:
        assert t == "ARRAY", path
        assert_gemini(schema["items"], f"{path}.items")
    if "properties" in schema:
        assert t == "OBJECT" and isinstance(schema["properties"], dict) and schema["properties"], path
        for name, sub in schema["properties"].items():
            assert isinstance(name, str)
            assert_gemini(sub, f"{path}.properties[{name}]")
    for key in ("required", "propertyOrdering"):
        if key in schema:
            names = schema[key]
            assert names and all(isinstance(n, str) for n in names), path
            assert set(names) <= set(schema.get("properties", {})), (path, key)  # "property is not defined"
    if "enum" in schema:
        assert t == "STRING", path
        assert schema["enum"] and all(isinstance(v, str) for v in schema["enum"]), path
    if "format" in schema:
        assert schema["format"] in FORMATS.get(t, ()), path
    if "nullable" in schema:
        assert schema["nullable"] is True, path
    for key in ("title", "description", "pattern"):
        if key in schema:
            assert isinstance(schema[key], str), (path, key)
    for key in ("minimum", "maximum"):
        if key in schema:
            v = schema[key]
            assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), path
    for key in ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties"):
        if key in schema:
            assert type(schema[key]) is int and schema[key] >= 0, (path, key)


def convert(schema):
    """Convert and check the invariants every test relies on."""
    before = copy.deepcopy(schema)
    out = to_gemini_schema(schema)
    assert schema == before, "input was mutated"
    assert_gemini(out)
    json.dumps(out, allow_nan=False)
    assert to_gemini_schema(out) == out, "not idempotent"
    return out


def walk_props(schema, path=()):
    """All (path, property name) pairs, to compare property sets."""
    for name, sub in (schema.get("properties") or {}).items():
        yield path + (name,)
        yield from walk_props(sub, path + (name,))
    if isinstance(schema.get("items"), dict):
        yield from walk_props(schema["items"], path + ("[]",))


# --------------------------------------------------------------------------- real-world schemas

DRAFT7 = "http://json-schema.org/draft-07/schema#"

CLAUDE_CODE_TOOLS = {
    "Bash": {
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "The command to execute"},
            "timeout": {"type": "number", "description": "Optional timeout in milliseconds (max 600000)"},
            "description": {
                "type": "string",
                "description": "Clear, concise description of what this command does in 5-10 words, in active voice.",
            },
            "run_in_background": {
                "type": "boolean",
                "description": "Set to true to run this command in the background. Use BashOutput to read the output later.",
            },
        },
        "required": ["command"],
        "additionalProperties": False,
        "$schema": DRAFT7,
    },
    "Edit": {
        "type": "object",
        "properties": {
            "file_path": {"type": "string", "description": "The absolute path to the file to modify"},
            "old_string": {"type": "string", "description": "The text to replace"},
            "new_string": {
                "type": "string",
                "description": "The text to replace it with (must be different from old_string)",
            },
            "replace_all": {
                "type": "boolean",
                "default": False,
                "description": "Replace all occurences of old_string (default false)",
            },
        },
        "required": ["file_path", "old_string", "new_string"],
        "additionalProperties": False,
        "$schema": DRAFT7,
    },
    "MultiEdit": {
        "type": "object",
        "properties": {
            "file_path": {"type": "string", "description": "The absolute path to the file to modify"},
            "edits": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "old_string": {"type": "string", "description": "The text to replace"},
                        "new_string": {"type": "string", "description": "The text to replace it with"},
                        "replace_all": {"type": "boolean", "default": False, "description": "Replace all occurences"},
                    },
                    "required": ["old_string", "new_string"],
                    "additionalProperties": False,
                },
                "minItems": 1,
                "description": "Array of edit operations to perform sequentially on the file",
            },
        },
        "required": ["file_path", "edits"],
        "additionalProperties": False,
        "$schema": DRAFT7,
    },
    "TodoWrite": {
        "type": "object",
        "properties": {
            "todos": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "content": {"type": "string", "minLength": 1},
                        "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
                        "activeForm": {"type": "string", "minLength": 1},
                    },
                    "required": ["content", "status", "activeForm"],
                    "additionalProperties": False,
                },
                "description": "The updated todo list",
            }
        },
        "required": ["todos"],
        "additionalProperties": False,
        "$schema": DRAFT7,
    },
    "Grep": {
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "description": "The regular expression pattern to search for in file contents"},
            "path": {"type": "string", "description": "File or directory to search in. Defaults to current working directory."},
            "glob": {"type": "string", "description": "Glob pattern to filter files (e.g. \"*.js\", \"*.{ts,tsx}\")"},
            "output_mode": {
                "type": "string",
                "enum": ["content", "files_with_matches", "count"],
                "description": "Output mode. Defaults to \"files_with_matches\".",
            },
            "-B": {"type": "number", "description": "Number of lines to show before each match"},
            "-A": {"type": "number", "description": "Number of lines to show after each match"},
            "-n": {"type": "boolean", "description": "Show line numbers in output"},
            "-i": {"type": "boolean", "description": "Case insensitive search"},
            "type": {"type": "string", "description": "File type to search (rg --type)"},
            "head_limit": {"type": "number", "description": "Limit output to first N lines/entries"},
        },
        "required": ["pattern"],
        "additionalProperties": False,
        "$schema": DRAFT7,
    },
    "WebFetch": {
        "type": "object",
        "properties": {
            "url": {"type": "string", "format": "uri", "description": "The URL to fetch content from"},
            "prompt": {"type": "string", "description": "The prompt to run on the fetched content"},
        },
        "required": ["url", "prompt"],
        "additionalProperties": False,
        "$schema": DRAFT7,
    },
}

CODEX_TOOLS = {
    "shell": {
        "type": "object",
        "properties": {
            "command": {"type": "array", "items": {"type": "string"}, "description": "The command to execute"},
            "workdir": {"type": "string", "description": "The working directory to execute the command in"},
            "timeout_ms": {"type": "number", "description": "The timeout for the command in milliseconds"},
            "with_escalated_permissions": {
                "type": "boolean",
                "description": "Whether to request escalated permissions.",
            },
        },
        "required": ["command"],
        "additionalProperties": False,
    },
    "update_plan": {
        "type": "object",
        "properties": {
            "explanation": {"type": "string"},
            "plan": {
                "type": "array",
                "description": "The list of steps",
                "items": {
                    "type": "object",
                    "properties": {
                        "step": {"type": "string"},
                        "status": {"type": "string", "description": "One of: pending, in_progress, completed"},
                    },
                    "required": ["step", "status"],
                    "additionalProperties": False,
                },
            },
        },
        "required": ["plan"],
        "additionalProperties": False,
    },
    "view_image": {
        "type": "object",
        "properties": {"path": {"type": "string", "description": "Local filesystem path to an image file"}},
        "required": ["path"],
        "additionalProperties": False,
    },
}

# Owner.model_json_schema() from pydantic 2.x (str Enum, IntEnum, Optional nested model,
# discriminated union with Literal, list default, dict[str, int], Any).
PYDANTIC_OWNER = {
    "$defs": {
        "Address": {
            "description": "A postal address.",
            "properties": {
                "street": {"title": "Street", "type": "string"},
                "city": {"title": "City", "type": "string"},
                "zip": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "title": "Zip"},
            },
            "required": ["street", "city"],
            "title": "Address",
            "type": "object",
        },
        "Cat": {
            "properties": {
                "pet_type": {"const": "cat", "title": "Pet Type", "type": "string"},
                "meows": {"minimum": 0, "title": "Meows", "type": "integer"},
            },
            "required": ["pet_type", "meows"],
            "title": "Cat",
            "type": "object",
        },
        "Dog": {
            "properties": {
                "pet_type": {"const": "dog", "title": "Pet Type", "type": "string"},
                "bark_volume": {"exclusiveMinimum": 0, "maximum": 10, "title": "Bark Volume", "type": "number"},
            },
            "required": ["pet_type", "bark_volume"],
            "title": "Dog",
            "type": "object",
        },
        "Level": {"enum": [1, 2, 3], "title": "Level", "type": "integer"},
        "Priority": {"enum": ["low", "high"], "title": "Priority", "type": "string"},
    },
    "description": "Create an owner record.",
    "properties": {
        "name": {"description": "Full name", "minLength": 1, "title": "Name", "type": "string"},
        "address": {
            "anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}],
            "default": None,
            "description": "Home address",
        },
        "priority": {"$ref": "#/$defs/Priority", "default": "low"},
        "level": {"$ref": "#/$defs/Level", "default": 1},
        "pet": {
            "discriminator": {"mapping": {"cat": "#/$defs/Cat", "dog": "#/$defs/Dog"}, "propertyName": "pet_type"},
            "oneOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}],
            "title": "Pet",
        },
        "tags": {"default": [], "items": {"type": "string"}, "title": "Tags", "type": "array"},
        "metadata": {"additionalProperties": {"type": "integer"}, "default": {}, "title": "Metadata", "type": "object"},
        "extra": {"default": None, "title": "Extra"},
    },
    "required": ["name", "pet"],
    "title": "Owner",
    "type": "object",
}

# A fetch/crawl MCP server: draft 2020-12 with $defs, oneOf, exclusive bounds, formats,
# examples, a recursive tree, a nested pointer, a zod-to-json-schema style "#/properties/.."
# reference, draft-4 boolean exclusiveMinimum, and a required name that does not exist.
MCP_CRAWL = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://example.com/crawl.schema.json",
    "$comment": "generated",
    "type": "object",
    "properties": {
        "url": {
            "type": "string",
            "format": "uri",
            "description": "URL to fetch",
            "examples": ["https://example.com/docs", "https://example.org"],
        },
        "max_length": {
            "type": "integer",
            "exclusiveMinimum": 0,
            "exclusiveMaximum": 1000000,
            "default": 5000,
            "description": "Maximum number of characters to return.",
        },
        "start_index": {"type": "integer", "minimum": 0, "default": 0},
        "timeout": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "description": "Seconds."},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Extra HTTP headers"},
        "auth": {"oneOf": [{"$ref": "#/$defs/BasicAuth"}, {"$ref": "#/$defs/TokenAuth"}, {"type": "null"}]},
        "retry": {"$ref": "#/$defs/Retry", "description": "Retry policy"},
        "selectors": {"$ref": "#/$defs/Selector"},
        "output": {"type": ["string", "null"], "enum": ["html", "markdown", None], "default": "markdown"},
        "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}, "uniqueItems": True, "maxItems": 10},
        "page_size": {"type": ["integer", "null"], "multipleOf": 10, "maximum": 100},
        "mode": {"const": "crawl"},
        "depth": {"const": 2, "description": "Fixed crawl depth"},
        "since": {"type": "string", "format": "date-time"},
        "source": {"type": "string", "description": "Where to start", "minLength": 1},
        "destination": {"$ref": "#/properties/source"},
        "not_after": {"not": {"type": "null"}, "type": "string", "format": "date"},
        "contact": {"type": "string", "format": "email", "readOnly": True, "deprecated": True},
    },
    "required": ["url", "missing_prop"],
    "additionalProperties": False,
    "$defs": {
        "BasicAuth": {
            "type": "object",
            "properties": {
                "kind": {"const": "basic"},
                "username": {"type": "string"},
                "password": {"type": "string", "writeOnly": True},
            },
            "required": ["kind", "username", "password"],
        },
        "TokenAuth": {
            "type": "object",
            "properties": {"kind": {"const": "token"}, "token": {"type": "string", "contentEncoding": "base64"}},
            "required": ["kind", "token"],
        },
        "Retry": {
            "type": "object",
            "properties": {
                "attempts": {"type": "integer", "minimum": 1, "maximum": 10},
                "delay_ms": {"type": "integer", "minimum": 0, "description": "Delay between attempts"},
                "max_delay_ms": {"$ref": "#/$defs/Retry/properties/delay_ms", "description": "Upper bound"},
            },
        },
        "Selector": {
            "type": "object",
            "description": "A CSS selector tree",
            "properties": {
                "css": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Selector"}},
            },
            "required": ["css"],
        },
    },
}

ALL_REAL = {
    **{f"claude:{k}": v for k, v in CLAUDE_CODE_TOOLS.items()},
    **{f"codex:{k}": v for k, v in CODEX_TOOLS.items()},
    "pydantic:Owner": PYDANTIC_OWNER,
    "mcp:crawl": MCP_CRAWL,
}


@pytest.mark.parametrize("name", sorted(ALL_REAL))
def test_real_schema_is_valid_idempotent_and_unmutated(name):
    convert(ALL_REAL[name])


@pytest.mark.parametrize("name", sorted(CLAUDE_CODE_TOOLS) + [f"codex:{k}" for k in CODEX_TOOLS])
def test_plain_tool_schemas_keep_everything(name):
    """Tools without refs/unions: same property tree, required, descriptions; types upper-cased."""
    src = CODEX_TOOLS[name[6:]] if name.startswith("codex:") else CLAUDE_CODE_TOOLS[name]
    out = convert(src)
    assert out["type"] == "OBJECT"
    assert list(walk_props(out)) == list(walk_props(src))

    def same(a, b):
        assert b["type"] == a["type"].upper()
        assert b.get("description") == a.get("description")
        assert b.get("required") == a.get("required")
        assert b.get("enum") == a.get("enum")
        assert b.get("default", "-") == a.get("default", "-")
        assert b.get("minLength") == a.get("minLength") and b.get("minItems") == a.get("minItems")
        for key, sub in a.get("properties", {}).items():
            same(sub, b["properties"][key])
        if "items" in a:
            same(a["items"], b["items"])

    if name != "WebFetch":
        same(src, out)


def test_claude_code_details():
    bash = convert(CLAUDE_CODE_TOOLS["Bash"])
    assert bash == {
        "type": "OBJECT",
        "properties": {
            "command": {"type": "STRING", "description": "The command to execute"},
            "timeout": {"type": "NUMBER", "description": "Optional timeout in milliseconds (max 600000)"},
            "description": {
                "type": "STRING",
                "description": "Clear, concise description of what this command does in 5-10 words, in active voice.",
            },
            "run_in_background": {
                "type": "BOOLEAN",
                "description": "Set to true to run this command in the background. Use BashOutput to read the output later.",
            },
        },
        "required": ["command"],
    }
    todo = convert(CLAUDE_CODE_TOOLS["TodoWrite"])
    item = todo["properties"]["todos"]["items"]
    assert item["properties"]["status"] == {"type": "STRING", "enum": ["pending", "in_progress", "completed"]}
    assert item["properties"]["content"] == {"type": "STRING", "minLength": 1}
    assert item["required"] == ["content", "status", "activeForm"]
    grep = convert(CLAUDE_CODE_TOOLS["Grep"])
    assert grep["properties"]["type"] == {"type": "STRING", "description": "File type to search (rg --type)"}
    assert grep["properties"]["-i"]["type"] == "BOOLEAN"
    fetch = convert(CLAUDE_CODE_TOOLS["WebFetch"])
    assert fetch["properties"]["url"] == {"type": "STRING", "description": "The URL to fetch content from\nFormat: uri."}


def test_codex_shell():
    out = convert(CODEX_TOOLS["shell"])
    assert out["properties"]["command"] == {
        "type": "ARRAY",
        "description": "The command to execute",
        "items": {"type": "STRING"},
    }
    assert out["properties"]["timeout_ms"]["type"] == "NUMBER"
    assert out["required"] == ["command"]


def test_pydantic_v2_schema():
    out = convert(PYDANTIC_OWNER)
    assert out["title"] == "Owner" and out["description"] == "Create an owner record."
    assert out["required"] == ["name", "pet"]
    props = out["properties"]
    assert list(props) == ["name", "address", "priority", "level", "pet", "tags", "metadata", "extra"]
    # Optional[Address] = None: the $ref is inlined, the null member becomes nullable,
    # the field description wins over the model docstring.
    address = props["address"]
    assert address["type"] == "OBJECT" and address["nullable"] is True
    assert address["description"] == "Home address" and address["default"] is None
    assert list(address["properties"]) == ["street", "city", "zip"]
    assert address["required"] == ["street", "city"]
    assert address["properties"]["zip"] == {"type": "STRING", "title": "Zip", "nullable": True, "default": None}
    # str Enum via $ref with a sibling default
    assert props["priority"] == {"type": "STRING", "title": "Priority", "enum": ["low", "high"], "default": "low"}
    # IntEnum: stays INTEGER, the values go to the description
    assert props["level"] == {"type": "INTEGER", "title": "Level", "description": "One of: 1, 2, 3.", "default": 1}
    # discriminated union: oneOf -> anyOf, const -> single-value enum
    pet = props["pet"]
    assert pet["title"] == "Pet" and len(pet["anyOf"]) == 2
    cat, dog = pet["anyOf"]
    assert cat["properties"]["pet_type"] == {"type": "STRING", "title": "Pet Type", "enum": ["cat"]}
    assert dog["properties"]["pet_type"]["enum"] == ["dog"]
    assert cat["required"] == ["pet_type", "meows"] and cat["properties"]["meows"]["minimum"] == 0
    assert dog["properties"]["bark_volume"] == {
        "type": "NUMBER",
        "title": "Bark Volume",
        "description": "Must be > 0.",
        "minimum": 0,
        "maximum": 10,
    }
    assert props["tags"] == {"type": "ARRAY", "title": "Tags", "default": [], "items": {"type": "STRING"}}
    assert props["metadata"] == {
        "type": "OBJECT",
        "title": "Metadata",
        "description": "Map of string to integer.",
        "default": {},
    }
    assert props["extra"]["type"] == "STRING"  # Any: something Gemini accepts


def test_mcp_schema():
    out = convert(MCP_CRAWL)
    props = out["properties"]
    assert list(props) == list(MCP_CRAWL["properties"])
    assert out["required"] == ["url"]  # "missing_prop" would be a 400 "property is not defined"
    assert props["url"] == {
        "type": "STRING",
        "description": "URL to fetch\nFormat: uri.",
        "example": "https://example.com/docs",
    }
    assert props["max_length"] == {
        "type": "INTEGER",
        "description": "Maximum number of characters to return.\nMust be > 0. Must be < 1000000.",
        "default": 5000,
        "minimum": 0,
        "maximum": 1000000,
    }
    assert props["timeout"] == {"type": "NUMBER", "description": "Seconds.\nMust be > 0.", "minimum": 0}
    assert props["headers"] == {
        "type": "OBJECT",
        "description": "Extra HTTP headers\nMap of string to string.",
    }
    auth = props["auth"]
    assert auth["nullable"] is True and len(auth["anyOf"]) == 2
    basic, token = auth["anyOf"]
    assert basic["properties"]["kind"] == {"type": "STRING", "enum": ["basic"]}
    assert list(basic["properties"]) == ["kind", "username", "password"]
    assert basic["required"] == ["kind", "username", "password"]
    assert token["properties"]["kind"]["enum"] == ["token"] and token["required"] == ["kind", "token"]
    retry = props["retry"]
    assert retry["description"] == "Retry policy"
    assert retry["properties"]["attempts"] == {"type": "INTEGER", "minimum": 1, "maximum": 10}
    # nested pointer into $defs, sibling description wins
    assert retry["properties"]["max_delay_ms"] == {"type": "INTEGER", "description": "Upper bound", "minimum": 0}
    # recursive tree: expanded a bounded number of times, then a marker
    node, depth = props["selectors"], 0
    while "(recursive" not in node.get("description", ""):
        assert node["description"] == "A CSS selector tree" and node["required"] == ["css"]
        node = node["properties"]["children"]["items"]
        depth += 1
    assert depth == gs.MAX_REF_DEPTH
    assert node == {"type": "OBJECT", "description": "Selector (recursive; structure omitted)"}
    # type list + enum with null
    assert props["output"] == {
        "type": "STRING",
        "nullable": True,
        "enum": ["html", "markdown"],
        "default": "markdown",
    }
    assert props["tags"] == {
        "type": "ARRAY",
        "description": "Items must be unique.",
        "maxItems": 10,
        "items": {"type": "STRING", "pattern": "^[a-z]+$"},
    }
    assert props["page_size"] == {
        "type": "INTEGER",
        "description": "Must be a multiple of 10.",
        "nullable": True,
        "maximum": 100,
    }
    assert props["mode"] == {"type": "STRING", "enum": ["crawl"]}
    assert props["depth"] == {"type": "INTEGER", "description": "Fixed crawl depth\nMust be 2."}
    assert props["since"] == {"type": "STRING", "format": "date-time"}
    assert props["destination"] == props["source"] == {"type": "STRING", "description": "Where to start", "minLength": 1}
    assert props["not_after"] == {"type": "STRING", "description": "Format: date."}
    assert props["contact"] == {"type": "STRING", "description": "Deprecated. Format: email."}
    assert "token" in token["properties"] and token["properties"]["token"] == {"type": "STRING"}


# --------------------------------------------------------------------------- single rules


@pytest.mark.parametrize(
    "src, expected",
    [
        # non-dict schemas mean "anything"
        (True, {"type": "OBJECT"}),
        (None, {"type": "OBJECT"}),
        ([1, 2], {"type": "OBJECT"}),
        ("string", {"type": "OBJECT"}),
        ({}, {"type": "OBJECT"}),
        ({"type": "object", "properties": {}, "required": []}, {"type": "OBJECT"}),
        ({"type": "object", "properties": {"a": True, "b": None, "c": {}}}, {
            "type": "OBJECT",
            "properties": {"a": {"type": "STRING"}, "b": {"type": "STRING"}, "c": {"type": "STRING"}},
        }),
        # inference
        ({"properties": {"a": {"type": "string"}}}, {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}}),
        ({"items": {"type": "integer"}}, {"type": "ARRAY", "items": {"type": "INTEGER"}}),
        ({"type": "array"}, {"type": "ARRAY", "items": {"type": "STRING"}}),
        ({"type": "array", "items": {}}, {"type": "ARRAY", "items": {"type": "STRING"}}),
        ({"properties": {"n": {"minimum": 1}}}, {"type": "OBJECT", "properties": {"n": {"type": "NUMBER", "minimum": 1}}}),
        # type lists
        ({"type": ["string", "null"]}, {"type": "STRING", "nullable": True}),
        ({"type": ["null"]}, {"type": "OBJECT", "nullable": True}),
        ({"type": ["string", "integer"], "minLength": 2, "minimum": 0, "description": "d"}, {
            "description": "d",
            "anyOf": [{"type": "STRING", "minLength": 2}, {"type": "INTEGER", "minimum": 0}],
        }),
        ({"type": ["string", "integer", "null"], "enum": ["a", 1, None]}, {
            "nullable": True,
            "anyOf": [{"type": "STRING", "enum": ["a"]}, {"type": "INTEGER", "description": "One of: 1."}],
        }),
        ({"type": "STRING", "nullable": True, "format": "enum", "enum": ["x"]}, {
            "type": "STRING", "format": "enum", "nullable": True, "enum": ["x"],
        }),
        # const / enum
        ({"const": "x"}, {"type": "STRING", "enum": ["x"]}),
        ({"const": True}, {"type": "BOOLEAN", "description": "Must be true."}),
        ({"const": None}, {"type": "OBJECT", "nullable": True}),
        ({"enum": [1, 2.5]}, {"type": "NUMBER", "description": "One of: 1, 2.5."}),
        ({"enum": ["a", 1]}, {"type": "OBJECT", "description": "One of: \"a\", 1."}),
        ({"enum": [None, "a", "a", "b"]}, {"type": "STRING", "nullable": True, "enum": ["a", "b"]}),
        ({"type": "integer", "enum": ["1", "2"]}, {"type": "INTEGER", "description": "One of: \"1\", \"2\"."}),
        # numbers
        ({"type": "number", "exclusiveMaximum": 1.5}, {"type": "NUMBER", "description": "Must be < 1.5.", "maximum": 1.5}),
        ({"type": "number", "minimum": 5, "exclusiveMinimum": 1}, {"type": "NUMBER", "minimum": 5}),
        ({"type": "number", "maximum": 3, "exclusiveMaximum": True}, {"type": "NUMBER", "description": "Must be < 3.", "maximum": 3}),
        ({"type": "number", "minimum": float("inf")}, {"type": "NUMBER"}),
        # formats
        ({"type": "integer", "format": "int64"}, {"type": "INTEGER", "format": "int64"}),
        ({"type": "integer", "format": "uint8"}, {"type": "INTEGER", "description": "Format: uint8."}),
        ({"type": "number", "format": "double"}, {"type": "NUMBER", "format": "double"}),
        ({"type": "string", "format": "enum"}, {"type": "STRING"}),
        # examples / default
        ({"type": "string", "examples": ["a", "b"]}, {"type": "STRING", "example": "a"}),
        ({"type": "string", "example": "x", "examples": ["a"]}, {"type": "STRING", "example": "x"}),
        ({"type": "number", "default": float("nan")}, {"type": "NUMBER"}),
        # snake_case Gemini aliases (google-genai SDK)
        ({"type": "ARRAY", "items": {"type": "STRING"}, "max_items": 3}, {"type": "ARRAY", "maxItems": 3, "items": {"type": "STRING"}}),
        ({"any_of": [{"type": "string"}, {"type": "integer"}]}, {"anyOf": [{"type": "STRING"}, {"type": "INTEGER"}]}),
        # type-specific keywords on another type are meaningless and dropped
        ({"type": "string", "minimum": 1, "items": {}, "properties": {"a": {}}}, {"type": "STRING"}),
    ],
)
def test_rules(src, expected):
    assert convert(src) == expected


def test_unions():
    # Optional[X] with parent annotations
    assert convert({"anyOf": [{"type": "integer", "description": "inner"}, {"type": "null"}], "description": "outer", "default": None}) == {
        "type": "INTEGER", "description": "outer", "nullable": True, "default": None,
    }
    # a member allowing anything makes the whole union allow anything
    assert convert({"anyOf": [{"type": "integer"}, {}], "description": "x"}) == {"type": "OBJECT", "description": "x"}  # root default
    # several members: parent keywords are distributed; default moves to the description
    out = convert({
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
        "anyOf": [{"required": ["a"]}, {"required": ["b"]}],
        "default": {"a": "x"},
        "description": "Give a or b",
    })
    assert out == {
        "description": 'Give a or b\nDefault: {"a": "x"}.',
        "anyOf": [
            {"type": "OBJECT", "properties": {"a": {"type": "STRING"}, "b": {"type": "STRING"}}, "required": ["a"]},
            {"type": "OBJECT", "properties": {"a": {"type": "STRING"}, "b": {"type": "STRING"}}, "required": ["b"]},
        ],
    }
    # nested unions are flattened, duplicates collapse, nullable bubbles up
    assert convert({"oneOf": [{"anyOf": [{"type": "string"}, {"type": ["integer", "null"]}]}, {"type": "string"}, {"type": "boolean"}]}) == {
        "anyOf": [{"type": "STRING"}, {"type": "INTEGER", "nullable": True}, {"type": "BOOLEAN"}],
    }
    assert convert({"anyOf": [{"type": "string"}, {"type": "string"}], "title": "t"}) == {"type": "STRING", "title": "t"}
    # tuple items
    assert convert({"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}]}) == {
        "type": "ARRAY", "items": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]},
    }


def test_all_of_merges():
    out = convert({
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "description": "first"},
            {"properties": {"b": {"type": "integer"}, "a": {"type": "integer"}}, "required": ["b", "a"], "description": "second"},
        ],
    })
    assert out == {
        "type": "OBJECT",
        "description": "first",
        "properties": {"a": {"type": "STRING"}, "b": {"type": "INTEGER"}},
        "required": ["a", "b"],
    }
    # pydantic v1 style field: allOf with a single $ref and sibling annotations
    out = convert({
        "definitions": {"Color": {"title": "Color", "enum": ["red", "green"], "type": "string", "description": "A color"}},
        "properties": {"c": {"allOf": [{"$ref": "#/definitions/Color"}], "description": "Paint", "default": "red"}},
    })
    assert out["properties"]["c"] == {
        "type": "STRING", "title": "Color", "description": "Paint", "enum": ["red", "green"], "default": "red",
    }


def test_refs():
    # siblings merged over the target
    out = convert({"$defs": {"A": {"type": "string", "description": "a", "maxLength": 3}}, "properties": {"x": {"$ref": "#/$defs/A", "description": "x", "minLength": 1}}})
    assert out["properties"]["x"] == {"type": "STRING", "description": "x", "minLength": 1, "maxLength": 3}
    # unresolvable references
    for ref in ("#/$defs/Missing", "other.json#/A", "#anchor", "#/$defs/A/properties/zz"):
        out = convert({"$defs": {"A": {"type": "string"}}, "properties": {"x": {"$ref": ref}}})
        assert out["properties"]["x"] == {"type": "OBJECT", "description": f"{ref} (unresolved reference; structure omitted)"}
    # "#" recursion at the root, escaped pointer parts, array indexes
    out = convert({"title": "Tree", "type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}})
    assert "Tree (recursive; structure omitted)" in json.dumps(out)
    out = convert({"$defs": {"a/b": {"type": "integer"}, "l": [{"type": "boolean"}]}, "properties": {"x": {"$ref": "#/$defs/a~1b"}, "y": {"$ref": "#/$defs/l/0"}, "z": {"$ref": "#/%24defs/l/0"}}})
    assert out["properties"] == {"x": {"type": "INTEGER"}, "y": {"type": "BOOLEAN"}, "z": {"type": "BOOLEAN"}}
    # mutual recursion ends too
    out = convert({"$defs": {"A": {"properties": {"b": {"$ref": "#/$defs/B"}}}, "B": {"properties": {"a": {"$ref": "#/$defs/A"}}}}, "$ref": "#/$defs/A"})
    assert "(recursive; structure omitted)" in json.dumps(out)


def test_map_notes():
    assert convert({"type": "object", "additionalProperties": {"type": "array", "items": {"type": "integer"}}}) == {
        "type": "OBJECT", "description": "Map of string to array of integer.",
    }
    assert convert({"type": "object", "additionalProperties": True}) == {"type": "OBJECT"}
    assert convert({"type": "object", "additionalProperties": {}}) == {"type": "OBJECT"}
    assert convert({"additionalProperties": {"type": "string"}, "properties": {"a": {"type": "string"}}}) == {
        "type": "OBJECT", "properties": {"a": {"type": "STRING"}},
    }
    assert convert({"type": "object", "patternProperties": {"^[A-Z_]+$": {"type": "string"}}}) == {
        "type": "OBJECT", "description": "Map of string matching ^[A-Z_]+$ to string.",
    }


def test_property_names_are_not_keywords():
    names = ["type", "properties", "$ref", "enum", "anyOf", "description", "items", "default", "", "a.b"]
    src = {"type": "object", "properties": {n: {"type": "string"} for n in names}, "required": names}
    out = convert(src)
    assert list(out["properties"]) == names and out["required"] == names


def test_output_shares_nothing_with_input():
    src = {"type": "object", "properties": {"a": {"type": "array", "default": [[1]], "items": {"type": "array", "items": {"type": "integer"}}}}}
    out = convert(src)
    out["properties"]["a"]["default"][0].append(2)
    assert src["properties"]["a"]["default"] == [[1]]


def test_pathological_inputs_are_bounded(monkeypatch):
    deep = {}
    node = deep
    for _ in range(2000):
        node["properties"] = {"x": {}}
        node = node["properties"]["x"]
    out = to_gemini_schema(deep)
    assert_gemini(out)
    assert "nested too deeply" in json.dumps(out)
    # wide self-reference: bounded by MAX_REF_DEPTH and the node budget, still fast
    wide = {"$defs": {"N": {"type": "object", "properties": {f"p{i}": {"$ref": "#/$defs/N"} for i in range(40)}}}, "$ref": "#/$defs/N"}
    out = to_gemini_schema(wide)
    assert_gemini(out)
    assert to_gemini_schema(out) == out
    # a schema whose own type is a huge union of types and unions
    monkeypatch.setattr(gs, "WORK_LIMIT", 5_000)  # same path as the real limit, faster
    nested = {"type": "string"}
    for _ in range(8):
        nested = {"type": ["string", "number", "integer", "boolean", "array", "object"], "anyOf": [nested, {"type": "null"}, {"minimum": 1}]}
    out = to_gemini_schema(nested)
    assert out == {"type": "OBJECT", "description": "(schema too large to convert)"}


# --------------------------------------------------------------------------- property tests

KEYWORDS = sorted(ALLOWED_KEYS | {
    "$ref", "$defs", "definitions", "$schema", "$id", "$comment", "const", "oneOf", "allOf", "not",
    "if", "then", "else", "additionalProperties", "patternProperties", "prefixItems", "examples",
    "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "uniqueItems", "dependentRequired",
    "deprecated", "readOnly", "any_of", "max_items", "discriminator", "contains",
})
REFS = ["#", "#/$defs/A", "#/$defs/B", "#/definitions/C", "#/$defs/A/properties/x", "#/$defs/A/items",
        "#/properties/a", "#/$defs/B/anyOf/0", "#/nope", "other.json#/A", "#frag", ""]
TYPE_NAMES = ["string", "number", "integer", "boolean", "array", "object", "null", "STRING", "OBJECT", "any"]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
json_values = st.recursive(
    json_scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
    max_leaves=6,
)
prop_names = st.sampled_from(["a", "b", "x", "type", "items", "$ref"]) | st.text(max_size=4)
numbers = st.integers(-5, 20) | st.floats() | st.booleans()


def _schema_children(children):
    """A dict of keywords; each value mostly well-formed for its keyword, sometimes junk."""
    sub_list = st.lists(children, min_size=1, max_size=3)
    good = {
        "type": st.sampled_from(TYPE_NAMES) | st.lists(st.sampled_from(TYPE_NAMES), max_size=4),
        "properties": st.dictionaries(prop_names, children, max_size=3),
        "items": children | st.lists(children, max_size=2),
        "prefixItems": sub_list,
        "anyOf": sub_list, "oneOf": sub_list, "allOf": sub_list, "any_of": sub_list,
        "additionalProperties": children,
        "patternProperties": st.dictionaries(st.text(max_size=4), children, max_size=2),
        "not": children, "if": children, "then": children, "else": children, "contains": children,
        "$ref": st.sampled_from(REFS),
        "required": st.lists(prop_names, max_size=3),
        "propertyOrdering": st.lists(prop_names, max_size=3),
        "enum": st.lists(json_scalars, max_size=4),
        "const": json_values,
        "format": st.sampled_from(["date-time", "enum", "int32", "int64", "float", "double", "uri", "date", ""]),
        "examples": st.lists(json_values, max_size=2),
        "dependentRequired": st.dictionaries(prop_names, st.lists(prop_names, max_size=2), max_size=2),
    }
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minItems",
                "maxItems", "minLength", "maxLength", "minProperties", "maxProperties", "max_items"):
        good[key] = numbers
    for key in ("nullable", "uniqueItems", "deprecated", "readOnly"):
        good[key] = st.booleans()
    for key in ("title", "description", "pattern"):
        good[key] = st.text(max_size=5)
    junk = json_values | children
    values = {key: st.one_of(good[key], good[key], good[key], junk) if key in good else junk for key in KEYWORDS}

    @st.composite
    def node(draw):
        keys = draw(st.lists(st.sampled_from(WEIGHTED_KEYWORDS), max_size=6))
        return {key: draw(values[key]) for key in keys}

    return node()


# structural keywords drawn more often, so that deep, union- and ref-rich schemas are common
WEIGHTED_KEYWORDS = KEYWORDS + ["type", "properties", "items", "$ref", "anyOf", "required", "enum"] * 3
leaf_schemas = (
    st.builds(lambda t: {"type": t}, st.sampled_from(TYPE_NAMES) | st.lists(st.sampled_from(TYPE_NAMES), max_size=3))
    | json_scalars
    | st.just({})
)
schemas = st.recursive(leaf_schemas, _schema_children, max_leaves=25)
documents = st.builds(
    lambda s, props, defs, old: {**s, "properties": props, "$defs": defs, "definitions": old},
    _schema_children(schemas),
    st.dictionaries(prop_names, schemas, min_size=1, max_size=3),
    st.fixed_dictionaries({"A": schemas, "B": schemas}),
    st.fixed_dictionaries({"C": schemas}),
)

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_property(doc):
    before = copy.deepcopy(doc)
    out = gs._sanitize(doc)  # the unguarded core: a bug must show up here, not be masked
    assert [doc] == [before]  # list compare: identity first, so a NaN input compares equal
    assert_gemini(out)
    json.dumps(out, allow_nan=False)
    assert to_gemini_schema(doc) == out
    assert gs._sanitize(out) == out


@FAST
@given(json_values)
def test_any_json_value(value):
    _check_property(value)


@FAST
@given(documents)
def test_schema_shaped_documents(doc):
    _check_property(doc)
    # the same schema below the root: inside properties, a nullable union, and a wrong required
    _check_property({"type": "object", "properties": {"p": doc, "q": {"anyOf": [doc, {"type": "null"}]}}, "required": ["p", "z"]})


def test_free_form_object_parameters_go_as_json_schema():
    """Qwen Code's tool with {"arguments": {"type": "object"}}: Gemini's Schema refuses an OBJECT
    without properties, so the declaration carries the JSON Schema instead (agent test 6)."""
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
              "properties": {"name": {"type": "string"}, "arguments": {"type": "object"}}}
    assert open_object(to_gemini_schema(schema))
    assert not open_object(to_gemini_schema({"type": "object", "properties": {"a": {"type": "string"}}}))
    assert not open_object(to_gemini_schema({"type": "object", "properties": {}}))  # no parameters
    nested = {"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "object"}}}}
    assert open_object(to_gemini_schema(nested))
    req = cn.Request("gemini-2.5-pro", [cn.Message("user", [cn.Text("hi")])],
                     tools=[cn.Tool("tool_call", "d", schema), cn.Tool("plain", "", {"type": "object", "properties": {
                         "a": {"type": "string"}}})])
    decls = gemini.encode_request(req)["tools"][0]["functionDeclarations"]
    assert decls[0]["parametersJsonSchema"] == {k: v for k, v in schema.items() if k != "$schema"}
    assert "parameters" not in decls[0] and decls[1]["parameters"]["properties"]["a"] == {"type": "STRING"}
