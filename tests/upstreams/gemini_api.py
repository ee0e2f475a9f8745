"""Strict local double of the public Gemini API, v1beta (aiohttp.web).

As a process (from the repository root)::

    python -m tests.upstreams.gemini_api --host 127.0.0.1 --port 0 \\
        [--api-key KEY] [--models gemini-2.5-flash,gemini-3-pro-preview]

prints exactly one line ``READY <port>`` once listening. In-process, serve
``make_app(api_key, models)`` with any aiohttp runner.

Endpoints (the paths of generativelanguage.googleapis.com):
    GET  /v1beta/models                      configured models, the scenario models, then
                                             the embedding models
    GET  /v1beta/models/<id>                 one of them, or 404 NOT_FOUND
    POST /v1beta/models/<id>:generateContent
    POST /v1beta/models/<id>:streamGenerateContent?alt=sse
                                             SSE events "data: <json>\\r\\n\\r\\n", no [DONE]
    POST /v1beta/models/<id>:streamGenerateContent
                                             without alt=sse: one JSON array written an
                                             element at a time, "[{..}\\r\\n,{..}\\r\\n]";
                                             errors on this path come wrapped in [ ] too
    POST /v1beta/models/<id>:countTokens     {"contents"} or {"generateContentRequest"}
                                             -> {"totalTokens": n, ...}
    POST /v1beta/models/<id>:embedContent    {"content", "taskType"?, "title"?,
                                             "outputDimensionality"?} -> {"embedding":
                                             {"values": [...]}} (see Embeddings)
    POST /v1beta/models/<id>:batchEmbedContents
                                             {"requests": [EmbedContentRequest + "model"]}
                                             -> {"embeddings": [{"values": [...]}, ...]}
    GET  /__requests                         every request received so far (no auth)
    DELETE /__requests                       clear that log (no auth)
    anything else                            404 with Google's HTML "That's an error." page

Errors use Google's shape {"error": {"code", "message", "status", "details"?}};
"details" is left out when there are none, as the real service does.

Auth (only when --api-key is given): key from the x-goog-api-key header or ?key=.
None -> 403 PERMISSION_DENIED; a wrong one -> 400 INVALID_ARGUMENT API_KEY_INVALID
(400, not 401); no key but "Authorization: Bearer" -> 401 UNAUTHENTICATED.

Validation runs in the real service's order:
 1. proto JSON parsing (all problems at once, joined by "\\n", with a
    google.rpc.BadRequest detail): unknown fields -> 'Invalid JSON payload
    received. Unknown name "x" at '<snake_case path>': Cannot find field.';
    a list for a singular field (e.g. "type": ["string", "null"]) -> '... Proto
    field is not repeating, cannot start list.'; wrong scalar / enum / base64 ->
    "Invalid value at '<path>' (<TYPE>), <value>". camelCase and snake_case
    names are both accepted, enum names case-insensitively, and a single value
    where a list is expected counts as a one-element list (proto3 JSON rules).
    The Schema of `parameters` / `responseSchema` knows only the 22 OpenAPI
    keys Google supports; parametersJsonSchema / responseJsonSchema take any JSON.
 2. unknown model -> 404 NOT_FOUND.
 3. semantic checks, all at once as "* GenerateContentRequest.<path>: <problem>\\n"
    (contents, parts, generation config, function names, schemas: required vs
    properties, enum only on STRING, ARRAY needs items, OBJECT needs properties);
    then single-message checks: roles, value ranges, function call/response
    turn order and counts, cachedContent (no caches exist: 403).
 4. thought signatures. Every signature this double issues is random bytes
    starting with 0xFBEFBE, so its standard base64 starts with "++++"; bytes
    are compared, so the URL-safe spelling "----..." (what the google-genai SDK
    sends back) is the same signature. Any signature never issued -> 400
    "Unable to submit request because Thought signature is not valid." (the
    documented dummies "skip_thought_signature_validator" and
    "context_engineering_is_the_way_to_go" are accepted). For gemini-3* models,
    as documented by Google, only the current turn is checked (contents after
    the last user content holding something other than functionResponse): the
    first functionCall part of each model content there must carry a
    signature, else 400 "Function call is missing a thought_signature ...,
    position <n>" where n is that content's 1-based index (real errors show
    even positions: 2, 10, 32 for model turns of user/model histories).

Scripted answers: make_app(..., brain=f) asks f("gemini", body) first; a plan it returns
(.text, or .calls as [(tool name, arguments)]) is the answer, None falls back to the rules
below. tests/agents/brain.py drives the real coding-agent CLIs this way.

Normal models answer "Echo: <text of the last user turn>" (+ " [k image(s)]"
for inline images), or "Tool results: <json>; <json>" after functionResponse
parts, or call every declared function (ANY + allowedFunctionNames: only
those) with args {"tool": name, "n": i} and no id when the last content is a
user turn with text and the mode is not NONE. With responseMimeType
application/json the text is compact JSON built from responseSchema /
responseJsonSchema (else {"echo": text}); text/x.enum answers the first enum.
Thinking (names starting gemini-2.5 / gemini-3; on unless thinkingBudget is 0
on 2.5): thoughtsTokenCount > 0, a leading {"text": "Thinking about: ..",
"thought": true} part when includeThoughts. Signatures: gemini-3 on the first
functionCall part, or on the last text part of a text answer (in a stream, the
last text event); gemini-2.5 on the first functionCall part when thinking.

Streams: a thought part is its own event, text goes out 4 characters per
event, functionCall parts together in one event. Every event carries
usageMetadata; only the last one has candidatesTokenCount and finishReason.

Scenario models (always listed; auth and validation still apply first; on
countTokens they count normally):
    fault-max-tokens      partial text "Echo: he", finishReason MAX_TOKENS
    fault-safety          candidate without content, finishReason SAFETY, safetyRatings
    fault-prompt-blocked  no candidates, promptFeedback.blockReason SAFETY
    fault-429             429 RESOURCE_EXHAUSTED, ErrorInfo RATE_LIMIT_EXCEEDED,
                          QuotaFailure and RetryInfo retryDelay "7s"
    fault-stream-429      stream: 200, then that error object as the only event; non-stream: 429
    fault-500             500 INTERNAL
    fault-503             503 UNAVAILABLE "The model is overloaded. ..."
    fault-cut             stream: two events, then TCP abort; non-stream: abort at once
    fault-hang            never sends response headers (gives up after 120 s)
    fault-slow-stream     sleeps 0.3 s before each stream event

Embeddings: EMBEDDING_MODELS (gemini-embedding-001, text-embedding-004) are
always listed, with supportedGenerationMethods ["embedContent",
"batchEmbedContents"] and no generation settings. Every method checks the
model supports it: generateContent / countTokens on an embedding model and
embedContent on a chat model -> 404 "models/x is not found for API version
v1beta, or is not supported for <method>. ...". After proto JSON parsing
(EmbedContentRequest / BatchEmbedContentsRequest, taskType an enum), the
problems are listed as for generateContent, e.g. "* BatchEmbedContentsRequest.
requests[0].model: ...": each batch item needs "model" equal to "models/<path
model>" ("model is not specified" / "unexpected model name format" / not the
batch's model); 1..100 requests; content with non-empty parts, text only
(these models are text-only); outputDimensionality 0 (unset) .. the model's
native size (3072 / 768). Values are deterministic, computed exactly as in
tests/upstreams/openai_compat.py: unit length, float32 precision, from SHA-256
of the text parts joined with "\n", 8 values unless outputDimensionality says
otherwise. No usage is reported, as by the real service. fault-429, fault-500,
fault-503, fault-cut and fault-hang answer the embedding methods with their
(non-stream) fault too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import itertools
import json
import math
import os
import re
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from tests.upstreams import serving

DEFAULT_MODELS = [
    "gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-pro-preview", "gemini-2.0-flash"
]
API_VERSION = "v1beta"
TYPE_PREFIX = "type.googleapis.com/google.ai.generativelanguage.v1beta."
SERVICE = "generativelanguage.googleapis.com"
INPUT_TOKEN_LIMIT = 1048576
OUTPUT_TOKEN_LIMIT = 65536
IMAGE_TOKENS = 258
FUNCTION_CALL_TOKENS = 5
TEXT_PIECE = 4  # characters of answer text per stream event
MAX_TOKENS_TEXT = 8  # characters fault-max-tokens gets out before it stops
HANG_SECONDS = 120
SLOW_EVENT_DELAY = 0.3
SIGNATURE_PREFIX = b"\xfb\xef\xbe"  # base64 "++++" (standard) / "----" (URL-safe)
DUMMY_SIGNATURES = ("skip_thought_signature_validator", "context_engineering_is_the_way_to_go")
FUNCTION_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$")
MIME_TYPES = (
    "text/plain", "application/json", "application/xml", "application/yaml", "text/x.enum"
)
SCHEMA_MIME_TYPES = ("application/json", "text/x.enum")
MAX_STOP_SEQUENCES = 5
EMBEDDING_MODELS = {"gemini-embedding-001": 3072, "text-embedding-004": 768}  # native size
EMBEDDING_METHODS = ["embedContent", "batchEmbedContents"]
EMBEDDING_INPUT_TOKEN_LIMIT = 2048
EMBEDDING_SIZE = 8  # values per vector unless outputDimensionality says otherwise
MAX_BATCH_EMBED = 100
DEFAULT_CALLING_MODE = "AUTO"

NO_API_KEY = (
    "Method doesn't allow unregistered callers (callers without established identity)."
    " Please use API Key or other form of API consumer identity to call this API."
)
BAD_API_KEY = "API key not valid. Please pass a valid API key."
BEARER_TOKEN = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token,"
    " login cookie or other valid authentication credential. See"
    " https://developers.google.com/identity/sign-in/web/devconsole-project."
)
BAD_ROLE = "Please use a valid role: user, model."
CALL_AFTER_USER = (
    "Please ensure that function call turn comes immediately after a user turn or"
    " after a function response turn."
)
RESPONSE_AFTER_CALL = (
    "Please ensure that function response turn comes immediately after a function call turn."
)
RESPONSE_COUNT = (
    "Please ensure that the number of function response parts is equal to the number"
    " of function call parts of the function call turn."
)
CALLING_CONFIG_WITHOUT_TOOLS = "Function calling config is set without function_declarations."
MISSING_SIGNATURE = (
    "Function call is missing a thought_signature in functionCall parts. This is"
    " required for tools to work correctly, and missing thought_signature may lead to"
    " degraded model performance. Additional data, function call `default_api:{name}` ,"
    " position {position}. Please refer to"
    " https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
)
FORGED_SIGNATURE = "Unable to submit request because Thought signature is not valid."
NO_CACHE = "CachedContent not found (or permission denied)"
RATE_LIMITED = (
    "You exceeded your current quota, please check your plan and billing details. For"
    " more information on this error, head to:"
    " https://ai.google.dev/gemini-api/docs/rate-limits."
)
INTERNAL = (
    "An internal error has occurred. Please retry or report in"
    " https://developers.generativeai.google/guide/troubleshooting"
)
OVERLOADED = "The model is overloaded. Please try again later."
HTML_404 = """<!DOCTYPE html>
<html lang=en>
  <meta charset=utf-8>
  <title>Error 404 (Not Found)!!1</title>
  <p><b>404.</b> <ins>That\u2019s an error.</ins>
  <p>The requested URL <code>{path}</code> was not found on this server.  \
