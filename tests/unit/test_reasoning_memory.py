from converters import canonical as cn
from llmgate.request_path.wire import ReasoningMemory


def turn(call_id, *thinking):
    return cn.Message("assistant", [*thinking, cn.ToolCall(call_id, "f", "{}")])


def test_restores_signed_thinking_in_place_of_unsigned():
    mem = ReasoningMemory()
    signed = cn.Thinking("deep thought", "sig")
    mem.remember([signed, cn.Text("x"), cn.ToolCall("toolu_1", "f", "{}")])
    req = cn.Request("m", [cn.Message("user", [cn.Text("q")]), turn("toolu_1", cn.Thinking("deep thought"))])
    mem.restore(req)
    assert req.messages[1].content[0] is signed and len(req.messages[1].content) == 2


def test_keeps_what_the_client_sent_signed_and_ignores_unknown_ids():
    mem = ReasoningMemory()
    mem.remember([cn.Thinking("a", "s1"), cn.ToolCall("toolu_1", "f", "{}")])
    own = cn.Thinking("b", "s2")
    req = cn.Request("m", [turn("toolu_1", own), turn("toolu_2")])
    mem.restore(req)
    assert req.messages[0].content[0] is own and len(req.messages[1].content) == 1


def test_unsigned_thinking_and_answers_without_calls_are_not_kept():
    mem = ReasoningMemory()
    mem.remember([cn.Thinking("a"), cn.ToolCall("toolu_1", "f", "{}")])
    mem.remember([cn.Thinking("b", "s"), cn.Text("no call")])
    req = cn.Request("m", [turn("toolu_1")])
    mem.restore(req)
    assert len(req.messages[0].content) == 1


def test_bounded():
    mem = ReasoningMemory(size=3)
    for i in range(5):
        mem.remember([cn.RedactedThinking(f"r{i}"), cn.ToolCall(f"toolu_{i}", "f", "{}")])
    req = cn.Request("m", [turn(f"toolu_{i}") for i in range(5)])
    mem.restore(req)
    assert [len(m.content) for m in req.messages] == [1, 1, 2, 2, 2]
