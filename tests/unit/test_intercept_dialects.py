"""Intercept mode: a routed call leaves its vendor's own body fields behind (Qwen Code's DashScope
extras), and nothing else of it changes; other hosts' bodies are not touched."""

from __future__ import annotations

import json

from mitmproxy.test import tflow

from llmgate.addons.intercept import without_dialect
from llmgate.settings import Limits


def _req(host: str, body: bytes):
    r = tflow.treq(host=host, port=443, scheme=b"https", method=b"POST", path=b"/compatible-mode/v1/chat/completions")
    r.headers.clear()
    r.raw_content = body
    return r


def test_dashscope_extras_stay_behind():
    body = {"model": "qwen3-coder-flash", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "metadata": {"sessionId": "s"}, "preserve_thinking": True, "enable_thinking": False}
    r = _req("dashscope.aliyuncs.com", json.dumps(body).encode())
    without_dialect("dashscope.aliyuncs.com", r, Limits())
    assert json.loads(r.content) == {k: v for k, v in body.items() if k not in ("preserve_thinking", "enable_thinking")}


def test_bodies_without_extras_and_other_hosts_keep_their_bytes():
    plain = b'{"model": "qwen3-coder-plus",  "messages": []}'
    r = _req("dashscope.aliyuncs.com", plain)
    without_dialect("dashscope.aliyuncs.com", r, Limits())
    assert r.raw_content == plain
    other = b'{"model": "gpt-5", "preserve_thinking": true}'
    r = _req("api.openai.com", other)
    without_dialect("api.openai.com", r, Limits())
    assert r.raw_content == other
    broken = b'{"preserve_thinking": tru'
    r = _req("portal.qwen.ai", broken)
    without_dialect("portal.qwen.ai", r, Limits())
    assert r.raw_content == broken
