"""Tool-call ids an upstream repeats across turns (call_0, call_1, ... per answer) are made
unique before the client sees them: Claude Code keys calls by id and dropped the repeat."""

from converters import call_ids
from converters import canonical as cn
from llmgate.request_path.wire import fresh_call_ids


def test_a_repeated_id_gets_a_new_one_and_fresh_ids_are_kept():
    answer = [cn.Text("x"), cn.ToolCall("call_0_Write", "Write", "{}"), cn.ToolCall("call_1_Write", "Write", "{}")]
    taken = {"call_0_Write"}
    fresh_call_ids(answer, taken)
    assert answer[1].id not in ("call_0_Write", "call_1_Write") and answer[2].id == "call_1_Write"
    assert taken == {"call_0_Write", answer[1].id, "call_1_Write"}


def test_repeats_within_one_answer_and_signatures_survive():
    signed = call_ids.new_call_id("AAAA")
    answer = [cn.ToolCall(signed, "f", "{}"), cn.ToolCall(signed, "f", "{}")]
    fresh_call_ids(answer, set())
    assert answer[0].id == signed and answer[1].id != signed
    assert call_ids.signature_of(answer[1].id) == "AAAA"
