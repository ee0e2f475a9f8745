"""Reasoning budgets and levels fitted to each target model (issue 13, defect 2)."""

import pytest

from converters import anthropic, gemini, openai_chat, responses
from converters import canonical as cn
from converters.thinking import Limits, fit, limits, override

CLAUDE_CODE = cn.Reasoning(budget_tokens=31999)


@pytest.mark.parametrize("model, budget", [
    ("gemini-2.5-flash", 24576), ("gemini-2.5-flash-lite", 24576), ("gemini-2.5-pro", 31999),
    ("models/gemini-2.5-pro-preview", 31999)])
def test_claude_codes_budget_fits_each_gemini_25_range(model, budget):
    assert fit(CLAUDE_CODE, limits("gemini", model)).budget_tokens == budget


@pytest.mark.parametrize("model, asked, budget", [
    ("gemini-2.5-pro", 0, 128), ("gemini-2.5-pro", 50, 128), ("gemini-2.5-flash", 0, 0),
    ("gemini-2.5-flash-lite", 100, 512), ("gemini-2.5-flash-lite", 0, 0), ("gemini-2.5-pro", 40000, 32768)])
def test_budgets_below_or_above_a_range(model, asked, budget):
    assert fit(cn.Reasoning(budget_tokens=asked), limits("gemini", model)).budget_tokens == budget


@pytest.mark.parametrize("model, r, level", [
    ("gemini-3-pro-preview", CLAUDE_CODE, "high"), ("gemini-3-pro-preview", cn.Reasoning(effort="minimal"), "low"),
    ("gemini-3-pro-preview", cn.Reasoning(effort="medium"), "high"),
    ("gemini-3-flash-preview", cn.Reasoning(effort="medium"), "medium"),
    ("gemini-3-flash-preview", cn.Reasoning(budget_tokens=0), "minimal"),
    ("gemini-3-flash-preview", cn.Reasoning(budget_tokens=2000), "medium")])
def test_gemini_3_takes_levels(model, r, level):
    fitted = fit(r, limits("gemini", model))
    assert (fitted.level, fitted.budget_tokens) == (level, None)
    req = cn.Request(model=model, messages=[cn.Message("user", [cn.Text("hi")])], reasoning=fitted)
    assert gemini.encode_request(req)["generationConfig"]["thinkingConfig"]["thinkingLevel"] == level


def test_effort_to_anthropic_budget_stays_below_max_tokens():
    fitted = fit(cn.Reasoning(effort="high"), limits("anthropic", "claude-sonnet-4-5"))
    body = anthropic.encode_request(cn.Request(model="claude-sonnet-4-5", messages=[
        cn.Message("user", [cn.Text("hi")])], reasoning=fitted, max_tokens=1000))
    assert body["thinking"]["budget_tokens"] == 24576 and body["max_tokens"] > 24576
    assert fit(cn.Reasoning(budget_tokens=10), limits("anthropic", "claude-x")).budget_tokens == 1024


@pytest.mark.parametrize("budget, effort", [(0, "minimal"), (512, "low"), (8192, "medium"), (31999, "high")])
def test_budgets_become_openai_efforts(budget, effort):
    fitted = fit(cn.Reasoning(budget_tokens=budget), limits("openai_chat", "gpt-5"))
    body = openai_chat.encode_request(cn.Request(model="gpt-5", messages=[], reasoning=fitted))
    assert body["reasoning_effort"] == effort
    assert responses.encode_request(cn.Request(model="gpt-5", messages=[], reasoning=fitted))["reasoning"]["effort"] \
        == effort


def test_gemini_dynamic_budget_and_default_depth_are_kept():
    assert fit(cn.Reasoning(budget_tokens=-1), limits("gemini", "gemini-2.5-pro")).budget_tokens is None
    bare = cn.Reasoning(include_thoughts=True)
    assert fit(bare, limits("anthropic", "claude")) is bare


def test_provider_override_per_model_glob():
    table = {"gemini-2.5-flash*": {"max_budget": 8192, "min_budget": None, "levels": None, "can_disable": None},
             "my-gemini-3": {"levels": ["low", "high"], "min_budget": None, "max_budget": None, "can_disable": None}}
    lim = override(limits("gemini", "gemini-2.5-flash"), "gemini-2.5-flash", table)
    assert fit(CLAUDE_CODE, lim).budget_tokens == 8192
    custom = override(Limits(), "my-gemini-3", table)
    assert fit(cn.Reasoning(effort="medium"), custom).level == "high"


def test_unknown_effort_for_a_budget_target_is_a_conversion_error():
    with pytest.raises(cn.ConversionError):
        fit(cn.Reasoning(effort="ludicrous"), limits("gemini", "gemini-2.5-flash"))