<ins>That\u2019s all we know.</ins>
"""

GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


# --------------------------------------------------------------------------
# State and errors
# --------------------------------------------------------------------------


@dataclass
class UpstreamState:
    api_key: str | None
    models: list[str]
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    signatures: set[bytes] = field(default_factory=set)
    brain: Callable[[str, dict], Any] | None = None  # scripted answers (see the module doc)

    def issue_signature(self) -> str:
        raw = SIGNATURE_PREFIX + os.urandom(21)
        self.signatures.add(raw)
        return base64.b64encode(raw).decode()


STATE = web.AppKey("gemini_api_state", UpstreamState)


class ApiError(Exception):
    """An error answered in Google's {"error": {...}} shape."""

    def __init__(
        self, status: int, message: str, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error: dict[str, Any] = {
            "code": status,
            "message": message,
            "status": GOOGLE_STATUS[status],
        }
        if details:
            self.error["details"] = details

    def response(self, as_array: bool = False) -> web.Response:
        text = json.dumps({"error": self.error}, indent=2)
        if as_array:  # what :streamGenerateContent without alt=sse answers
            text = f"[{text}\n]"
        return web.Response(status=self.status, text=text, content_type="application/json")


def invalid(message: str, details: list[dict[str, Any]] | None = None) -> ApiError:
    return ApiError(400, message, details)


def error_info(reason: str, **metadata: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": SERVICE, **metadata},
    }


def model_not_found(model: str, method: str = "generateContent") -> ApiError:
    return ApiError(
        404,
        f"models/{model} is not found for API version {API_VERSION}, or is not supported"
        f" for {method}. Call ListModels to see the list of available models and their"
        " supported methods.",
    )


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------
# Auth
# --------------------------------------------------------------------------


def check_auth(request: web.Request, api_key: str | None) -> None:
    if api_key is None:
        return
    given = request.headers.get("x-goog-api-key") or request.query.get("key")
    if given is None:
        if request.headers.get("Authorization", "").startswith("Bearer "):
            raise ApiError(401, BEARER_TOKEN)
        raise ApiError(403, NO_API_KEY)
    if given != api_key:
        localized = {
            "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
            "locale": "en-US",
            "message": BAD_API_KEY,
        }
        raise invalid(BAD_API_KEY, [error_info("API_KEY_INVALID"), localized])


# --------------------------------------------------------------------------
# Proto JSON parsing: the message types the service knows, and a walker that
# returns a canonical copy (camelCase keys, lists, upper-case enum names) or
# collects Google's "Invalid JSON payload received" errors.
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    kind: str  # string bool int32 int64 float bytes enum message map struct value
    target: str = ""  # message or enum type name
    repeated: bool = False
    oneof: str | None = None


STRING, BOOL, INT32, INT64, FLOAT, BYTES = (
    Field(k) for k in ("string", "bool", "int32", "int64", "float", "bytes")
)
STRUCT = Field("struct")  # google.protobuf.Struct: any JSON object
VALUE = Field("value")  # google.protobuf.Value: any JSON


def message(name: str) -> Field:
    return Field("message", name)


def enum(name: str) -> Field:
    return Field("enum", name)


def many(item: Field) -> Field:
    return replace(item, repeated=True)


def data(item: Field) -> Field:
    return replace(item, oneof="data")


MESSAGES: dict[str, dict[str, Field]] = {
    "GenerateContentRequest": {
        "model": STRING,
        "contents": many(message("Content")),
        "systemInstruction": message("Content"),
        "tools": many(message("Tool")),
        "toolConfig": message("ToolConfig"),
        "safetySettings": many(message("SafetySetting")),
        "generationConfig": message("GenerationConfig"),
        "cachedContent": STRING,
    },
    "CountTokensRequest": {
        "contents": many(message("Content")),
        "generateContentRequest": message("GenerateContentRequest"),
    },
    "EmbedContentRequest": {
        "model": STRING,
        "content": message("Content"),
        "taskType": enum("TaskType"),
        "title": STRING,
        "outputDimensionality": INT32,
    },
    "BatchEmbedContentsRequest": {
        "model": STRING,
        "requests": many(message("EmbedContentRequest")),
    },
    "Content": {"role": STRING, "parts": many(message("Part"))},
    "Part": {
        "text": data(STRING),
        "inlineData": data(message("Blob")),
        "fileData": data(message("FileData")),
        "functionCall": data(message("FunctionCall")),
        "functionResponse": data(message("FunctionResponse")),
        "executableCode": data(message("ExecutableCode")),
        "codeExecutionResult": data(message("CodeExecutionResult")),
        "thought": BOOL,
        "thoughtSignature": BYTES,
        "videoMetadata": message("VideoMetadata"),
    },
    "Blob": {"mimeType": STRING, "data": BYTES},
    "FileData": {"mimeType": STRING, "fileUri": STRING},
    "FunctionCall": {"id": STRING, "name": STRING, "args": STRUCT},
    "FunctionResponse": {"id": STRING, "name": STRING, "response": STRUCT},
    "ExecutableCode": {"language": enum("ExecutableCode.Language"), "code": STRING},
    "CodeExecutionResult": {"outcome": enum("CodeExecutionResult.Outcome"), "output": STRING},
    "VideoMetadata": {"startOffset": STRING, "endOffset": STRING, "fps": FLOAT},
    "Tool": {
        "functionDeclarations": many(message("FunctionDeclaration")),
        "googleSearch": message("GoogleSearch"),
        "codeExecution": message("CodeExecution"),
    },
    "GoogleSearch": {},
    "CodeExecution": {},
    "FunctionDeclaration": {
        "name": STRING,
        "description": STRING,
        "parameters": message("Schema"),
        "parametersJsonSchema": VALUE,
        "response": message("Schema"),
        "responseJsonSchema": VALUE,
    },
    "Schema": {
        "type": enum("Type"),
        "format": STRING,
        "title": STRING,
        "description": STRING,
        "nullable": BOOL,
        "enum": many(STRING),
        "maxItems": INT64,
        "minItems": INT64,
        "properties": Field("map", "Schema"),
        "required": many(STRING),
        "minProperties": INT64,
        "maxProperties": INT64,
        "minLength": INT64,
        "maxLength": INT64,
        "pattern": STRING,
        "example": VALUE,
        "anyOf": many(message("Schema")),
        "propertyOrdering": many(STRING),
        "default": VALUE,
        "items": message("Schema"),
        "minimum": FLOAT,
        "maximum": FLOAT,
    },
    "ToolConfig": {"functionCallingConfig": message("FunctionCallingConfig")},
    "FunctionCallingConfig": {
        "mode": enum("FunctionCallingConfig.Mode"),
        "allowedFunctionNames": many(STRING),
    },
    "SafetySetting": {
        "category": enum("HarmCategory"),
        "threshold": enum("SafetySetting.HarmBlockThreshold"),
    },
    "GenerationConfig": {
        "stopSequences": many(STRING),
        "responseMimeType": STRING,
        "responseSchema": message("Schema"),
        "responseJsonSchema": VALUE,
        "responseModalities": many(enum("GenerationConfig.Modality")),
        "candidateCount": INT32,
        "maxOutputTokens": INT32,
        "temperature": FLOAT,
        "topP": FLOAT,
        "topK": INT32,
        "seed": INT32,
        "presencePenalty": FLOAT,
        "frequencyPenalty": FLOAT,
        "responseLogprobs": BOOL,
        "logprobs": INT32,
        "thinkingConfig": message("ThinkingConfig"),
        "mediaResolution": enum("GenerationConfig.MediaResolution"),
    },
    "ThinkingConfig": {
        "includeThoughts": BOOL,
        "thinkingBudget": INT32,
        "thinkingLevel": enum("ThinkingConfig.ThinkingLevel"),
    },
}

ENUMS: dict[str, list[str]] = {
    "Type": "TYPE_UNSPECIFIED STRING NUMBER INTEGER BOOLEAN ARRAY OBJECT NULL".split(),
    "FunctionCallingConfig.Mode": "MODE_UNSPECIFIED AUTO ANY NONE VALIDATED".split(),
    "HarmCategory": (
        "HARM_CATEGORY_UNSPECIFIED HARM_CATEGORY_DEROGATORY HARM_CATEGORY_TOXICITY"
        " HARM_CATEGORY_VIOLENCE HARM_CATEGORY_SEXUAL HARM_CATEGORY_MEDICAL"
        " HARM_CATEGORY_DANGEROUS HARM_CATEGORY_HARASSMENT HARM_CATEGORY_HATE_SPEECH"
        " HARM_CATEGORY_SEXUALLY_EXPLICIT HARM_CATEGORY_DANGEROUS_CONTENT"
        " HARM_CATEGORY_CIVIC_INTEGRITY"
    ).split(),
    "SafetySetting.HarmBlockThreshold": (
        "HARM_BLOCK_THRESHOLD_UNSPECIFIED BLOCK_LOW_AND_ABOVE BLOCK_MEDIUM_AND_ABOVE"
        " BLOCK_ONLY_HIGH BLOCK_NONE OFF"
    ).split(),
    "GenerationConfig.Modality": "MODALITY_UNSPECIFIED TEXT IMAGE AUDIO".split(),
    "GenerationConfig.MediaResolution": (
        "MEDIA_RESOLUTION_UNSPECIFIED MEDIA_RESOLUTION_LOW MEDIA_RESOLUTION_MEDIUM"
        " MEDIA_RESOLUTION_HIGH"
    ).split(),
    "ThinkingConfig.ThinkingLevel": (
        "THINKING_LEVEL_UNSPECIFIED MINIMAL LOW MEDIUM HIGH"
    ).split(),
    "ExecutableCode.Language": "LANGUAGE_UNSPECIFIED PYTHON".split(),
    "CodeExecutionResult.Outcome": (
        "OUTCOME_UNSPECIFIED OUTCOME_OK OUTCOME_FAILED OUTCOME_DEADLINE_EXCEEDED"
    ).split(),
    "TaskType": [
        "TASK_TYPE_UNSPECIFIED", "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY",
        "CLASSIFICATION", "CLUSTERING", "QUESTION_ANSWERING", "FACT_VERIFICATION",
        "CODE_RETRIEVAL_QUERY",
    ],
}

SCALAR_TYPES = {
    "string": "TYPE_STRING",
    "bool": "TYPE_BOOL",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float": "TYPE_FLOAT",
    "bytes": "TYPE_BYTES",
    "struct": "type.googleapis.com/google.protobuf.Struct",
}
INT_LIMITS = {"int32": 2**31, "int64": 2**63}


def snake(name: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", name).lower()


JSON_NAMES: dict[str, dict[str, str]] = {
    type_name: {alias: name for name in fields for alias in (name, snake(name))}
    for type_name, fields in MESSAGES.items()
}


class ParseErrors:
    """Google's "Invalid JSON payload received" problems, collected in order."""

    def __init__(self) -> None:
        self.violations: list[dict[str, str]] = []

    def add(self, field_path: str, description: str) -> None:
        violation = {"field": field_path} if field_path else {}
        self.violations.append({**violation, "description": description})

    def unknown_name(self, key: str, at: str, why: str) -> None:
        where = f" at '{at}'" if at else ""
        self.add(at, f'Invalid JSON payload received. Unknown name "{key}"{where}: {why}')

    def invalid_value(self, path: str, type_name: str, shown: str) -> None:
        self.add(path, f"Invalid value at '{path}' ({type_name}), {shown}")

    def raise_if_any(self) -> None:
        if self.violations:
            detail = {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": self.violations,
            }
            message = "\n".join(v["description"] for v in self.violations)
            raise invalid(message, [detail])


def join_path(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def parse_message(value: dict, type_name: str, path: str, errors: ParseErrors) -> dict:
    fields, names = MESSAGES[type_name], JSON_NAMES[type_name]
    result: dict[str, Any] = {}
    oneofs_set: set[str] = set()
    for key, item in value.items():
        name = names.get(key)
        if name is None:
            errors.unknown_name(key, path, "Cannot find field.")
            continue
        spec = fields[name]
        if item is None:  # JSON null means "not set"
            continue
        if spec.oneof:
            if spec.oneof in oneofs_set:
                errors.invalid_value(
                    path, "oneof",
                    f"oneof field '{spec.oneof}' is already set. Cannot set '{key}'",
                )
                continue
            oneofs_set.add(spec.oneof)
        result[name] = parse_field(key, snake(name), item, spec, path, errors)
    return result


def parse_field(
    key: str, name: str, item: Any, spec: Field, at: str, errors: ParseErrors
) -> Any:
    """`key` as sent (for messages), `name` in snake_case (for paths)."""
    path = join_path(at, name)
    if not spec.repeated:
        if isinstance(item, list):
            errors.unknown_name(key, at, "Proto field is not repeating, cannot start list.")
            return None
        return parse_single(item, spec, path, errors)
    items = item if isinstance(item, list) else [item]  # one value counts as a list of one
    return [parse_single(x, spec, f"{path}[{i}]", errors) for i, x in enumerate(items)]


def parse_single(item: Any, spec: Field, path: str, errors: ParseErrors) -> Any:
    if spec.kind == "message":
        if isinstance(item, dict):
            return parse_message(item, spec.target, path, errors)
        errors.invalid_value(path, TYPE_PREFIX + spec.target, compact(item))
        return None
    if spec.kind == "map":
        if not isinstance(item, dict):
            errors.invalid_value(path, TYPE_PREFIX + spec.target, compact(item))
            return None
        value_spec = message(spec.target)
        return {
            k: parse_single(v, value_spec, f"{path}[{i}].value", errors)
            for i, (k, v) in enumerate(item.items())
        }
    if spec.kind == "enum":
        return parse_enum(item, spec.target, path, errors)
    return parse_scalar(item, spec.kind, path, errors)


def parse_enum(item: Any, enum_name: str, path: str, errors: ParseErrors) -> str | None:
    names = ENUMS[enum_name]
    if isinstance(item, str) and item.upper() in names:
        return item.upper()
    if isinstance(item, int) and not isinstance(item, bool) and 0 <= item < len(names):
        return names[item]
    errors.invalid_value(path, TYPE_PREFIX + enum_name, compact(item))
    return None


def parse_scalar(item: Any, kind: str, path: str, errors: ParseErrors) -> Any:
    ok = {
        "value": lambda v: True,
        "struct": lambda v: isinstance(v, dict),
        "string": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
        "bytes": lambda v: isinstance(v, str) and decode_bytes(v) is not None,
        "int32": lambda v: as_int(v, INT_LIMITS["int32"]) is not None,
        "int64": lambda v: as_int(v, INT_LIMITS["int64"]) is not None,
        "float": lambda v: as_float(v) is not None,
    }[kind](item)
    if not ok:
        shown = compact(item)
        if kind == "bytes" and isinstance(item, str):
            shown = f"Base64 decoding failed for {shown}"
        errors.invalid_value(path, SCALAR_TYPES[kind], shown)
        return None
    if kind in INT_LIMITS:
        return as_int(item, INT_LIMITS[kind])
    return as_float(item) if kind == "float" else item


def as_int(value: Any, limit: int) -> int | None:
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and -limit <= value < limit:
        return value
    return None


def as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def decode_bytes(text: str) -> bytes | None:
    """Proto3 JSON bytes: standard or URL-safe base64, padding optional."""
    bare = text.rstrip("=")
    if re.fullmatch(r"[A-Za-z0-9+/]*", bare):
        alphabet = None
    elif re.fullmatch(r"[A-Za-z0-9_-]*", bare):
        alphabet = b"-_"
    else:
        return None
    if len(bare) % 4 == 1:
        return None
    try:
        padded = bare + "=" * (-len(bare) % 4)
        return base64.b64decode(padded, altchars=alphabet, validate=True)
    except (binascii.Error, ValueError):
        return None


def parse_request(body: Any, type_name: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid(
            'Invalid JSON payload received. Unknown name "": Root element must be a message.'
        )
    errors = ParseErrors()
    parsed = parse_message(body, type_name, "", errors)
    errors.raise_if_any()
    return parsed


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise invalid("Invalid JSON payload received. Unexpected token.") from None


# --------------------------------------------------------------------------
# Semantic validation of a parsed (canonical) GenerateContentRequest
# --------------------------------------------------------------------------


class Problems:
    """The backend's "* GenerateContentRequest.<path>: <problem>\\n" list."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.lines: list[str] = []

    def add(self, path: str, problem: str) -> None:
        self.lines.append(f"* {self.prefix}.{path}: {problem}\n")

    def raise_if_any(self) -> None:
        if self.lines:
            raise invalid("".join(self.lines))


def role_of(content: dict[str, Any]) -> str | None:
    return content.get("role") or None


def part_kinds(content: dict[str, Any] | None, kind: str) -> list[dict[str, Any]]:
    return [p[kind] for p in (content or {}).get("parts", []) if p and kind in p]


def validate_generate(request: dict[str, Any], model: str, prefix: str) -> None:
    """Everything after parsing, in the real service's order."""
    check_roles(request.get("contents", []))
    problems = Problems(prefix)
    check_contents(request, problems)
    check_generation_config(request.get("generationConfig", {}), problems)
    check_tools(request.get("tools", []), problems)
    check_tool_config(request, problems)
    problems.raise_if_any()
    check_ranges(request.get("generationConfig", {}), model)
    check_function_turns(request["contents"])
    if request.get("cachedContent"):
        raise ApiError(403, NO_CACHE)


def check_roles(contents: list[dict[str, Any]]) -> None:
    for content in contents:
        role = role_of(content)
        if role not in ("user", "model") and not (role is None and len(contents) == 1):
            raise invalid(BAD_ROLE)


def check_contents(request: dict[str, Any], problems: Problems) -> None:
    contents = request.get("contents") or []
    if not contents:
        problems.add("contents", "contents is not specified")
    for i, content in enumerate(contents):
        check_parts(f"contents[{i}]", content, problems)
    if "systemInstruction" in request:
        check_parts("system_instruction", request["systemInstruction"], problems)


def check_parts(path: str, content: dict[str, Any], problems: Problems) -> None:
    parts = content.get("parts") or []
    if not parts:
        problems.add(f"{path}.parts", "contents.parts must not be empty.")
    for j, part in enumerate(parts):
        check_part(f"{path}.parts[{j}]", part, problems)


DATA_FIELDS = [name for name, spec in MESSAGES["Part"].items() if spec.oneof == "data"]


def check_part(path: str, part: dict[str, Any], problems: Problems) -> None:
    has_data = any(name in part for name in DATA_FIELDS)
    if part.get("text") == "" and not part.get("thoughtSignature"):
        has_data = False  # an empty text is no data at all
    if not has_data:
        problems.add(
            f"{path}.data", "required oneof field 'data' must have one initialized field"
        )
    if "inlineData" in part and not part["inlineData"].get("mimeType"):
        problems.add(f"{path}.inline_data.mime_type", "mime_type must be specified")
    if "fileData" in part and not part["fileData"].get("fileUri"):
        problems.add(f"{path}.file_data.file_uri", "file_uri must be specified")
    for kind in ("functionCall", "functionResponse"):
        if kind in part and not part[kind].get("name"):
            problems.add(f"{path}.{snake(kind)}.name", "Name cannot be empty.")


def check_generation_config(config: dict[str, Any], problems: Problems) -> None:
    path = "generation_config"
    if len(config.get("stopSequences", [])) > MAX_STOP_SEQUENCES:
        problems.add(
            f"{path}.stop_sequences",
            f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed.",
        )
    mime = config.get("responseMimeType", "text/plain")
    if mime not in MIME_TYPES:
        problems.add(
            f"{path}.response_mime_type",
            "allowed mimetypes are `text/plain`, `application/json`, `application/xml`,"
            " `application/yaml` and `text/x.enum`.",
        )
    for name in ("responseSchema", "responseJsonSchema"):
        if name in config and mime not in SCHEMA_MIME_TYPES:
            problems.add(
                f"{path}.response_mime_type",
                f"response_mime_type must be `application/json` or `text/x.enum` when"
                f" {snake(name)} is set.",
            )
    if "responseSchema" in config and "responseJsonSchema" in config:
        problems.add(
            f"{path}.response_json_schema",
            "response_json_schema and response_schema cannot both be set.",
        )
    if config.get("candidateCount") not in (None, 0, 1):
        problems.add(
            f"{path}.candidate_count", "this test double supports only candidate_count 1."
        )
    if "responseSchema" in config:
        check_schema(config["responseSchema"], f"{path}.response_schema", problems, quote=True)


def check_tools(tools: list[dict[str, Any]], problems: Problems) -> None:
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        for j, declaration in enumerate(tool.get("functionDeclarations", [])):
            path = f"tools[{i}].function_declarations[{j}]"
            check_declaration(path, declaration, problems)
            name = declaration.get("name", "")
            if name in seen:
                problems.add(f"{path}.name", f"Duplicate function declaration found: {name}")
            seen.add(name)


def check_declaration(path: str, declaration: dict[str, Any], problems: Problems) -> None:
    if not FUNCTION_NAME.match(declaration.get("name", "")):
        problems.add(
            f"{path}.name",
            "Invalid function name. Must start with a letter or an underscore. Must be"
            " alphameric (a-z, A-Z, 0-9), underscores (_), dots (.), colons (:), or dashes"
            " (-), with a maximum length of 64.",
        )
    for schema_field in ("parameters", "response"):
        json_field = f"{schema_field}JsonSchema"
        if schema_field in declaration and json_field in declaration:
            problems.add(
                f"{path}.{snake(json_field)}",
                f"{schema_field} and {snake(json_field)} cannot both be set.",
            )
        if schema_field in declaration:
            check_schema(declaration[schema_field], f"{path}.{schema_field}", problems)


def check_schema(
    schema: dict[str, Any], path: str, problems: Problems, quote: bool = False
) -> None:
    """The backend's Schema rules. Property names appear in brackets, quoted
    under response_schema, bare under function parameters (as observed)."""
    kind = schema.get("type")
    properties = schema.get("properties") or {}
    if "enum" in schema:
        if kind != "STRING":
            problems.add(f"{path}.enum", "only allowed for STRING type")
        for i, value in enumerate(schema["enum"]):
            if value == "":
                problems.add(f"{path}.enum[{i}]", "cannot be empty")
    elif schema.get("format") == "enum":
        problems.add(f"{path}.enum", "should be non-empty for STRING type with enum format")
    if kind != "OBJECT":
        for name in ("properties", "required"):
            if schema.get(name):
                problems.add(f"{path}.{name}", "only allowed for OBJECT type")
    else:
        if not properties:
            problems.add(f"{path}.properties", "should be non-empty for OBJECT type")
        for i, name in enumerate(schema.get("required", [])):
            if name not in properties:
                problems.add(f"{path}.required[{i}]", "property is not defined")
    if kind == "ARRAY" and "items" not in schema:
        problems.add(f"{path}.items", "missing field.")
    for name, sub in properties.items():
        key = f'"{name}"' if quote else name
        check_schema(sub, f"{path}.properties[{key}]", problems, quote)
    if "items" in schema:
        check_schema(schema["items"], f"{path}.items", problems, quote)
    for i, sub in enumerate(schema.get("anyOf", [])):
        check_schema(sub, f"{path}.any_of[{i}]", problems, quote)


def declared_names(request: dict[str, Any]) -> list[str]:
    return [
        declaration.get("name", "")
        for tool in request.get("tools", [])
        for declaration in tool.get("functionDeclarations", [])
    ]


def check_tool_config(request: dict[str, Any], problems: Problems) -> None:
    config = request.get("toolConfig", {}).get("functionCallingConfig")
    if config is None:
        return
    if not declared_names(request):
        raise invalid(CALLING_CONFIG_WITHOUT_TOOLS)
    if config.get("allowedFunctionNames") and config.get("mode") not in ("ANY", "VALIDATED"):
        problems.add(
            "tool_config.function_calling_config.allowed_function_names",
            "allowed_function_names can only be set when mode is ANY or VALIDATED.",
        )


RANGES = {  # name: (low inclusive, high exclusive), as the service phrases them
    "temperature": (0, 2.0001),
    "topP": (0, 1.0001),
    "maxOutputTokens": (1, OUTPUT_TOKEN_LIMIT + 1),
    "presencePenalty": (-2, 2),
    "frequencyPenalty": (-2, 2),
}


def check_ranges(config: dict[str, Any], model: str) -> None:
    for name, (low, high) in RANGES.items():
        value = config.get(name)
        if value is not None and not low <= value < high:
            raise invalid(
                f"Unable to submit request because it has a {name} value of"
                f" {value:g} but the supported range is from {low} (inclusive) to"
                f" {high} (exclusive). Update the value and try again."
            )
    thinking = config.get("thinkingConfig", {})
    if "thinkingBudget" in thinking and "thinkingLevel" in thinking:
        raise invalid("You can only set only one of thinking budget and thinking level.")
    if thinking.get("thinkingBudget") == 0 and model.startswith("gemini-2.5-pro"):
        raise invalid("Budget 0 is invalid. This model only works in thinking mode.")
    check_thinking(thinking, model)


# the real API's accepted thinking: budget range per 2.5 model (0 = off where allowed, -1 = dynamic),
# levels per Gemini 3 model
BUDGETS = {"gemini-2.5-flash-lite": (512, 24576), "gemini-2.5-flash": (1, 24576), "gemini-2.5-pro": (128, 32768)}
LEVELS = {"gemini-3-flash": ("MINIMAL", "LOW", "MEDIUM", "HIGH"), "gemini-3": ("LOW", "HIGH")}


def check_thinking(thinking: dict[str, Any], model: str) -> None:
    budget, level = thinking.get("thinkingBudget"), thinking.get("thinkingLevel")
    family = next((f for f in BUDGETS if model.startswith(f)), None)
    if budget not in (None, 0, -1) and family and not BUDGETS[family][0] <= budget <= BUDGETS[family][1]:
        low, high = BUDGETS[family]
        raise invalid(f"The thinking budget {budget} is invalid. Please choose a value between {low} and {high}.")
    if level is not None:
        accepted = next((v for f, v in LEVELS.items() if model.startswith(f)), ())
        if str(level).upper() not in accepted:
            raise invalid(f"Thinking level {level} is not supported for this model.")


def check_function_turns(contents: list[dict[str, Any]]) -> None:
    previous: dict[str, Any] | None = None
    for content in contents:
        calls = part_kinds(content, "functionCall")
        responses = part_kinds(content, "functionResponse")
        after_user = previous is not None and role_of(previous) != "model"
        if calls and role_of(content) == "model" and not after_user:
            raise invalid(CALL_AFTER_USER)
        if responses:
            previous_calls = part_kinds(previous, "functionCall")
            if not previous_calls or role_of(previous) != "model":
                raise invalid(RESPONSE_AFTER_CALL)
            if len(previous_calls) != len(responses):
                raise invalid(RESPONSE_COUNT)
        previous = content


# --------------------------------------------------------------------------
# Thought signatures
# --------------------------------------------------------------------------


def check_signatures(state: UpstreamState, model: str, contents: list[dict[str, Any]]) -> None:
    for content in contents:
        for part in content.get("parts", []):
            signature = part.get("thoughtSignature")
            if signature is not None and not known_signature(state, signature):
                raise invalid(FORGED_SIGNATURE)
    if model.startswith("gemini-3"):
        check_current_turn_signed(contents)


def known_signature(state: UpstreamState, signature: str) -> bool:
    return signature in DUMMY_SIGNATURES or decode_bytes(signature) in state.signatures


def current_turn_start(contents: list[dict[str, Any]]) -> int:
    """Index of the last user content with something besides functionResponse."""
    for i in range(len(contents) - 1, -1, -1):
        content = contents[i]
        if role_of(content) != "model" and any(
            "functionResponse" not in p for p in content.get("parts", [])
        ):
            return i
    return -1


def check_current_turn_signed(contents: list[dict[str, Any]]) -> None:
    for i in range(current_turn_start(contents) + 1, len(contents)):
        content = contents[i]
        if role_of(content) != "model":
            continue
        first_call = next((p for p in content["parts"] if "functionCall" in p), None)
        if first_call is not None and not first_call.get("thoughtSignature"):
            name = first_call["functionCall"]["name"]
            raise invalid(MISSING_SIGNATURE.format(name=name, position=i + 1))


# --------------------------------------------------------------------------
# Answer generation
# --------------------------------------------------------------------------


@dataclass
class Answer:
    parts: list[dict[str, Any]]
    finish_reason: str
    candidates_tokens: int
    thoughts_tokens: int


@dataclass
class Reply:
    """Everything a (streamed or not) response needs."""

    response_id: str
    model: str
    answer: Answer
    prompt_tokens: int
    image_tokens: int


def last_user_content(contents: list[dict[str, Any]]) -> dict[str, Any]:
    users = [c for c in contents if role_of(c) != "model"]
    return users[-1] if users else {"parts": []}


def content_text(content: dict[str, Any]) -> str:
    parts = content.get("parts", [])
    return "".join(p["text"] for p in parts if "text" in p and not p.get("thought"))


def image_count(content: dict[str, Any]) -> int:
    blobs = part_kinds(content, "inlineData")
    return sum(1 for b in blobs if b.get("mimeType", "").startswith("image/"))


def is_thinking_model(model: str) -> bool:
    return model.startswith(("gemini-2.5", "gemini-3"))


def thinking_config(request: dict[str, Any]) -> dict[str, Any]:
    return request.get("generationConfig", {}).get("thinkingConfig", {})


def thinking_enabled(model: str, request: dict[str, Any]) -> bool:
    if model.startswith("gemini-3"):
        return True
    return is_thinking_model(model) and thinking_config(request).get("thinkingBudget") != 0


def planned_calls(request: dict[str, Any]) -> list[dict[str, Any]]:
    names = declared_names(request)
    config = request.get("toolConfig", {}).get("functionCallingConfig", {})
    mode = config.get("mode", DEFAULT_CALLING_MODE)
    last = request["contents"][-1]
    if not names or mode == "NONE" or role_of(last) == "model" or not content_text(last):
        return []
    allowed = config.get("allowedFunctionNames")
    if mode == "ANY" and allowed:
        names = [n for n in names if n in allowed]
    return [
        {"functionCall": {"name": name, "args": {"tool": name, "n": i}}}
        for i, name in enumerate(names)
    ]


def answer_text(request: dict[str, Any]) -> str:
    user = last_user_content(request["contents"])
    responses = part_kinds(user, "functionResponse")
    if responses:
        return "Tool results: " + "; ".join(compact(r.get("response", {})) for r in responses)
    text = content_text(user)
    config = request.get("generationConfig", {})
    mime = config.get("responseMimeType")
    if mime == "application/json":
        return compact(json_answer(config, text))
    if mime == "text/x.enum" and (config.get("responseSchema") or {}).get("enum"):
        return config["responseSchema"]["enum"][0]
    images = image_count(user)
    return f"Echo: {text}" + (f" [{images} image(s)]" if images else "")


def json_answer(config: dict[str, Any], text: str) -> Any:
    schema = config.get("responseSchema") or config.get("responseJsonSchema")
    if not isinstance(schema, dict):
        return {"echo": text}
    return example_for(schema, schema, depth=0)


def example_for(schema: Any, root: dict[str, Any], depth: int) -> Any:
    """A deterministic value matching a Gemini Schema or a JSON Schema."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    if isinstance(schema.get("$ref"), str):
        return example_for(resolve_ref(root, schema["$ref"]), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in schema.get(key) or [] if schema_kind(o) != "null"]
        if options:
            return example_for(options[0], root, depth + 1)
    kind = schema_kind(schema)
    if kind == "object":
        properties = schema.get("properties") or {}
        order = schema.get("propertyOrdering") or list(properties)
        return {
            k: example_for(properties[k], root, depth + 1) for k in order if k in properties
        }
    if kind == "array":
        return [example_for(schema.get("items") or {"type": "string"}, root, depth + 1)]
    return {"string": "x", "integer": 1, "number": 1.5, "boolean": True}.get(kind)


def schema_kind(schema: Any) -> str:
    if not isinstance(schema, dict):
        return ""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    if kind is None:
        return "object" if "properties" in schema else ""
    return str(kind).lower()


def resolve_ref(root: dict[str, Any], ref: str) -> Any:
    node: Any = root
    for key in ref.removeprefix("#").strip("/").split("/"):
        node = node.get(key) if isinstance(node, dict) and key else node
    return node


def build_answer(state: UpstreamState, model: str, request: dict[str, Any]) -> Answer:
    thinking = thinking_enabled(model, request)
    thought_text = "Thinking about: " + content_text(last_user_content(request["contents"]))
    parts: list[dict[str, Any]] = []
    if thinking and thinking_config(request).get("includeThoughts"):
        parts.append({"text": thought_text, "thought": True})
    plan = state.brain("gemini", request) if state.brain else None
    if plan is not None:
        calls = [{"functionCall": {"name": name, "args": args}} for name, args in plan.calls]
    else:
        calls = planned_calls(request)
    if calls:
        if model.startswith("gemini-3") or thinking:
            calls[0]["thoughtSignature"] = state.issue_signature()
        tokens = FUNCTION_CALL_TOKENS * len(calls)
        parts += calls
    else:
        text = plan.text if plan is not None else answer_text(request)
        part: dict[str, Any] = {"text": text}
        if model.startswith("gemini-3"):
            part["thoughtSignature"] = state.issue_signature()
        tokens = len(text.split())
        parts.append(part)
    thoughts = len(thought_text.split()) if thinking else 0
    return Answer(parts, "STOP", tokens, thoughts)


def part_chars(part: dict[str, Any]) -> int:
    if "text" in part:
        return len(part["text"])
    for kind in ("functionCall", "functionResponse"):
        if kind in part:
            return len(compact(part[kind]))
    return 0


def prompt_tokens(request: dict[str, Any]) -> tuple[int, int]:
    """(text tokens, image tokens): characters / 4 + 1, and 258 per image."""
    contents = [*request.get("contents", []), request.get("systemInstruction", {})]
    chars = sum(part_chars(p) for c in contents for p in c.get("parts", []))
    return chars // 4 + 1, IMAGE_TOKENS * sum(image_count(c) for c in contents)


def make_reply(
    state: UpstreamState, model: str, request: dict[str, Any], answer: Answer
) -> Reply:
    text_tokens, image_tokens = prompt_tokens(request)
    return Reply(
        response_id=f"gemtest{next(state.counter):06d}",
        model=model,
        answer=answer,
        prompt_tokens=text_tokens,
        image_tokens=image_tokens,
    )


# --------------------------------------------------------------------------
# Response bodies
# --------------------------------------------------------------------------


def usage(reply: Reply, final: bool = True) -> dict[str, Any]:
    """Final: full counts. Earlier stream events: no candidatesTokenCount."""
    prompt = reply.prompt_tokens + reply.image_tokens
    candidates = reply.answer.candidates_tokens if final else 0
    metadata: dict[str, Any] = {"promptTokenCount": prompt}
    if final:
        metadata["candidatesTokenCount"] = candidates
    metadata["totalTokenCount"] = prompt + candidates + reply.answer.thoughts_tokens
    details = [{"modality": "TEXT", "tokenCount": reply.prompt_tokens}]
    if reply.image_tokens:
        details.append({"modality": "IMAGE", "tokenCount": reply.image_tokens})
    metadata["promptTokensDetails"] = details
    if reply.answer.thoughts_tokens:
        metadata["thoughtsTokenCount"] = reply.answer.thoughts_tokens
    return metadata


def response_body(
    reply: Reply, parts: list[dict[str, Any]], finish_reason: str | None, final: bool = True
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
    if finish_reason:
        candidate["finishReason"] = finish_reason
    candidate["index"] = 0
    return {
        "candidates": [candidate],
        "usageMetadata": usage(reply, final),
        "modelVersion": reply.model,
        "responseId": reply.response_id,
    }


def complete_body(reply: Reply) -> dict[str, Any]:
    return response_body(reply, reply.answer.parts, reply.answer.finish_reason)


def text_pieces(part: dict[str, Any]) -> list[dict[str, Any]]:
    """A text part as 4-character parts; a signature moves to the last piece."""
    text = part["text"]
    pieces = [{"text": text[i : i + TEXT_PIECE]} for i in range(0, len(text), TEXT_PIECE)]
    pieces = pieces or [{"text": ""}]
    if "thoughtSignature" in part:
        pieces[-1]["thoughtSignature"] = part["thoughtSignature"]
    return pieces


def event_parts(answer: Answer) -> list[list[dict[str, Any]]]:
    """The parts of each stream event: thought, text pieces, all calls together."""
    groups: list[list[dict[str, Any]]] = []
    calls = [p for p in answer.parts if "functionCall" in p]
    for part in answer.parts:
        if part.get("thought"):
            groups.append([part])
        elif "text" in part:
            groups += [[piece] for piece in text_pieces(part)]
    if calls:
        groups.append(calls)
    return groups


def stream_bodies(reply: Reply) -> list[dict[str, Any]]:
    groups = event_parts(reply.answer)
    bodies = [response_body(reply, parts, None, final=False) for parts in groups[:-1]]
    bodies.append(response_body(reply, groups[-1], reply.answer.finish_reason))
    return bodies


SAFETY_RATINGS = [
    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
]


def safety_body(reply: Reply) -> dict[str, Any]:
    candidate = {"finishReason": "SAFETY", "index": 0, "safetyRatings": SAFETY_RATINGS}
    return {
        "candidates": [candidate],
        "usageMetadata": usage(reply),
        "modelVersion": reply.model,
        "responseId": reply.response_id,
    }


def blocked_prompt_body(reply: Reply) -> dict[str, Any]:
    metadata = usage(reply)
    metadata.pop("candidatesTokenCount")
    return {
        "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": SAFETY_RATINGS},
        "usageMetadata": metadata,
        "modelVersion": reply.model,
        "responseId": reply.response_id,
    }


# --------------------------------------------------------------------------
# Writing responses
# --------------------------------------------------------------------------


@dataclass
class Call:
    """One generateContent / streamGenerateContent call that passed validation."""

    request: web.Request
    model: str
    body: dict[str, Any]  # the canonical (parsed) request
    stream: bool
    sse: bool

    @property
    def state(self) -> UpstreamState:
        return self.request.app[STATE]

    def reply(self, answer: Answer | None = None) -> Reply:
        answer = answer or build_answer(self.state, self.model, self.body)
        return make_reply(self.state, self.model, self.body, answer)


def json_response(payload: dict[str, Any]) -> web.Response:
    return web.Response(text=json.dumps(payload, indent=2), content_type="application/json")


class EventWriter:
    """Writes stream events as SSE or as the elements of one JSON array."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.response = web.StreamResponse()
        self.count = 0

    async def open(self) -> EventWriter:
        kind = "text/event-stream" if self.call.sse else "application/json; charset=UTF-8"
        self.response.headers["Content-Type"] = kind
        self.response.enable_chunked_encoding()
        await self.response.prepare(self.call.request)
        return self

    async def send(self, payload: dict[str, Any]) -> None:
        if self.call.sse:  # the service's own spacing: ": " but no space after ","
            text = json.dumps(payload, separators=(",", ": "), ensure_ascii=False)
            data = f"data: {text}\r\n\r\n"
        else:
            opening = "[" if self.count == 0 else "\r\n,"
            data = opening + json.dumps(payload, ensure_ascii=False)
        self.count += 1
        await self.response.write(data.encode())
        await self.call.request.writer.drain()

    async def close(self) -> web.StreamResponse:
        if not self.call.sse:
            await self.response.write(b"\r\n]" if self.count else b"[]")
        await self.response.write_eof()
        return self.response


async def send_reply(
    call: Call, bodies: list[dict[str, Any]], delay: float = 0.0
) -> web.StreamResponse:
    writer = await EventWriter(call).open()
    for body in bodies:
        if delay:
            await asyncio.sleep(delay)
        await writer.send(body)
    return await writer.close()


def client_gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


def drop_connection(
    request: web.Request, response: web.StreamResponse | None = None
) -> web.StreamResponse:
    """Abort the TCP connection. aiohttp then fails to write whatever we return
    (no headers, or no terminating chunk) and swallows that ConnectionError."""
    if request.transport is not None:
        request.transport.abort()
    return response or web.Response()


# --------------------------------------------------------------------------
# Scenarios: each takes the Call and returns the response
# --------------------------------------------------------------------------

Scenario = Callable[[Call], Awaitable[web.StreamResponse]]


async def respond_normally(call: Call) -> web.StreamResponse:
    reply = call.reply()
    if not call.stream:
        return json_response(complete_body(reply))
    return await send_reply(call, stream_bodies(reply))


async def respond_once(call: Call, body: dict[str, Any]) -> web.StreamResponse:
    return await send_reply(call, [body]) if call.stream else json_response(body)


async def fault_max_tokens(call: Call) -> web.StreamResponse:
    text = answer_text(call.body)[:MAX_TOKENS_TEXT]
    answer = Answer([{"text": text}], "MAX_TOKENS", len(text.split()), 0)
    reply = call.reply(answer)
    if not call.stream:
        return json_response(complete_body(reply))
    return await send_reply(call, stream_bodies(reply))


async def fault_safety(call: Call) -> web.StreamResponse:
    reply = call.reply(Answer([], "SAFETY", 0, 0))
    return await respond_once(call, safety_body(reply))


async def fault_prompt_blocked(call: Call) -> web.StreamResponse:
    reply = call.reply(Answer([], "", 0, 0))
    return await respond_once(call, blocked_prompt_body(reply))


def rate_limited(call: Call) -> ApiError:
    quota = {
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [
            {
                "quotaMetric": f"{SERVICE}/generate_content_free_tier_requests",
                "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                "quotaDimensions": {"location": "global", "model": call.model},
                "quotaValue": "10",
            }
        ],
    }
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}
    return ApiError(429, RATE_LIMITED, [error_info("RATE_LIMIT_EXCEEDED"), quota, retry])


async def fault_429(call: Call) -> web.StreamResponse:
    raise rate_limited(call)


async def fault_stream_429(call: Call) -> web.StreamResponse:
    """The quota runs out after the 200: the stream's only event is the error object."""
    if not call.stream:
        raise rate_limited(call)
    return await send_reply(call, [{"error": rate_limited(call).error}])


async def fault_500(call: Call) -> web.StreamResponse:
    raise ApiError(500, INTERNAL)


async def fault_503(call: Call) -> web.StreamResponse:
    raise ApiError(503, OVERLOADED)


async def fault_cut(call: Call) -> web.StreamResponse:
    if not call.stream:
        return drop_connection(call.request)
    writer = await EventWriter(call).open()
    for body in stream_bodies(call.reply())[:2]:
        await writer.send(body)
    return drop_connection(call.request, writer.response)


async def fault_hang(call: Call) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_SECONDS
    while not client_gone(call.request) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return drop_connection(call.request)


async def fault_slow_stream(call: Call) -> web.StreamResponse:
    if not call.stream:
        return await respond_normally(call)
    return await send_reply(call, stream_bodies(call.reply()), delay=SLOW_EVENT_DELAY)


SCENARIOS: dict[str, Scenario] = {
    "fault-max-tokens": fault_max_tokens,
    "fault-safety": fault_safety,
    "fault-prompt-blocked": fault_prompt_blocked,
    "fault-429": fault_429,
    "fault-stream-429": fault_stream_429,
    "fault-500": fault_500,
    "fault-503": fault_503,
    "fault-cut": fault_cut,
    "fault-hang": fault_hang,
    "fault-slow-stream": fault_slow_stream,
}
SCENARIO_MODELS = list(SCENARIOS)
EMBED_SCENARIOS = ("fault-429", "fault-500", "fault-503", "fault-cut", "fault-hang")


# --------------------------------------------------------------------------
# Embeddings: validation and vectors
# --------------------------------------------------------------------------


def is_embedding_model(model: str) -> bool:
    return "embedding" in model


def check_embed_request(
    request: dict[str, Any], path: str, model: str, problems: Problems
) -> None:
    """One parsed EmbedContentRequest (a batch item when `path` is set)."""
    content = request.get("content")
    if content is None:
        problems.add(join_path(path, "content"), "content is not specified")
    else:
        check_parts(join_path(path, "content"), content, problems)
        for j, part in enumerate(content.get("parts", [])):
            if any(name in part for name in DATA_FIELDS if name != "text"):
                problems.add(
                    join_path(path, f"content.parts[{j}]"),
                    "only text parts are supported by this model.",
                )
    size = request.get("outputDimensionality", 0)
    native = EMBEDDING_MODELS.get(model, max(EMBEDDING_MODELS.values()))
    if not 0 <= size <= native:
        problems.add(
            join_path(path, "output_dimensionality"),
            f"must be between 1 and {native}, or unset.",
        )


def check_batch_embed(body: dict[str, Any], model: str, problems: Problems) -> None:
    requests = body.get("requests", [])
    if not requests:
        problems.add("requests", "requests is not specified")
    if len(requests) > MAX_BATCH_EMBED:
        problems.add("requests", f"at most {MAX_BATCH_EMBED} requests can be in one batch")
    for i, request in enumerate(requests):
        path = f"requests[{i}]"
        name = request.get("model")
        if not name:
            problems.add(f"{path}.model", "model is not specified")
        elif not name.startswith("models/"):
            problems.add(f"{path}.model", "unexpected model name format")
        elif name != f"models/{model}":
            problems.add(
                f"{path}.model", f"{name} does not match the batch model models/{model}."
            )
        check_embed_request(request, path, model, problems)


def float32(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def embedding_values(text: str, size: int = EMBEDDING_SIZE) -> list[float]:
    """Unit length, float32 precision, from SHA-256 of the text; the same
    algorithm as openai_compat.embedding_vector, so both doubles agree."""
    raw: list[float] = []
    block = 0
    while len(raw) < size:
        digest = hashlib.sha256(f"{block}:{text}".encode()).digest()
        raw += [(byte - 127.5) / 127.5 for byte in digest]
        block += 1
    raw = raw[:size]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [float32(v / norm) for v in raw]


def embedding_of(request: dict[str, Any]) -> dict[str, Any]:
    parts = request["content"].get("parts", [])
    text = "\n".join(p["text"] for p in parts if "text" in p)
    return {"values": embedding_values(text, request.get("outputDimensionality") or EMBEDDING_SIZE)}


async def embed(request: web.Request, model: str, method: str) -> web.StreamResponse:
    batch = method == "batchEmbedContents"
    kind = "BatchEmbedContentsRequest" if batch else "EmbedContentRequest"
    body = parse_request(await read_json(request), kind)
    state = request.app[STATE]
    if model not in EMBED_SCENARIOS:
        require_model(state, model, method)
    problems = Problems(kind)
    if batch:
        check_batch_embed(body, model, problems)
    else:
        check_embed_request(body, "", model, problems)
    problems.raise_if_any()
    if model in EMBED_SCENARIOS:
        return await SCENARIOS[model](Call(request, model, body, stream=False, sse=False))
    if batch:
        return json_response({"embeddings": [embedding_of(r) for r in body["requests"]]})
    return json_response({"embedding": embedding_of(body)})


# --------------------------------------------------------------------------
# HTTP handlers, middlewares, app
# --------------------------------------------------------------------------


def all_models(state: UpstreamState) -> list[str]:
    extra = [*SCENARIO_MODELS, *EMBEDDING_MODELS]
    return [*state.models, *(m for m in extra if m not in state.models)]


def supported_methods(model: str) -> list[str]:
    if is_embedding_model(model):
        return EMBEDDING_METHODS
    return ["generateContent", "countTokens"]


def model_entry(model: str) -> dict[str, Any]:
    display = " ".join(word.capitalize() for word in model.split("-"))
    if is_embedding_model(model):
        return {
            "name": f"models/{model}",
            "version": "001",
            "displayName": display,
            "description": "Obtain a distributed representation of a text (local test double).",
            "inputTokenLimit": EMBEDDING_INPUT_TOKEN_LIMIT,
            "outputTokenLimit": 1,
            "supportedGenerationMethods": supported_methods(model),
        }
    entry = {
        "name": f"models/{model}",
        "version": "001",
        "displayName": display,
        "description": f"{display} (local test double)",
        "inputTokenLimit": INPUT_TOKEN_LIMIT,
        "outputTokenLimit": OUTPUT_TOKEN_LIMIT,
        "supportedGenerationMethods": supported_methods(model),
        "temperature": 1,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2,
    }
    if is_thinking_model(model):
        entry["thinking"] = True
    return entry


def require_model(state: UpstreamState, model: str, method: str = "generateContent") -> None:
    if model not in all_models(state) or method not in supported_methods(model):
        raise model_not_found(model, method)


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    check_auth(request, state.api_key)
    return json_response({"models": [model_entry(m) for m in all_models(state)]})


async def get_model(request: web.Request) -> web.Response:
    state = request.app[STATE]
    check_auth(request, state.api_key)
    model = request.match_info["model"]
    if model not in all_models(state):
        raise model_not_found(model)
    return json_response(model_entry(model))


async def model_method(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    check_auth(request, state.api_key)
    model, method = request.match_info["model"], request.match_info["method"]
    if method == "countTokens":
        return await count_tokens(request, model)
    if method in EMBEDDING_METHODS:
        return await embed(request, model, method)
    if method not in ("generateContent", "streamGenerateContent"):
        raise model_not_found(model, method)
    body = parse_request(await read_json(request), "GenerateContentRequest")
    require_model(state, model)
    validate_generate(body, model, "GenerateContentRequest")
    check_signatures(state, model, body["contents"])
    stream = method == "streamGenerateContent"
    call = Call(request, model, body, stream, sse=stream and request.query.get("alt") == "sse")
    scenario = SCENARIOS.get(model, respond_normally)
    try:
        return await scenario(call)
    except ConnectionError:  # the client left mid-stream
        return drop_connection(request)


async def count_tokens(request: web.Request, model: str) -> web.Response:
    body = parse_request(await read_json(request), "CountTokensRequest")
    require_model(request.app[STATE], model, "countTokens")
    inner = body.get("generateContentRequest")
    if inner is not None:
        prefix = "CountTokensRequest.generate_content_request"
        if not str(inner.get("model", "")).startswith("models/"):
            raise invalid(f"* {prefix}.model: unexpected model name format\n")
        if "contents" in body:
            raise invalid(
                "* CountTokensRequest: only one of contents and generate_content_request"
                " may be set\n"
            )
        validate_generate(inner, model, prefix)
        counted = inner
    else:
        check_roles(body.get("contents", []))
        problems = Problems("CountTokensRequest")
        check_contents(body, problems)
        problems.raise_if_any()
        counted = body
    text_tokens, image_tokens = prompt_tokens(counted)
    details = [{"modality": "TEXT", "tokenCount": text_tokens}]
    if image_tokens:
        details.append({"modality": "IMAGE", "tokenCount": image_tokens})
    total = text_tokens + image_tokens
    return json_response({"totalTokens": total, "promptTokensDetails": details})


def wants_array(request: web.Request) -> bool:
    is_stream = request.path.endswith(":streamGenerateContent")
    return is_stream and request.query.get("alt") != "sse"


@web.middleware
async def google_errors(request: web.Request, handler: Callable) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return error.response(as_array=wants_array(request))
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        page = HTML_404.format(path=request.path)
        return web.Response(status=404, text=page, content_type="text/html")


def make_app(api_key: str | None, models: list[str], brain: Callable | None = None) -> web.Application:
    app = serving.application(google_errors)
    app[STATE] = UpstreamState(api_key=api_key, models=list(models), brain=brain)
    app.router.add_get(f"/{API_VERSION}/models", list_models)
    app.router.add_get(f"/{API_VERSION}/models/{{model:[^/:]+}}", get_model)
    app.router.add_post(
        f"/{API_VERSION}/models/{{model:[^/:]+}}:{{method:[A-Za-z]+}}", model_method
    )
    return app


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    serving.main(make_app, DEFAULT_MODELS, __doc__, argv)


if __name__ == "__main__":
    main()
