"""Edits of proxy.yaml that keep the file as its author wrote it: the `providers:` list, and
`routing:` (the default provider, model names as `aliases`).

ruamel.yaml's round trip keeps comments, blank lines, quoting, flow/block style and key order;
${VAR} references stay as written (they are interpolated only when the gateway loads the file).
Every edit is validated with the gateway's own parser (llmgate.settings.parse_settings) before
anything is written, and written atomically: a temp file in the same folder, fsync, os.replace,
the file's mode kept. A refused edit leaves the file untouched.

Comments around list entries: YAML attaches the comment lines *between* two entries to the
end of the first one. The edits here move those lines so that they stay above the entry they
precede: a comment above an entry stays above it when the entry before it changes, grows or
goes; the comment block directly above a removed entry goes with it; comments after the last
entry (such as commented-out examples) stay after the last entry.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark
from ruamel.yaml.scalarstring import DoubleQuotedScalarString
from ruamel.yaml.tokens import CommentToken
from ruamel.yaml.util import load_yaml_guess_indent

from llmgate.providers import PROVIDER_TYPES
from llmgate.settings import KIND_FIELDS, ConfigError, parse_settings

__all__ = [
    "ConfigError", "DuplicateProvider", "UnknownProvider", "add_provider", "update_provider", "set_enabled",
    "remove_provider", "list_providers", "get_provider", "read_config", "env_references", "secrets_left_behind",
    "UnknownModel", "DuplicateModel", "LastTarget", "set_default", "add_model", "link_model",
    "unlink_model", "remove_model",
]

_LOCK = threading.Lock()  # one read-modify-write at a time in this process


class DuplicateProvider(ValueError):
    """add_provider (or a rename) with an id the file already has."""


class UnknownProvider(ValueError):
    """No provider with that id in the file."""


# ---------------------------------------------------------------- reading and writing


def _yaml(indent: tuple[int, int, int] = (2, 4, 2), nulls: str = "") -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096  # never re-wrap long lines
    mapping, sequence, offset = indent
    y.indent(mapping=mapping, sequence=sequence, offset=offset)
    if nulls:  # the file writes "key: null" (ruamel would write "key:")
        y.representer.add_representer(
            type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", nulls))
    return y


# (mapping indent, sequence indent, dash offset); the first is the example proxy.yaml's style
_STYLES = [(2, 4, 2), (2, 2, 0), (4, 4, 2), (4, 4, 0), (4, 6, 4), (4, 8, 4), (2, 4, 0), (4, 2, 0), (3, 3, 1)]
_NULL = re.compile(r"^[^#\n]*:[ \t]+(null|~)[ \t]*(#.*)?$", re.M)


def _style(text: str) -> YAML:
    """A YAML instance that writes the text back as it was (indents as the file has them)."""
    if not text.strip():
        return _yaml()
    m = _NULL.search(text)
    nulls = m.group(1) if m else ""
    styles = list(_STYLES)
    try:
        _, ind, bsi = load_yaml_guess_indent(text)
    except Exception:  # noqa: BLE001 - the real load reports the problem
        return _yaml(nulls=nulls)
    if ind and bsi is not None:
        guessed = (2, max(ind, bsi + 2), bsi)
        styles[1:1] = [guessed, (ind, max(ind, bsi + 2), bsi), (bsi or 2, max(ind, bsi + 2), bsi)]
    elif ind:
        styles[1:1] = [(ind, ind + 2, ind)]
    for style in styles:
        y = _yaml(style, nulls)
        if _render(y, y.load(text)) == text:
            return y
    return _yaml(styles[1] if ind and bsi is not None else styles[0], nulls)


def _load(path: Path, create: bool = False) -> tuple[YAML, CommentedMap, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if not create:
            raise ConfigError(f"config file {str(path)!r} not found") from None
        text = ""
    except OSError as e:
        raise ConfigError(f"cannot read config file {str(path)!r}: {e.strerror}") from None
    y = _style(text)
    try:
        data = y.load(text)
    except Exception as e:  # noqa: BLE001 - ruamel raises several error types
        raise ConfigError(f"{path.name}: not valid YAML: {e}") from None
    if data is None:  # empty, or only comments: they stay at the top
        data = CommentedMap()
        if text.strip():
            data.yaml_set_start_comment("\n".join(ln.lstrip("#").removeprefix(" ") if ln.strip() else ""
                                                  for ln in text.rstrip("\n").splitlines()))
    if not isinstance(data, CommentedMap):
        raise ConfigError(f"{path.name}: the top level must be a mapping (server, providers, routing)")
    return y, data, text


def _providers(data: CommentedMap) -> tuple[CommentedSeq, str]:
    """The providers list (created when missing), and the comment lines that must follow it
    once it has entries (the lines that followed the key before it)."""
    seq, pending = data.get("providers"), ""
    if seq is None:
        seq = CommentedSeq()
        if "providers" in data:
            data["providers"] = seq  # "providers:" with no value: keep the key, its place and comments
        else:
            keys = list(data.keys())
            pos = keys.index("routing") if "routing" in keys else len(keys)
            if pos:  # the lines after the key before belong to what follows it
                pending = _pop_slot(*_descend(data, keys[pos - 1]))
                sep = pending[: len(pending) - len(pending.lstrip("\n"))]
                before_next = (data.ca.items.get(keys[pos]) or [None, None])[1] if pos < len(keys) else None
                if not sep and before_next and before_next[0].value.startswith("\n"):
                    sep = "\n"  # the next key is set off by a blank line: so is the new one
                _push_slot(*_descend(data, keys[pos - 1]), sep)
            data.insert(pos, "providers", seq)
    if not isinstance(seq, CommentedSeq):
        raise ConfigError(f"providers: must be a list, not {type(seq).__name__}")
    if seq.fa.flow_style():  # "providers: []" -> a block list, one entry per paragraph
        seq.fa.set_block_style()
    for i, entry in enumerate(seq):
        if not isinstance(entry, CommentedMap):
            raise ConfigError(f"providers[{i}]: must be a mapping")
    return seq, pending


def _index(seq: CommentedSeq, id: str) -> int:
    for i, entry in enumerate(seq):
        if str(entry.get("id")) == id:
            return i
    raise UnknownProvider(f"no provider with id {id!r}")


def _render(y: YAML, data: CommentedMap) -> str:
    out = io.StringIO()
    y.dump(data, out)
    return out.getvalue()


def _check(text: str, path: Path) -> None:
    parse_settings(text, path.name)  # raises ConfigError naming the field and line


def _write_atomic(path: Path, text: str) -> None:
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _edit(path: str | Path, change, create: bool = False) -> dict[str, Any]:
    """Read, change (a function of the providers list returning the entry), validate, write."""
    p = Path(path)
    with _LOCK:
        y, data, _ = _load(p, create)
        seq, pending = _providers(data)
        entry = change(seq)
        if pending and len(seq):
            _push_trailing(seq, pending)
        text = _render(y, data)
        _check(text, p)
        _write_atomic(p, text)
    return plain(entry) if entry is not None else {}


# ---------------------------------------------------------------- comments between entries


def _descend(coll: Any, key: Any) -> tuple[Any, Any]:
    """The slot whose comment holds the lines after coll[key] (inside it, for block collections)."""
    while True:
        child = coll[key]
        if isinstance(child, (CommentedMap, CommentedSeq)) and len(child) and not child.fa.flow_style():
            coll = child
            key = list(child.keys())[-1] if isinstance(child, CommentedMap) else len(child) - 1
            continue
        return coll, key


def _last_slot(node: Any) -> tuple[Any, Any] | None:
    """The slot whose comment holds the lines after `node`'s last value."""
    if not isinstance(node, (CommentedMap, CommentedSeq)) or not len(node):
        return None
    return _descend(node, list(node.keys())[-1] if isinstance(node, CommentedMap) else len(node) - 1)


