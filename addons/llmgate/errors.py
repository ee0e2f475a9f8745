"""Errors the gateway answers itself, and the error type each client API uses for a status."""

from __future__ import annotations

_OPENAI_TYPES = {
    401: "invalid_request_error",  # as OpenAI answers a wrong key (code invalid_api_key)
    403: "permission_error",
    408: "timeout_error",
    429: "rate_limit_error",
    502: "upstream_error",
    504: "upstream_error",
}
# Anthropic's documented error types (docs.anthropic.com/en/api/errors)
_ANTHROPIC_TYPES = {
    401: "authentication_error", 402: "billing_error", 403: "permission_error", 404: "not_found_error",
    413: "request_too_large", 429: "rate_limit_error", 500: "api_error", 502: "api_error",
    503: "overloaded_error", 504: "timeout_error", 529: "overloaded_error",
}
# google.rpc.Code names by the HTTP status Google's APIs answer them with
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    405: "UNIMPLEMENTED", 408: "DEADLINE_EXCEEDED", 409: "ABORTED", 413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
    501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}
_GOOGLE_HTTP = {  # the HTTP status of each google.rpc.Code (google/rpc/code.proto)
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403, "NOT_FOUND": 404, "ABORTED": 409, "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429, "CANCELLED": 499, "DATA_LOSS": 500, "UNKNOWN": 500, "INTERNAL": 500,
    "UNIMPLEMENTED": 501, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
}


def openai_type(status: int) -> str:
    return _OPENAI_TYPES.get(status) or ("invalid_request_error" if status < 500 else "server_error")


def anthropic_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")


def google_status(status: int, name: str | None = None) -> str:
    """The google.rpc.Code for a status; `name` (an upstream's own) is kept when it fits the status."""
    name = (name or "").upper()
    if _GOOGLE_HTTP.get(name) == status:
        return name
    return _GOOGLE_STATUS.get(status) or ("INVALID_ARGUMENT" if status < 500 else "INTERNAL")


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        native: tuple[str, bytes] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}
        # the upstream's own error body and its shape ("openai" | "anthropic" | "google"):
        # a client speaking that shape gets it as is (Google's details, Anthropic's request_id...)
        self.native = native

    @property
    def openai_type(self) -> str:
        return openai_type(self.status)
