"""mitmproxy responses the gateway makes itself."""

from __future__ import annotations

import json

from mitmproxy import http

from llmgate.client_apis import OPENAI_CHAT, ClientApi
from llmgate.errors import GatewayError


def error_response(err: GatewayError, api: ClientApi = OPENAI_CHAT) -> http.Response:
    """The error in the caller's API format."""
    headers = {"Content-Type": "application/json", **err.headers}
    return http.Response.make(err.status, api.error_body(err), headers)


def json_response(status: int, obj) -> http.Response:
    return http.Response.make(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})
