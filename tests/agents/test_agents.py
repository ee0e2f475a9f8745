"""The real coding-agent CLIs through the gateway, against every backend wire format: one
scripted session each (tests/agents/brain.py), read back by one test per capability."""

import re

import pytest

from tests.agents.brain import FILES, images_in
from tests.agents.conftest import AGENTS, BACKENDS, NATIVE

pytestmark = pytest.mark.timeout(900)  # the first test installs the CLIs and runs every session
THINKERS = {"claude": "thinking", "codex": "reasoning", "gemini": "thinkingConfig"}  # what each asks for
THINKING_UPSTREAM = {"anthropic": "thinking", "gemini": "thinkingConfig", "openai-responses": "reasoning"}


@pytest.fixture(params=[(a, b) for a in AGENTS for b in BACKENDS], ids="-".join)
def run(request, sessions, versions):
    agent = request.param[0]
    if versions[agent].startswith("UNAVAILABLE"):
        pytest.skip(f"{agent} does not run here: {versions[agent]}")
    return sessions[request.param]


def written(run, name: str) -> str | None:
    path = run.work / name
    return path.read_text() if path.exists() else None


def test_text(run):
    assert run.rc == 0 and "DONE" in run.output, run.explain()


def test_tools(run):
    assert written(run, "A.txt") == FILES["A.txt"], run.explain()


def test_parallel_tools(run):
    assert (written(run, "B.txt"), written(run, "C.txt")) == (FILES["B.txt"], FILES["C.txt"]), run.explain()


def test_streaming(run):
    streamed = [r for r in run.rows if r["stream"]]
    assert streamed, f"no streamed exchange in the request log\n{run.explain()}"
    assert all(r["status"] == 200 and not r["error"] for r in streamed), run.explain()


def test_thinking(run):
    if run.agent not in THINKERS:
        pytest.skip(f"{run.agent} does not ask for thinking in its stock configuration")
    assert run.rc == 0 and "DONE" in run.output, run.explain()
    wanted = THINKING_UPSTREAM.get(run.backend)
    if wanted:  # the backend's own thinking request, converted from the agent's
        asked = [r for r in run.upstream if wanted in str((r["body"] or {}).keys()) + str(
            (r["body"] or {}).get("generationConfig", {}).keys())]
        assert asked, f"no upstream request asked for {wanted}\n{run.explain()}"


def test_image(run, sessions):
    native = sessions[(run.agent, NATIVE[run.agent])]  # passthrough: what the agent itself sends
    if not images_in([r["body"] for r in native.upstream]):
        pytest.skip(f"{run.agent} sends no image of the PNG it read, even on its own wire format")
    seen = re.search(r"DONE images=(\d+)", run.output)
    assert seen and int(seen.group(1)) >= 1, f"the PNG the agent read did not reach the backend\n{run.explain()}"


def test_housekeeping(run):
    assert run.rows, run.explain()
    failed = [r for r in run.rows if r["status"] != 200 or r["error"]]
    assert not failed, run.explain()