def _token_pos(coll: Any) -> int:
    return 2 if isinstance(coll, CommentedMap) else 0


def _pop_slot(coll: Any, key: Any) -> str:
    """Take the full lines after the value in this slot, leaving its end-of-line comment."""
    item = coll.ca.items.get(key)
    pos = _token_pos(coll)
    if not item or item[pos] is None:
        return ""
    tok = item[pos]
    cut = tok.value.find("\n") + 1
    if cut <= 0:
        return ""
    tok.value, rest = tok.value[:cut], tok.value[cut:]
    if tok.value == "\n":
        item[pos] = None
        if not any(item):
            del coll.ca.items[key]
    return rest


def _push_slot(coll: Any, key: Any, rest: str) -> None:
    """Put full lines after the value in this slot (after its end-of-line comment, if any)."""
    if not rest:
        return
    pos = _token_pos(coll)
    item = coll.ca.items.setdefault(key, [None, None, None, None])
    tok = item[pos]
    if tok is None or not tok.value.strip():
        item[pos] = CommentToken("\n" + rest, CommentMark(0), None)
    else:
        tok.value = tok.value.rstrip("\n") + "\n" + rest


def _pop_trailing(node: Any) -> str:
    slot = _last_slot(node)
    return _pop_slot(*slot) if slot else ""


