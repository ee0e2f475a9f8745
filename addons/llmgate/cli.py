"""The llmgate command: `llmgate login qwen|gemini|antigravity|iflow`."""

from __future__ import annotations

import dataclasses
from enum import Enum
from pathlib import Path

import typer

from llmgate import login as flows
from llmgate import oauth

app = typer.Typer(help="llmgate: an LLM API gateway on mitmproxy.", no_args_is_help=True)


class Provider(str, Enum):
    qwen = "qwen"
    gemini = "gemini"
    antigravity = "antigravity"
    iflow = "iflow"


DEFAULT_FILES = {  # where the official CLIs (and the gateway, by default) read them
    Provider.qwen: "~/.qwen/oauth_creds.json",
    Provider.gemini: "~/.gemini/oauth_creds.json",
    Provider.antigravity: "~/.llmgate/antigravity/account.json",
    Provider.iflow: "~/.iflow/oauth_creds.json",
}
IFLOW_USERINFO = "https://iflow.cn/api/oauth/getUserInfo"


@app.callback()
def main() -> None:
    """llmgate: an LLM API gateway on mitmproxy."""


@app.command(name="login")
def login_command(
    provider: Provider = typer.Argument(..., help="which account to log in"),
    credentials: Path | None = typer.Option(None, help="credentials file to write (default: the CLI's own)"),
    token_url: str | None = typer.Option(None, help="OAuth token endpoint (default: the official one)"),
    auth_url: str | None = typer.Option(None, help="authorization page (Google, iFlow)"),
    device_url: str | None = typer.Option(None, help="device-code endpoint (Qwen)"),
    userinfo_url: str = typer.Option(IFLOW_USERINFO, help="iFlow's user-info endpoint (gives the API key)"),
    port: int | None = typer.Option(None, help="loopback callback port (default: the CLI's, or any free one)"),
    browser: bool = typer.Option(True, help="open the login page in a browser"),
    timeout: float = typer.Option(600.0, help="seconds to wait for the login"),
) -> None:
    """Log in an account and write its credentials where the gateway reads them."""
    path = (credentials or Path(DEFAULT_FILES[provider])).expanduser()
    base = {Provider.qwen: oauth.QWEN, Provider.gemini: oauth.GEMINI_CLI, Provider.antigravity: oauth.ANTIGRAVITY,
            Provider.iflow: oauth.IFLOW}[provider]
    client = dataclasses.replace(base, token_url=token_url or base.token_url, auth_url=auth_url or base.auth_url,
                                 device_url=device_url or base.device_url)
    say = typer.echo
    try:
        if provider is Provider.qwen:
            flows.qwen_device_login(client, path, say, timeout=timeout)
        elif provider is Provider.iflow:
            flows.iflow_login(client, userinfo_url, path, say, 11451 if port is None else port, browser, timeout)
        else:
            if provider is Provider.antigravity:
                say("Warning: Antigravity's terms forbid third-party clients; accounts have been suspended "
                    "for using them. Continue only if you accept that risk.")
            callback = "/oauth-callback" if provider is Provider.antigravity else "/oauth2callback"
            default_port = 51121 if provider is Provider.antigravity else 0
            flows.google_login(client, path, say, callback, default_port if port is None else port, browser,
                               timeout)
    except (flows.LoginError, OSError) as e:
        say(f"Login failed: {e}", err=True)
        raise typer.Exit(1) from None
    say(f"Logged in; credentials written to {path}")


if __name__ == "__main__":
    app()
