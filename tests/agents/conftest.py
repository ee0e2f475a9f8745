"""The real coding-agent CLIs (tests/agents/package-lock.json, installed by scripts/agents.sh)
through a real gateway to the strict provider doubles, which a scripted Brain answers.

One gateway per backend wire format; every (agent, backend) session runs once, all of them
side by side, and the tests read what each left behind: files in its working folder, its
output, the gateway's request log (GET /admin/requests) and the double's request log.
LLMGATE_WRITE_COMPAT=1 writes docs/compatibility.md from the outcomes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.agents.brain import IMAGE, Brain, prompt
from tests.harness import ROOT, Gateway

UPSTREAM_KEY = "agents-upstream-key"
RUN_TIMEOUT = 90  # seconds one CLI session may take
NODE_MAJOR = 20


@dataclass(frozen=True)
class Backend:
    wire: str  # the brain's name for the wire format
    module: str  # tests/upstreams/<module>
    kind: str  # provider type in proxy.yaml
    model: str  # what every agent's model names are aliased to
    base_suffix: str = ""  # the provider's base_url beyond the double's origin


BACKENDS = {
    "openai": Backend("openai", "openai_compat", "openai", "qwen3-coder-plus", "/v1"),
    "anthropic": Backend("anthropic", "anthropic_api", "anthropic", "claude-sonnet-4-5"),
    "gemini": Backend("gemini", "gemini_api", "gemini", "gemini-2.5-flash"),
    "openai-responses": Backend("responses", "responses_api", "openai-responses", "gpt-5", "/v1"),
}
# the model names the agents ask for, all routed to the backend's model by aliases
AGENT_MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-haiku-4-5-20251001", "gpt-5",
                "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite", "qwen3-coder-plus"]
AGENTS = ["claude", "codex", "gemini", "qwen", "opencode"]
NATIVE = {"claude": "anthropic", "codex": "openai-responses", "gemini": "gemini", "qwen": "openai",
          "opencode": "openai"}
PACKAGES = {"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex", "gemini": "@google/gemini-cli",
            "qwen": "@qwen-code/qwen-code", "opencode": "opencode-ai"}
QUIET = {  # telemetry, update checks, error reports, IDE integration: off everywhere
    "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "CLAUDE_CODE_IDE_SKIP_AUTO_INSTALL": "1",
    "GEMINI_CLI_TRUST_WORKSPACE": "true", "QWEN_CODE_SUPPRESS_YOLO_WARNING": "1", "NO_COLOR": "1",
    "OPENCODE_DISABLE_AUTOUPDATE": "1", "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1", "CI": "1", "TERM": "dumb",
}
SETTINGS = {  # ~/.gemini/settings.json and ~/.qwen/settings.json
    "privacy": {"usageStatisticsEnabled": False}, "telemetry": {"enabled": False},
    "general": {"disableAutoUpdate": True, "disableUpdateNag": True}, "ide": {"enabled": False},
}


def png() -> bytes:
    """A 2x2 red PNG."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * 2 for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def agent_setup(agent: str, home: Path, gateway: str, key: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one agent pointed at the gateway (README: Coding agents)."""
    task = prompt(str(home / "work"))
    if agent == "claude":
        return (["claude", "-p", task, "--model", "claude-sonnet-4-5", "--permission-mode", "acceptEdits"],
                {"ANTHROPIC_BASE_URL": gateway, "ANTHROPIC_AUTH_TOKEN": key})
    if agent == "codex":
        (home / ".codex").mkdir()
        (home / ".codex" / "config.toml").write_text(
            'model = "gpt-5"\nmodel_provider = "llmgate"\ncheck_for_update_on_startup = false\n\n'
            '[model_providers.llmgate]\nname = "llmgate"\n'
            f'base_url = "{gateway}/v1"\nwire_api = "responses"\nenv_key = "LLMGATE_API_KEY"\n\n'
            '[analytics]\nenabled = false\n\n'
            # two sandboxed commands at once race over the /tmp/.codex mount (bwrap: "Can't mount
            # tmpfs on /newroot/tmp/.codex"); the work folder stays writable without /tmp
            '[sandbox_workspace_write]\nexclude_slash_tmp = true\n')
        return (["codex", "exec", "--skip-git-repo-check", "-s", "workspace-write", task],
                {"LLMGATE_API_KEY": key, "CODEX_HOME": str(home / ".codex")})
    if agent == "gemini":
        (home / ".gemini").mkdir()
        settings = {**SETTINGS, "security": {"auth": {"selectedType": "gemini-api-key"}}}
        (home / ".gemini" / "settings.json").write_text(json.dumps(settings))
        return (["gemini", "-p", task, "-m", "gemini-2.5-pro", "--approval-mode", "auto_edit"],
                {"GOOGLE_GEMINI_BASE_URL": gateway, "GEMINI_API_KEY": key})
    if agent == "opencode":
        (home / ".config" / "opencode").mkdir(parents=True)
        (home / ".config" / "opencode" / "opencode.json").write_text(json.dumps({
            "autoupdate": False, "share": "disabled", "model": "llmgate/qwen3-coder-plus",
            "provider": {"llmgate": {"npm": "@ai-sdk/openai-compatible", "name": "llmgate",
                                     "options": {"baseURL": gateway + "/v1", "apiKey": "{env:LLMGATE_API_KEY}"},
                                     "models": {"qwen3-coder-plus": {}}}}}))
        return ["opencode", "run", task], {"LLMGATE_API_KEY": key}
    (home / ".qwen").mkdir()
    settings = {**SETTINGS, "security": {"auth": {"selectedType": "openai"}}}
    (home / ".qwen" / "settings.json").write_text(json.dumps(settings))
    return (["qwen", "-p", task, "--approval-mode", "auto-edit"],
            {"OPENAI_BASE_URL": gateway + "/v1", "OPENAI_API_KEY": key, "OPENAI_MODEL": "qwen3-coder-plus"})