def _push_trailing(node: Any, rest: str) -> None:
    slot = _last_slot(node)
    if slot:
        _push_slot(*slot, rest)


# ---------------------------------------------------------------- values


_PLAIN_OK = re.compile(r"^[A-Za-z0-9_$][-A-Za-z0-9_.:/@+=~${}]*$")


def _text(value: str) -> str:
    """A new string for the file: quoted when the gateway's YAML 1.1 loader (PyYAML) would read
    it plain as something else (yes, on, 1_000, ...) or it has characters a plain scalar cannot
    carry safely; ruamel decides the rest."""
    if _PLAIN_OK.match(value) and _pyyaml_tag(value) == "tag:yaml.org,2002:str":
        return value
    return DoubleQuotedScalarString(value)


def _pyyaml_tag(value: str) -> str:
    import yaml

    return yaml.resolver.Resolver().resolve(yaml.ScalarNode, value, (True, False))


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _node(value: Any, like: Any = None) -> Any:
    """A plain value as ruamel nodes: short lists and mappings of scalars in flow style
    ([a, b], {connect: 5}), unless the value replaced was written in block style."""
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        m = CommentedMap((_text(str(k)), _node(v)) for k, v in value.items())
        flow = all(_scalar(v) for v in value.values())
        if isinstance(like, CommentedMap):
            flow = bool(like.fa.flow_style())
        (m.fa.set_flow_style if flow else m.fa.set_block_style)()
        return m
    if isinstance(value, (list, tuple)):
        s = CommentedSeq(_node(v) for v in value)
        flow = all(_scalar(v) for v in value)
        if isinstance(like, CommentedSeq):
            flow = bool(like.fa.flow_style())
        (s.fa.set_flow_style if flow else s.fa.set_block_style)()
        return s
    return value


def plain(node: Any) -> Any:
    """ruamel nodes -> plain dicts, lists and scalars (strings as written, ${VAR} included)."""
    if isinstance(node, dict):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


# ---------------------------------------------------------------- the edits


