"""What the e2e tests of the sign-in providers (Codex, Copilot) share: their vendor double's
control endpoints, credentials files seeded from it, and a gateway whose providers each read
their own credentials file."""

import json
from pathlib import Path

import httpx

from tests.e2e.conftest import CLIENT_KEY, reset_cooldowns
from tests.harness import Upstream


class VendorDouble(Upstream):
    """tests/upstreams/<module>, whose control endpoints are under `control_path` (no auth)."""

    def __init__(self, module: str, control_path: str):
        super().__init__(module)
        self.control_path = control_path


def control(double: VendorDouble, path: str, body: dict | None = None, **params: str) -> dict:
    r = httpx.post(f"{double.base}{double.control_path}/{path}", json=body or {}, params=params)
    r.raise_for_status()
    return r.json()


def state(double: VendorDouble) -> dict:
    return httpx.get(f"{double.base}{double.control_path}").json()


def seed(double: VendorDouble, path: Path, **options: object) -> dict:
    """A credentials file as the vendor's own CLI writes it, at `path`."""
    creds = control(double, "seed", options)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(creds))
    return creds


def gateway_config(common: dict, providers: list[dict], aliases: dict | None = None) -> dict:
    """`common` (type, token_url...) goes into each of `providers`."""
    cfg = {"server": {"api_keys": [CLIENT_KEY], "timeouts": {"connect": 3, "read": 10}},
           "providers": [{**common, **p} for p in providers]}
    return cfg | ({"routing": {"aliases": aliases}} if aliases else {})


def start_afresh(double: VendorDouble, gateway_base: str, providers: list[str]) -> None:
    """The double's accounts, counters and request log reset, the providers' cooldowns ended."""
    control(double, "reset")
    double.clear()
    for provider in providers:
        reset_cooldowns(gateway_base, provider)