def run_bounded(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """Runs a CLI in its own process group, killed whole after it ends or times out."""
    p = subprocess.Popen(args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, errors="replace", start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        rc: int | None = p.returncode
    except subprocess.TimeoutExpired:
        rc = None
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        out += f"\n[killed after {timeout} s]"
    try:
        os.killpg(p.pid, signal.SIGKILL)  # helpers it left behind (MCP servers, shells)
    except ProcessLookupError:
        pass
    return rc, out


@dataclass
class Stack:
    """One backend: its double (with the brain) and a gateway in front of it."""
    backend: Backend
    upstream: object
    gateway: Gateway

    def rows(self, key_name: str) -> list[dict]:
        """The gateway's request log for one client key, once its batched writes settle."""
        last: list[dict] = []
        for _ in range(20):
            got = httpx.get(self.gateway.base + "/admin/requests",
                            params={"key": key_name, "limit": 1000}).json()["requests"]
            if got and len(got) == len(last):
                return got
            last = got
            time.sleep(0.25)
        return last


@dataclass
class Run:
    agent: str
    backend: str
    rc: int | None
    output: str
    work: Path
    seconds: float
    rows: list[dict] = field(default_factory=list)  # the gateway's request log for this run
    upstream: list[dict] = field(default_factory=list)  # what the double received for this run

    def explain(self) -> str:
        bad = [f"{r['endpoint']} {r['model']} -> {r['status']} {r['error'] or ''}".strip()
               for r in self.rows if r["status"] != 200 or r["error"]]
        quoted = re.search(r'"message":\s*"((?:[^"\\]|\\.)+)"', self.output)
        said = quoted.group(1) if quoted else next(
            (ln.strip() for ln in self.output.splitlines() if "error" in ln.lower()), "")[:300]
        files = sorted(p.name for p in self.work.iterdir())
        tail = "\n".join(self.output.strip().splitlines()[-25:])
        return (f"{self.agent} via {self.backend}: rc={self.rc}; failed exchanges: {bad}; agent said: {said}; "
                f"files: {files}"
                f"\n--- output tail:\n{tail}")


@pytest.fixture(scope="session")
def agent_bin() -> Path:
    """The CLIs' bin folder (installed on first use), or a skip saying why not."""
    if not shutil.which("npm") or not shutil.which("node"):
        pytest.skip("node and npm are needed for the coding-agent CLIs")
    p = subprocess.run([str(ROOT / "scripts" / "agents.sh")], capture_output=True, text=True, timeout=900)
    if p.returncode:
        pytest.skip(f"scripts/agents.sh failed: {p.stderr.strip()[-500:]}")
    return Path(p.stdout.strip()) / "node_modules" / ".bin"


@pytest.fixture(scope="session")
def versions(agent_bin) -> dict[str, str]:
    """Each CLI's --version, or why it does not run here (its tests skip with that reason)."""
    found = {}
    for agent in AGENTS:
        rc, out = run_bounded([str(agent_bin / agent), "--version"], ROOT, {**os.environ, **QUIET}, 30)
        found[agent] = out.strip().splitlines()[-1] if rc == 0 and out.strip() else f"UNAVAILABLE: {out[-300:]}"
    return found


def start_stack(name: str, backend: Backend, tmp: Path) -> Stack:
    import importlib

    from tests.upstreams.serving import ServerThread

    module = importlib.import_module(f"tests.upstreams.{backend.module}")
    models = sorted({backend.model, *getattr(module, "DEFAULT_MODELS", [])})
    server = ServerThread(module.make_app(UPSTREAM_KEY, models, brain=Brain()))
    origin = server.__enter__()
    cfg = {"server": {"api_keys": [{"name": a, "key": f"sk-agent-{a}"} for a in AGENTS]},
           "providers": [{"id": "b", "type": backend.kind, "base_url": origin + backend.base_suffix,
                          "api_key": UPSTREAM_KEY, "models": models}],
           "routing": {"aliases": {m: f"b/{backend.model}" for m in AGENT_MODELS if m != backend.model}}}
    (tmp / name).mkdir()
    return Stack(backend, server, Gateway(cfg, tmp / name / "proxy.yaml"))


def run_session(agent: str, name: str, stack: Stack, agent_bin: Path, tmp: Path) -> Run:
    home = Path(tempfile.mkdtemp(prefix=f"{agent}-{name}-", dir=tmp))
    (home / "work").mkdir()
    (home / "work" / IMAGE).write_bytes(png())
    args, env = agent_setup(agent, home, stack.gateway.base, f"sk-agent-{agent}")
    env = {"PATH": f"{agent_bin}:{os.environ['PATH']}", "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache"), "XDG_DATA_HOME": str(home / ".local" / "share"),
           "TMPDIR": str(home), **QUIET, **env}
    start = time.monotonic()
    rc, out = run_bounded(args, home / "work", env, RUN_TIMEOUT)
    return Run(agent, name, rc, out, home / "work", time.monotonic() - start)


@pytest.fixture(scope="session")
def sessions(request, agent_bin, versions, tmp_path_factory) -> dict[tuple[str, str], Run]:
    """The (agent, backend) sessions the selected tests read (and each agent's native one),
    run side by side, five at a time."""
    tmp = Path(tempfile.mkdtemp(prefix="agents-", dir=tmp_path_factory.getbasetemp()))
    wanted = {i.callspec.params["run"] for i in request.session.items
              if "run" in getattr(getattr(i, "callspec", None), "params", {})}
    wanted |= {(a, NATIVE[a]) for a, _ in wanted}
    stacks = {name: start_stack(name, b, tmp) for name, b in BACKENDS.items() if any(n == name for _, n in wanted)}
    runnable = [c for c in sorted(wanted) if not versions[c[0]].startswith("UNAVAILABLE")]
    try:
        with ThreadPoolExecutor(5) as pool:
            futures = {c: pool.submit(run_session, c[0], c[1], stacks[c[1]], agent_bin, tmp) for c in runnable}
            runs = {c: f.result() for c, f in futures.items()}
        for (agent, name), run in runs.items():
            run.rows = stacks[name].rows(agent)
        by_agent = split_upstream_logs(stacks, runs)
        for c, run in runs.items():
            run.upstream = by_agent.get(c, [])
        yield runs
    finally:
        for s in stacks.values():
            s.gateway.stop()
            s.upstream.__exit__(None, None, None)


def split_upstream_logs(stacks: dict[str, Stack], runs: dict) -> dict[tuple[str, str], list[dict]]:
    """The double's request log per run: each request names its agent's working folder."""
    out: dict[tuple[str, str], list[dict]] = {}
    for name, stack in stacks.items():
        log = httpx.get(f"http://127.0.0.1:{stack.upstream.port}/__requests").json()
        for (agent, backend), run in runs.items():
            if backend == name:
                out[(agent, backend)] = [r for r in log if str(run.work) in json.dumps(r["body"])]
    return out


# --- docs/compatibility.md from the outcomes (LLMGATE_WRITE_COMPAT=1) -------------------------

CAPABILITIES = {"test_text": "text", "test_tools": "tools", "test_parallel_tools": "parallel tools",
                "test_streaming": "streaming", "test_thinking": "thinking", "test_image": "images",
                "test_housekeeping": "housekeeping"}
OUTCOMES: dict[tuple[str, str, str], tuple[str, str]] = {}  # (agent, backend, capability) -> (mark, why)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    combo = getattr(item, "callspec", None) and item.callspec.params.get("run")
    capability = CAPABILITIES.get(item.originalname)
    if not combo or not capability or not (report.when == "call" or not report.passed):
        return
    why = ""
    if report.outcome == "skipped":
        why = str(report.longrepr[2]).removeprefix("Skipped: ") if isinstance(report.longrepr, tuple) else ""
    elif report.failed:
        why = first_line(report.longreprtext)
    OUTCOMES[(*combo, capability)] = ({"passed": "pass", "failed": "FAIL", "skipped": "n/a"}[report.outcome], why)


def first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("E ")]
    return (lines[0][1:].strip() if lines else text.strip().splitlines()[-1])[:400]