def add_provider(path: str | Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Append a provider entry (None values are left out). Creates `providers:` (and the file)
    when missing. Raises DuplicateProvider, or ConfigError when the result would not load."""
    if not isinstance(entry, dict):
        raise ConfigError("a provider entry must be a mapping")
    entry = {k: v for k, v in entry.items() if v is not None}

    def change(seq: CommentedSeq) -> CommentedMap:
        pid = entry.get("id")
        if pid is not None and any(e.get("id") == pid for e in seq):
            raise DuplicateProvider(f"a provider with id {pid!r} already exists")
        node = _node(entry)
        node.fa.set_block_style()
        if len(seq):
            # the lines after the last entry (say, commented-out examples) stay after the new one;
            # the new entry is set off by a blank line when the others are
            rest = _pop_trailing(seq[-1])
            lead = rest[: len(rest) - len(rest.lstrip("\n"))]
            _push_trailing(seq[-1], lead or ("\n" if _blank_separated(seq) else ""))
            seq.append(node)
            _push_trailing(node, rest)
        else:
            seq.append(node)
        return node

    return _edit(path, change, create=True)


def _blank_separated(seq: CommentedSeq) -> bool:
    """Are the existing entries separated by blank lines?"""
    for entry in list(seq)[:-1]:
        slot = _last_slot(entry)
        if slot is None:
            continue
        coll, key = slot
        item = coll.ca.items.get(key)
        tok = item[_token_pos(coll)] if item else None
        if tok is not None and "\n\n" in tok.value:
            return True
    return False


def update_provider(path: str | Path, id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """Change fields of a provider; a None value removes the field. Renaming (a new `id`) checks
    for duplicates. Raises UnknownProvider, DuplicateProvider or ConfigError."""
    if not isinstance(changes, dict):
        raise ConfigError("changes must be a mapping")

    def change(seq: CommentedSeq) -> CommentedMap:
        i = _index(seq, id)
        entry = seq[i]
        new_id = changes.get("id", id)
        if new_id != id and any(e.get("id") == new_id for e in seq):
            raise DuplicateProvider(f"a provider with id {new_id!r} already exists")
        rest = _pop_trailing(entry)
        for key, value in changes.items():
            if value is None:
                entry.pop(key, None)
                entry.ca.items.pop(key, None)
            else:
                entry[key] = _node(value, entry.get(key))
        _push_trailing(entry, rest)
        return entry

    return _edit(path, change)


def set_enabled(path: str | Path, id: str, enabled: bool) -> dict[str, Any]:
    """Enable or disable a provider (`enabled: false`; enabling sets an existing `enabled:` to
    true, or leaves it out: true is the default)."""

    def change(seq: CommentedSeq) -> CommentedMap:
        entry = seq[_index(seq, id)]
        if enabled and "enabled" not in entry:
            return entry
        if "enabled" in entry:
            entry["enabled"] = bool(enabled)
        else:
            rest = _pop_trailing(entry)
            entry["enabled"] = False
            _push_trailing(entry, rest)
        return entry

    return _edit(path, change)


def remove_provider(path: str | Path, id: str) -> dict[str, Any]:
    """Remove a provider entry, and the comment lines directly above it (a comment separated
    from it by a blank line stays, as does one above the first entry of the list: either may
    be about the list as a whole). Returns the removed entry. Raises UnknownProvider."""
    removed: dict[str, Any] = {}

    def change(seq: CommentedSeq) -> None:
        i = _index(seq, id)
        rest = _pop_trailing(seq[i])
        if i > 0:
            above = _pop_trailing(seq[i - 1]).splitlines(keepends=True)
            while above and above[-1].strip():  # the comment directly above the removed entry
                above.pop()
            if rest.startswith("\n") or not rest or not any(ln.strip() for ln in above):
                while above and not above[-1].strip():
                    above.pop()
            _push_trailing(seq[i - 1], "".join(above) + rest)
        elif rest.strip() and len(seq) > 1:
            _prepend_to_list(seq, rest)  # the comment above the second entry stays above it
        removed.update(plain(seq[i]))
        del seq[i]

    _edit(path, change)
    return removed


def _prepend_to_list(seq: CommentedSeq, text: str) -> None:
    """Add comment lines to those above the first entry of a list."""
    toks: list[CommentToken] = []
    for line in text.splitlines(keepends=True):
        if line.strip():
            col = len(line) - len(line.lstrip(" "))
            toks.append(CommentToken(line.lstrip(" "), CommentMark(col), None))
        elif toks:
            toks[-1].value += "\n"
    if not toks:
        return
    if seq.ca.comment is None:
        seq.ca.comment = [None, toks]
    elif seq.ca.comment[1] is None:
        seq.ca.comment[1] = toks
    else:
        seq.ca.comment[1].extend(toks)  # in place: the parent mapping shares this list


# ---------------------------------------------------------------- edits from the admin API


def env_references(value: Any, field: str = "") -> list[str]:
    """The fields (dotted, [i] for list items) whose strings hold "${": an environment reference
    that the gateway would expand when it loads the file."""
    if isinstance(value, str):
        return [field] if "${" in value else []
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in env_references(v, f"{field}.{k}" if field else str(k))]
    if isinstance(value, list):
        return [f for i, v in enumerate(value) for f in env_references(v, f"{field}[{i}]")]
    return []


SECRET_FIELDS = ("api_key", "headers", "credentials")  # what a provider entry sends to its hosts
_HOST_FIELDS = ("base_url", "fallback_urls", "token_url")
_PORTS = {"http": 80, "https": 443}


def _hosts(entry: dict[str, Any]) -> set[tuple | None]:
    """The origins a provider's requests go to (None: its type's default)."""
    urls = [entry.get("base_url"), entry.get("token_url"), *(entry.get("fallback_urls") or [])]
    out: set[tuple | None] = set()
    for u in urls:
        try:
            parts = urlsplit(u) if isinstance(u, str) else None
            out.add((parts.scheme, parts.hostname, parts.port or _PORTS.get(parts.scheme)) if parts else None)
        except ValueError:
            out.add((u,))
    return out


def secrets_left_behind(current: dict[str, Any], changes: dict[str, Any]) -> list[str]:
    """The secret fields of `current` that `changes` would send to a host they were not written
    for: those the changes do not set themselves (empty when no new host appears)."""
    if not any(k in changes for k in _HOST_FIELDS):
        return []
    changed = {**current, **changes}
    if _hosts(changed) <= _hosts(current):
        return []
    return [f for f in SECRET_FIELDS if current.get(f) and f not in changes]


def field_of_other_kind(current: dict[str, Any], changes: dict[str, Any]) -> str | None:
    """A field the changed entry would hold that its type does not take, when the stored entry is
    half the cause: a stored field under a new type, or a new field under the stored type (both in
    the change: the change itself is wrong, and parse_settings says so)."""
    merged = {k: v for k, v in {**current, **changes}.items() if v is not None}
    kind = PROVIDER_TYPES.get(merged["type"]) if isinstance(merged.get("type"), str) else None
    if kind is None:
        return None
    return next((f for f in KIND_FIELDS if f in merged and f not in kind.config_fields
                 and not (f in changes and "type" in changes)), None)


# ---------------------------------------------------------------- reading


def read_config(path: str | Path) -> dict[str, Any]:
    """The whole file as plain data, ${VAR} not interpolated."""
    _, data, _ = _load(Path(path))
    return plain(data)


def list_providers(path: str | Path) -> list[dict[str, Any]]:
    providers = read_config(path).get("providers") or []
    return [p for p in providers if isinstance(p, dict)]


def get_provider(path: str | Path, id: str) -> dict[str, Any]:
    for p in list_providers(path):
        if p.get("id") == id:
            return p
    raise UnknownProvider(f"no provider with id {id!r}")


# ---------------------------------------------------------------- routing: default provider, model names


class UnknownModel(ValueError):
    """No model name (routing.aliases entry) with that name in the file."""


class DuplicateModel(ValueError):
    """add_model with a name the file defines already."""


class LastTarget(ValueError):
    """Unlinking a model's only target (a model name needs one: remove it instead)."""


