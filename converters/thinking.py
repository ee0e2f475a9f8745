"""Thinking budgets and effort levels, fitted to what the target model accepts (pure, no I/O).

Clients ask for reasoning in their own terms: Claude Code always sends budget_tokens 31999,
Codex an effort, Gemini clients a budget or a level. Each target takes only its own: Gemini
2.5 budgets in a per-model range (2.5-pro cannot be 0), Gemini 3 a thinkingLevel, Anthropic a
budget of at least 1024 (below max_tokens: the Anthropic encoder raises max_tokens), OpenAI
reasoning models an effort. `limits(wire, model)` is the table; a provider's proxy.yaml
`thinking:` entry overrides fields of it (`override`); `fit` maps a request's reasoning into it.

The common scale: effort low / medium / high ~ budgets 1024 / 8192 / 24576 tokens; none and
minimal ~ 0 (off where the target can turn thinking off, else its least).

Model families also decide which sampling parameters a target refuses (`openai_refuses_sampling`,
`anthropic_one_sampler`): the encoders drop those and name them in req.dropped.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from converters import canonical as cn

ORDER = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
EFFORT_BUDGET = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768, "max": 32768}
_EFFORT_OF_BUDGET = ((0, "minimal"), (1024, "low"), (8192, "medium"))  # budget upper bounds -> effort


@dataclass(frozen=True, slots=True)
class Limits:
    """What one model takes: budgets in [min_budget, max_budget] (0 too when can_disable),
    or one of `levels` (style "level": Gemini thinkingLevel; "effort": OpenAI reasoning_effort)."""

    style: Literal["budget", "level", "effort"] = "budget"
    min_budget: int | None = None
    max_budget: int | None = None
    can_disable: bool = True
    levels: tuple[str, ...] = ()


OPENAI_EFFORTS = Limits("effort", levels=("minimal", "low", "medium", "high"))


def limits(wire: str, model: str) -> Limits:
    """The table: per wire format, per model family."""
    m = model.lower().rsplit("/", 1)[-1]
    if wire in ("gemini", "code_assist") and m.startswith("gemini-"):
        if m.startswith("gemini-3"):
            flash = "flash" in m
            return Limits("level", levels=("minimal", "low", "medium", "high") if flash else ("low", "high"))
        if m.startswith("gemini-2.5-flash-lite"):
            return Limits(min_budget=512, max_budget=24576)
        if m.startswith("gemini-2.5-flash"):
            return Limits(min_budget=1, max_budget=24576)
        if m.startswith("gemini-2.5-pro"):
            return Limits(min_budget=128, max_budget=32768, can_disable=False)
        return Limits()
    if wire == "anthropic":
        return Limits(min_budget=1024)
    if wire in ("openai_chat", "responses"):
        return OPENAI_EFFORTS
    return Limits()


# OpenAI reasoning models: o-series and the GPT-5 family, except the non-reasoning chat ones
_OPENAI_REASONING = re.compile(r"(o\d+|gpt-5)([.-]|$)")
_GPT5_0 = re.compile(r"gpt-5(-|$)")  # gpt-5, -mini, -nano, -codex: never sampling parameters
_CLAUDE_VERSION = re.compile(r"claude-(?:[a-z]+-)?(\d+)(?:[-.](\d)(?!\d))?")
OPENAI_SAMPLING = ("temperature", "top_p", "presence_penalty", "frequency_penalty")


def _name(model: str) -> str:
    return model.lower().rsplit("/", 1)[-1]


def openai_refuses_sampling(model: str, effort: str | None) -> bool:
    """OpenAI reasoning models answer 400 "Unsupported parameter" to OPENAI_SAMPLING; GPT-5.1 and
    later (but their codex models) take them only while not reasoning (effort none, their default)."""
    m = _name(model)
    if not _OPENAI_REASONING.match(m) or "-chat" in m:
        return False
    if m.startswith("gpt-5") and not _GPT5_0.match(m) and "codex" not in m:
        return effort not in (None, "none")
    return True


def anthropic_one_sampler(model: str) -> bool:
    """Claude Opus 4.1 and every Claude from 4.5 on refuse temperature and top_p together
    ("cannot both be specified for this model"); Claude 3.x, Sonnet 4 and Opus 4 take both.
    Names that are not Claude's (Anthropic-compatible servers) are left alone."""
    found = _CLAUDE_VERSION.search(_name(model))
    return found is not None and (int(found.group(1)), int(found.group(2) or 0)) >= (4, 1)


def override(base: Limits, model: str, table: dict[str, dict[str, Any]] | None) -> Limits:
    """A provider's proxy.yaml `thinking:` map (model name or glob -> fields) applied to `base`:
    the first entry whose key matches the model. Levels given for a budget model make it a level one."""
    for pattern, fields in (table or {}).items():
        if fnmatch.fnmatchcase(model, pattern):
            fields = {k: tuple(v) if k == "levels" else v for k, v in fields.items() if v is not None}
            if fields.get("levels") and base.style == "budget":
                fields["style"] = "level"
            return replace(base, **fields)
    return base


def effort_of(budget: int) -> str:
    return next((e for bound, e in _EFFORT_OF_BUDGET if budget <= bound), "high")


def _snap(level: str, levels: tuple[str, ...]) -> str:
    """The accepted level nearest to `level` on the common order (ties go up: never think less
    than a close neighbour allows)."""
    if level in levels or not levels:
        return level
    at = ORDER.index(level) if level in ORDER else ORDER.index("medium")
    return min(levels, key=lambda lv: (abs((ORDER.index(lv) if lv in ORDER else 3) - at),
                                       -(ORDER.index(lv) if lv in ORDER else 3)))


def fit(r: cn.Reasoning | None, lim: Limits) -> cn.Reasoning | None:
    """`r` in the target's own terms: a budget inside its range, or one of its levels.
    A request with neither budget nor effort (thoughts asked for, model's default depth) is kept."""
    if r is None:
        return None
    asked = r.level or r.effort
    if r.budget_tokens is None and asked is None:
        return r
    if lim.style in ("level", "effort"):
        level = asked if asked is not None else effort_of(r.budget_tokens or 0)
        level = _snap(level, lim.levels)
        if lim.style == "level":
            return cn.Reasoning(level=level, include_thoughts=r.include_thoughts)
        return cn.Reasoning(effort=level, include_thoughts=r.include_thoughts)
    if r.budget_tokens is None and asked not in EFFORT_BUDGET:
        raise cn.ConversionError(f"Unknown reasoning effort {asked!r}.", "reasoning_effort")
    budget = r.budget_tokens if r.budget_tokens is not None else EFFORT_BUDGET[str(asked)]
    if budget < 0:  # Gemini's dynamic budget: the model decides
        return cn.Reasoning(include_thoughts=r.include_thoughts)
    if budget == 0 and lim.can_disable:
        return cn.Reasoning(budget_tokens=0, include_thoughts=r.include_thoughts)
    if lim.min_budget is not None:
        budget = max(budget, lim.min_budget)
    if lim.max_budget is not None:
        budget = min(budget, lim.max_budget)
    return cn.Reasoning(budget_tokens=budget, include_thoughts=r.include_thoughts)
