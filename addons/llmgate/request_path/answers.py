"""mitmproxy responses the gateway makes itself."""

from __future__ import annotations

import json

from mitmproxy import http

from llmgate.errors import GatewayError
from llmgate.request_path.client_apis import OPENAI_CHAT, ClientApi


def error_response(err: GatewayError, api: ClientApi = OPENAI_CHAT, array: bool = False) -> http.Response:
    """The error in the caller's API format; `array`: wrapped in [ ], as Google answers a
    streamGenerateContent call without alt=sse."""
    headers = {"Content-Type": "application/json", **err.headers}
    body = api.error_body(err)
    return http.Response.make(err.status, b"[" + body + b"]" if array else body, headers)


def json_response(status: int, obj) -> http.Response:
    return http.Response.make(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})