def _edit_routing(path: str | Path, change) -> Any:
    """Read, change `routing:` (created when missing), validate, write; returns what change returns."""
    p = Path(path)
    with _LOCK:
        y, data, _ = _load(p)
        routing = data.get("routing")
        if routing is None:
            rest = _pop_trailing(data)
            data["routing"] = routing = CommentedMap()
            _push_trailing(data, rest)
        if not isinstance(routing, CommentedMap):
            raise ConfigError(f"routing: must be a mapping, not {type(routing).__name__}")
        out = change(routing)
        _check(_render(y, data), p)
        _write_atomic(p, _render(y, data))
    return out


def _set_key(m: CommentedMap, key: str, value: Any) -> None:
    """Set or add a key; a new one goes last, the comment lines after the mapping staying after it."""
    if key in m:
        m[key] = _node(value, m[key])
        return
    rest = _pop_trailing(m)
    m[_text(key)] = _node(value)
    _push_trailing(m, rest)


def _drop_key(m: CommentedMap, key: str) -> None:
    """Remove a key; the comment lines after its value stay (they belong to what follows)."""
    keys = list(m.keys())
    i = keys.index(key)
    rest = _pop_trailing(m) if i == len(keys) - 1 else ""
    del m[key]
    if rest and len(m):
        _push_trailing(m, rest)