def pytest_sessionfinish(session):
    if os.environ.get("LLMGATE_WRITE_COMPAT") == "1" and OUTCOMES:
        (ROOT / "docs" / "compatibility.md").write_text(compat_markdown())


def compat_markdown() -> str:
    lock = json.loads((Path(__file__).parent / "package-lock.json").read_text())["packages"]
    caps = list(CAPABILITIES.values())
    out = ["# Coding agents x backends", "",
           "Generated by `LLMGATE_WRITE_COMPAT=1 pytest tests/agents` (tests/agents/conftest.py): the real",
           "CLIs, through the gateway, against the strict provider doubles (tests/upstreams), driven by a",
           "scripted model (tests/agents/brain.py). Backend = the wire format the gateway speaks upstream;",
           "the agent's own format is passthrough, the others are converted. Do not edit by hand.", "",
           "| agent | backend | " + " | ".join(caps) + " |", "|---|---|" + "---|" * len(caps)]
    notes: dict[str, int] = {}  # reason -> its number
    for agent in AGENTS:
        version = lock.get(f"node_modules/{PACKAGES[agent]}", {}).get("version", "?")
        for backend in BACKENDS:
            cells = []
            for cap in caps:
                mark, why = OUTCOMES.get((agent, backend, cap), ("-", ""))
                if why and mark != "pass":
                    mark += f" [{notes.setdefault(why, len(notes) + 1)}]"
                cells.append(mark)
            native = " (native)" if NATIVE[agent] == backend else ""
            out.append(f"| {agent} {version} | {backend}{native} | " + " | ".join(cells) + " |")
    return "\n".join(out + ["", "Capabilities: text = the final answer reaches the agent; tools = a file "
                             "written by the agent's tool; parallel tools = two files from one turn; streaming "
                             "= the agent's streamed exchanges; thinking = the agent's thinking request reaches "
                             "the backend and the session continues over its thinking turns; images = a PNG "
                             "read by the agent's tool reaches the backend; housekeeping = every exchange of the "
                             "session (titles, counts, checks included) answered 200 without error.", "",
                             *(f"{n}. {why}" for why, n in notes.items()), ""])
