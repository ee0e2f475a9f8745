"""mitmproxy responses the gateway makes itself."""

from __future__ import annotations

import json

from mitmproxy import http

from llmgate.errors import GatewayError


def error_response(err: GatewayError) -> http.Response:
    headers = {"Content-Type": "application/json", **err.headers}
    return http.Response.make(err.status, err.openai_body(), headers)


def json_response(status: int, obj) -> http.Response:
    return http.Response.make(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})