def set_default(path: str | Path, provider: str | None) -> str | None:
    """Set routing.default (None removes it). ConfigError when no provider has that id."""

    def change(routing: CommentedMap) -> str | None:
        if provider is None:
            if "default" in routing:
                _drop_key(routing, "default")
        else:
            _set_key(routing, "default", provider)
        return provider

    return _edit_routing(path, change)


def _aliases(routing: CommentedMap) -> CommentedMap:
    aliases = routing.get("aliases")
    if aliases is None:
        return CommentedMap()
    if not isinstance(aliases, CommentedMap):
        raise ConfigError(f"routing.aliases: must be a mapping, not {type(aliases).__name__}")
    return aliases


def _targets(value: Any) -> list[str]:
    return [str(value)] if isinstance(value, str) else [str(t) for t in value or []]


def add_model(path: str | Path, name: str, targets: list[str]) -> dict[str, Any]:
    """Define a model name routed to targets ("provider/model", or a model name)."""

    def change(routing: CommentedMap) -> dict[str, Any]:
        aliases = _aliases(routing)
        if name in aliases:
            raise DuplicateModel(f"a model named {name!r} already exists")
        if "aliases" in routing:
            _set_key(aliases, name, list(targets))
        else:  # created with its first entry: an empty mapping would take the comment lines after it
            _set_key(routing, "aliases", {name: list(targets)})
        return {"name": name, "targets": list(targets)}

    return _edit_routing(path, change)


def _change_targets(path: str | Path, name: str, edit) -> dict[str, Any]:
    def change(routing: CommentedMap) -> dict[str, Any]:
        aliases = _aliases(routing)
        if name not in aliases:
            raise UnknownModel(f"no model named {name!r}")
        targets = edit(_targets(aliases[name]))
        aliases[name] = _node(targets, aliases[name] if isinstance(aliases[name], list) else None)
        return {"name": name, "targets": targets}

    return _edit_routing(path, change)


def link_model(path: str | Path, name: str, target: str) -> dict[str, Any]:
    """Add a target to a model name (already linked: unchanged)."""
    return _change_targets(path, name, lambda ts: ts if target in ts else [*ts, target])


def unlink_model(path: str | Path, name: str, target: str) -> dict[str, Any]:
    """Take a target from a model name. UnknownModel when the target is not linked either;
    LastTarget for its only one."""

    def edit(ts: list[str]) -> list[str]:
        if target not in ts:
            raise UnknownModel(f"model {name!r} is not linked to {target!r}")
        if ts == [target]:
            raise LastTarget(f"{target!r} is the only target of model {name!r}: remove the model instead")
        return [t for t in ts if t != target]

    return _change_targets(path, name, edit)


def remove_model(path: str | Path, name: str) -> dict[str, Any]:
    """Remove a model name (its routing.aliases entry)."""

    def change(routing: CommentedMap) -> dict[str, Any]:
        aliases = _aliases(routing)
        if name not in aliases:
            raise UnknownModel(f"no model named {name!r}")
        removed = {"name": name, "targets": _targets(aliases[name])}
        _drop_key(aliases, name)
        if not len(aliases):
            _drop_key(routing, "aliases")
        return removed

    return _edit_routing(path, change)
