"""Canonical requests and responses (converters/canonical.py) as text a person reads in mitmweb.

Pure: no mitmproxy import. Used by llm_views.py, which decodes the wire formats to these.
"""

from __future__ import annotations

import json
from typing import Any

from converters import canonical as cn
from converters.shapes import arr, obj

WIDTH = 200  # one event line, one tool line
_SAMPLING = ("max_tokens", "temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty")


def compact(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def clip(line: str, width: int = WIDTH) -> str:
    line = line.replace("\n", "\\n")
    return line if len(line) <= width else line[: width - 1] + "…"


def arguments(text: str) -> str:
    """A tool call's arguments: parsed and indented when they are JSON, else as sent."""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False) if text.strip() else "{}"
    except (ValueError, RecursionError):
        return f"{text}\n# (arguments are not valid JSON)"


def _image(img: cn.Image) -> str:
    if img.data is not None:
        size = len(img.data.rstrip("=")) * 3 // 4  # base64 length -> bytes, without decoding
        return f"[image {img.media_type or '?'}, {size} bytes]"
    return f"[image {img.media_type or '?'}, {clip(img.url or '', 120)}]"


def _block(b: cn.Block) -> list[str]:
    if isinstance(b, cn.Text):
        return [b.text]
    if isinstance(b, cn.Image):
        return [_image(b)]
    if isinstance(b, cn.ToolCall):
        return [f"-> tool call {b.name} ({b.id}):", arguments(b.arguments)]
    if isinstance(b, cn.ToolResult):
        head = f"<- tool result{' ' + b.name if b.name else ''} ({b.call_id}){' ERROR' if b.is_error else ''}:"
        return [head] + [line for part in b.content for line in _block(part)]
    if isinstance(b, cn.Thinking):
        sig = " (signed)" if b.signature else " (encrypted)" if b.encrypted_content else ""
        return [f"[thinking{sig}]", b.text, "[/thinking]"]
    return [f"[redacted thinking, {len(b.data)} characters]"]


def blocks(content: list[cn.Block]) -> list[str]:
    return [line for b in content for line in _block(b)]


def _type_of(schema: Any) -> str:
    if not isinstance(schema, dict):
        return "any"
    if isinstance(schema.get("enum"), list):
        return "|".join(compact(v) for v in schema["enum"][:6]) + ("|…" if len(schema["enum"]) > 6 else "")
    kind = schema.get("type")
    if isinstance(kind, list):
        return "|".join(str(k) for k in kind)
    if kind == "array":
        return _type_of(schema.get("items")) + "[]"
    if kind:
        return str(kind)
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return "|".join(_type_of(s) for s in schema[key])
    return "any"


def tool_line(t: cn.Tool) -> str:
    """name(param: type, optional?: type) - description: one line per tool."""
    schema = t.parameters if isinstance(t.parameters, dict) else {}
    props, required = obj(schema.get("properties")), arr(schema.get("required"))
    params = ", ".join(f"{k}{'' if k in required else '?'}: {_type_of(v)}" for k, v in props.items())
    desc = (t.description or "").strip().split("\n", 1)[0]
    return clip(f"{t.name}({params})" + (f" - {desc}" if desc else ""))


def _settings(r: cn.Request) -> list[str]:
    out = [f"stream: {str(r.stream).lower()}" + (" (usage asked for)" if r.stream and r.include_usage else "")]
    sampling = [f"{k}={getattr(r, k)}" for k in _SAMPLING if getattr(r, k) is not None]
    if r.stop:
        sampling.append(f"stop={compact(r.stop)}")
    if sampling:
        out.append("sampling: " + " ".join(sampling))
    if r.reasoning is not None:
        rs = r.reasoning
        parts = [f"{k}={v}" for k, v in (("effort", rs.effort), ("budget_tokens", rs.budget_tokens),
                                         ("level", rs.level)) if v is not None]
        out.append("thinking: " + " ".join(parts + [f"include_thoughts={str(rs.include_thoughts).lower()}"]))
    if r.tool_choice is not None:
        out.append(f"tool_choice: {r.tool_choice.mode}" + (f" {r.tool_choice.name}" if r.tool_choice.name else ""))
    if r.response_format is not None and r.response_format.type != "text":
        out.append(f"response_format: {r.response_format.type}" + (f" {r.response_format.name}"
                                                                    if r.response_format.name else ""))
    if r.dropped:
        out.append("other parameters: " + ", ".join(r.dropped))
    return out


def request(r: cn.Request) -> list[str]:
    out = [f"model: {r.model}"] + _settings(r)
    if r.system:
        out += ["", "## system", *blocks(list(r.system))]
    for m in r.messages:
        out += ["", f"## {m.role}", *blocks(m.content)]
    if r.tools or r.hosted_tools:
        out += ["", f"## tools ({len(r.tools) + len(r.hosted_tools)})"]
        out += [tool_line(t) for t in r.tools]
        out += [f"{h.kind} (run by the provider) {compact(h.config) if h.config else ''}".rstrip()
                for h in r.hosted_tools]
    return out


def usage(u: cn.Usage) -> str:
    return (f"usage: {u.input_tokens} in ({u.cached_tokens} cached, {u.cache_write_tokens} cache write), "
            f"{u.output_tokens} out ({u.reasoning_tokens} reasoning), {u.total_tokens} total")


def response(r: cn.Response) -> list[str]:
    out = [f"## assistant (model {r.model or '?'}, id {r.id or '?'})", *blocks(r.content), ""]
    out.append(f"finish: {r.finish}" + (f" ({r.finish_detail})" if r.finish_detail else ""))
    out.append(usage(r.usage))
    return out
