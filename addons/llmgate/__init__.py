"""LLM API gateway on mitmproxy: routing, upstream I/O and the addons that tie them in."""
