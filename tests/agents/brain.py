"""A scripted model for the real coding-agent CLIs, plugged into the strict provider doubles
(tests/upstreams/*: make_app(..., brain=Brain())). The doubles still validate every request as
the real service would; the brain only decides what the model answers.

It acts on requests whose prompt holds `LLMGATE-TASK dir=<folder>` and which offer a way to
write files (a write tool or a shell), and plays one session, step by step from the number of
tool calls already in the conversation: write A.txt; write B.txt and C.txt in parallel;
read pic.png (when a read tool exists); then a final text naming the images it saw. Anything
else (titles, quota checks, summaries) gets the double's own answer."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

MARK = re.compile(r"LLMGATE-TASK dir=([\w/.\-]+)")
WRITERS = ("Write", "write_file", "write")  # Claude Code; Gemini CLI and Qwen Code; opencode
SHELLS = {"exec_command": "cmd", "shell": "command", "Bash": "command", "run_shell_command": "command"}
READERS = ("Read", "read_file", "view_image", "read")
PATH_KEYS = ("file_path", "absolute_path", "path", "filePath")
FILES = {"A.txt": "alpha", "B.txt": "beta", "C.txt": "gamma"}
IMAGE = "pic.png"


@dataclass
class Plan:
    text: str | None = None
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def prompt(folder: str) -> str:
    return (f"LLMGATE-TASK dir={folder} : write A.txt, then B.txt and C.txt, look at {IMAGE}, "
            "then say DONE.")


def tools_of(wire: str, body: dict) -> dict[str, dict]:
    """Offered function tools: name -> JSON schema of their arguments."""
    tools = body.get("tools") or []
    if wire == "openai":
        return {t["function"]["name"]: t["function"].get("parameters") or {} for t in tools if "function" in t}
    if wire == "anthropic":
        return {t["name"]: t.get("input_schema") or {} for t in tools if "name" in t}
    if wire == "gemini":
        return {d["name"]: d.get("parametersJsonSchema") or d.get("parameters") or {}
                for t in tools for d in t.get("functionDeclarations") or t.get("function_declarations") or []}
    return {t["name"]: t.get("parameters") or {} for t in tools if t.get("type") == "function"}


def calls_so_far(wire: str, body: dict) -> int:
    if wire == "openai":
        return sum(len(m.get("tool_calls") or []) for m in body["messages"])
    if wire == "anthropic":
        return sum(1 for m in body["messages"] if isinstance(m["content"], list)
                   for b in m["content"] if b.get("type") == "tool_use")
    if wire == "gemini":
        return sum(1 for c in body["contents"] for p in c.get("parts", []) if "functionCall" in p
                   or "function_call" in p)
    items = body["input"] if isinstance(body.get("input"), list) else []
    return sum(1 for i in items if i.get("type") in ("function_call", "custom_tool_call"))


def images_in(value: Any) -> int:
    """Images anywhere in a request, in any of the four formats."""
    if isinstance(value, list):
        return sum(images_in(v) for v in value)
    if not isinstance(value, dict):
        return 0
    inline = value.get("inlineData") or value.get("inline_data") or {}
    own = value.get("type") in ("image", "image_url", "input_image") or \
        str(inline.get("mimeType") or inline.get("mime_type") or "").startswith("image/")
    return int(own) + sum(images_in(v) for v in value.values())


def path_key(schema: dict) -> str:
    props = schema.get("properties") or {}
    return next((k for k in PATH_KEYS if k in props), "file_path")


class Brain:
    def __call__(self, wire: str, body: dict) -> Plan | None:
        found = MARK.search(json.dumps(body))
        tools = tools_of(wire, body)
        if not found or not (set(tools) & {*WRITERS, *SHELLS}):
            return None
        folder, done = found.group(1), calls_so_far(wire, body)
        if done == 0:
            return Plan(calls=[self.write(tools, folder, "A.txt")])
        if done == 1:
            return Plan(calls=[self.write(tools, folder, "B.txt"), self.write(tools, folder, "C.txt")])
        reader = next((r for r in READERS if r in tools), None)
        if done == 3 and reader:
            return Plan(calls=[(reader, {path_key(tools[reader]): f"{folder}/{IMAGE}"})])
        return Plan(text=f"DONE images={images_in(body)}")

    @staticmethod
    def write(tools: dict[str, dict], folder: str, name: str) -> tuple[str, dict]:
        path = f"{folder}/{name}"
        writer = next((w for w in WRITERS if w in tools), None)
        if writer:
            return writer, {path_key(tools[writer]): path, "content": FILES[name]}
        shell = next(s for s in SHELLS if s in tools)
        return shell, {SHELLS[shell]: f"printf %s {FILES[name]} > {path}"}
