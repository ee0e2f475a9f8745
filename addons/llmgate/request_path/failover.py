"""When a pool member fails before the first byte: whether to try the next one, how long the
failed one cools down, and the error when every member failed or is cooling."""

from __future__ import annotations

from typing import Any

from llmgate.errors import GatewayError
from llmgate.request_path.pool import Cooling, PoolState
from llmgate.request_path.routing import Route

FAILOVER_STATUSES = frozenset((429, 500, 502, 503, 504, 529))  # plus connect errors and timeouts (502/504)
RATE_CODES = frozenset(("quota_exhausted", "rate_limited", "rate_limit_exceeded", "pool_cooling"))


def is_rate_limit(c: Cooling) -> bool:
    """A cooldown the upstream asked for (rate limit, spent quota): kept even when nobody else
    could serve; a backoff after errors is not, when it is the last resort."""
    return c.reason.startswith(("429", "quota"))


def fails_over(e: GatewayError) -> bool:
    """A member's failure another member may not have: rate limits, quota, capacity, 5xx, no
    connection, no answer in time. Anything else (a bad request) would fail everywhere."""
    return e.status in FAILOVER_STATUSES


def retry_after(e: GatewayError) -> float | None:
    for k, v in e.headers.items():
        if k.lower() == "retry-after":
            try:
                return max(0.0, float(v))
            except ValueError:
                return None
    return None


def cool_down(pool: PoolState, route: Route, account: str, e: GatewayError) -> Cooling | None:
    """Start the failed member's cooldown: the whole account for a spent quota, the whole entry
    when its host does not answer, else this account and model."""
    p, model = route.provider.id, route.model
    if e.code in ("pool_cooling", "provider_login_required"):
        return None  # nothing new learnt (or the account is already marked)
    wait = retry_after(e)
    if e.code == "quota_exhausted":
        return pool.cool(p, account, "", wait, f"quota exhausted: {e.message}")
    if e.code == "upstream_unreachable":
        return pool.cool(p, "", "", wait, f"unreachable: {e.message}")
    return pool.cool(p, account, model, wait, f"{e.status}: {e.message}")


def _member(r: Route, account: str = "") -> str:
    return f"{r.provider.id}/{r.model}" + (f" (account {account})" if account else "")


def exhausted(model: str, failures: list[tuple[Route, str, GatewayError]],
              cooling: list[tuple[Route, Cooling | None]], now: float) -> GatewayError:
    """Nothing served the request: say what happened to every member (now: epoch seconds)."""
    if len(failures) == 1 and not cooling:  # one member: its own error, as it was
        return failures[0][2]
    parts = [f"{_member(r, a)}: {e.status} {e.message.rstrip('.')}" for r, a, e in failures]
    for r, c in cooling:
        why = f"cooling down for {c.until - now:.0f} s more ({c.reason.rstrip('.')})" if c else \
            "at its concurrency limit"
        parts.append(f"{_member(r)}: {why}")
    waits = [c.until - now for _, c in cooling if c is not None]
    waits += [w for _, _, e in failures if (w := retry_after(e)) is not None]
    headers = {"Retry-After": str(max(1, round(min(waits))))} if waits else {}
    rate_only = all(e.status == 429 or e.code in RATE_CODES for _, _, e in failures) and all(
        c is not None and is_rate_limit(c) for _, c in cooling)
    status = 429 if rate_only else max((e.status for _, _, e in failures), default=503)
    return GatewayError(status, f"No provider could serve '{model}': " + "; ".join(parts) + ".",
                        code="pool_exhausted", headers=headers)


def affinity_key(rule: str | None, headers: Any, data: dict[str, Any] | None) -> str | None:
    """The session a request belongs to, for session affinity (None: no affinity)."""
    if not rule:
        return None
    if rule.startswith("header:"):
        return headers.get(rule[len("header:"):]) or None
    value = (data or {}).get("prompt_cache_key")
    return value if isinstance(value, str) and value else None
