"""Errors the gateway answers itself, rendered in the caller's API format."""

from __future__ import annotations

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


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
        if self.status in _OPENAI_TYPES:
            return _OPENAI_TYPES[self.status]
        return "upstream_error" if self.status in (502, 504) else "server_error"
