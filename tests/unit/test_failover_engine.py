"""The failover engine with an injected clock: which member a request tries, in which order,
and the error when none serves. Cooldowns come from the real PoolState and failover.cool_down
on the same clock, so what tests/e2e/test_pools.py once checked with sleeps runs here in ms."""

from __future__ import annotations

import pytest

from llmgate.errors import GatewayError
from llmgate.request_path.failover import cool_down
from llmgate.request_path.failover_engine import Failover, member_state
from llmgate.request_path.pool import PoolState
from llmgate.request_path.routing import Route
from llmgate.settings import ProviderSettings

T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def route(pid: str, model: str = "m", **extra) -> Route:
    return Route(ProviderSettings(id=pid, type="openai", base_url=f"http://{pid}.invalid/v1", **extra), model, "alias")


def err(status: int, code: str = "upstream_error", retry_after: str | None = None) -> GatewayError:
    text = {429: "Rate limited", 500: "Server error", 502: "Bad gateway", 504: "Timeout"}.get(status, "Error")
    return GatewayError(status, f"{text} failed.", code=code, headers={"Retry-After": retry_after} if retry_after else {})


class World:
    """A pool of members on a fake clock; `request` runs one request the way the front door does:
    ask the engine, let the member answer (a scripted failure or success), cool it, go on."""

    def __init__(self, max_attempts: int = 10, deadline: float = 60.0) -> None:
        self.clock = Clock()
        self.pool = PoolState(clock=self.clock)
        self.max_attempts, self.deadline = max_attempts, deadline
        self.script: dict[tuple[str, str], list[GatewayError | None]] = {}  # member -> its next answers
        self.asked: list[tuple[str, bool]] = []  # (provider/model, probe) in order
        self.busy: set[str] = set()

    def fail(self, r: Route, *errors: GatewayError) -> None:
        self.script.setdefault((r.provider.id, r.model), []).extend(errors)

    def state(self, r: Route):
        if r.provider.id in self.busy:
            return None  # at its concurrency limit
        return member_state(self.pool, r, None)

    def request(self, order: list[Route], model: str = "m", take: float = 0.0) -> Route:
        """The member that served; raises the client's error. take: seconds each attempt lasts."""
        engine = Failover(model, order, self.state, self.clock, self.max_attempts, self.deadline)
        while (a := engine.next()) is not None:
            r = a.route
            self.asked.append((f"{r.provider.id}/{r.model}", a.probe))
            self.clock.advance(take)
            answers = self.script.get((r.provider.id, r.model))
            e = answers.pop(0) if answers else None
            if e is None:
                self.pool.success(r.provider.id, "", r.model)
                return r
            if not engine.failed(a, "", e):
                raise e
            cool_down(self.pool, r, "", e)
        raise engine.error()

    def served(self, order: list[Route], **kw) -> str:
        r = self.request(order, **kw)
        return f"{r.provider.id}/{r.model}"


A, B, C = route("a"), route("b"), route("c")


def test_the_first_open_member_serves():
    w = World()
    assert w.served([A, B]) == "a/m"
    assert w.asked == [("a/m", False)]


def test_429_fails_over_and_the_member_returns_when_retry_after_ends():
    w = World()
    w.fail(A, err(429, "rate_limit_exceeded", "2"))
    assert w.served([A, B]) == "b/m"
    for _ in range(5):  # a is first, but cooling: b serves, a is not asked
        assert w.served([A, B]) == "b/m"
    assert [m for m, _ in w.asked] == ["a/m", "b/m"] + ["b/m"] * 5
    w.clock.advance(1.9)
    assert w.served([A, B]) == "b/m"
    w.clock.advance(0.2)  # past Retry-After: a is asked again, and answers
    assert w.served([A, B]) == "a/m"


@pytest.mark.parametrize("status, code", [(500, "upstream_error"), (502, "upstream_error"), (503, "upstream_error"),
                                          (504, "upstream_timeout"), (502, "upstream_unreachable"), (529, "overloaded")])
def test_failures_before_the_first_byte_fail_over(status, code):
    w = World()
    w.fail(A, err(status, code))
    assert w.served([A, B]) == "b/m"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_an_error_that_would_fail_everywhere_is_answered_as_it_is(status):
    w = World()
    w.fail(A, err(status))
    with pytest.raises(GatewayError) as e:
        w.request([A, B])
    assert e.value.status == status and e.value.code == "upstream_error"
    assert w.asked == [("a/m", False)]


def test_an_unreachable_host_cools_the_whole_entry_and_its_other_models():
    w = World()
    dead_m, dead_other = route("dead", "m"), route("dead", "other")
    w.fail(dead_m, err(502, "upstream_unreachable"))
    assert w.served([dead_m, B]) == "b/m"
    assert w.served([dead_other, B]) == "b/m"  # another model of the same entry: not asked
    assert w.served([dead_m, B]) == "b/m"
    assert [m for m, _ in w.asked] == ["dead/m", "b/m", "b/m", "b/m"]


def test_member_state_is_read_when_the_member_comes_up():
    """A member that cools its whole entry keeps that entry's next member out of the same request."""
    w = World()
    dead_m, dead_other = route("dead", "m"), route("dead", "other")
    w.fail(dead_m, err(502, "upstream_unreachable"))
    assert w.served([dead_m, dead_other, B]) == "b/m"
    assert [m for m, _ in w.asked] == ["dead/m", "b/m"]


def test_a_spent_quota_cools_every_model_of_the_account():
    w = World()
    w.fail(A, err(429, "quota_exhausted"))
    assert w.served([A, B]) == "b/m"
    assert w.served([route("a", "other"), B]) == "b/m"
    assert [m for m, _ in w.asked] == ["a/m", "b/m", "b/m"]


def test_exponential_backoff_then_probe():
    w = World()
    w.fail(A, err(500), err(500), err(500))
    assert w.served([A, B]) == "b/m"  # a fails: cools 1 s
    assert w.served([A, B]) == "b/m"
    w.clock.advance(1.1)
    assert w.served([A, B]) == "b/m"  # the probe after 1 s: a fails again, cools 2 s
    w.clock.advance(1.9)
    assert w.served([A, B]) == "b/m"
    assert [m for m, _ in w.asked].count("a/m") == 2, "a asked again before its 2 s backoff ended"
    w.clock.advance(0.2)
    assert w.served([A, B]) == "b/m"  # a's third failure: 4 s now
    assert w.pool.cooling("a", "", "m").until == pytest.approx(w.clock() + 4)
    w.clock.advance(4.1)
    assert w.served([A, B]) == "a/m"  # and once it answers, its record is cleared
    assert w.pool.cooling("a", "", "m") is None and ("a", "", "m") not in w.pool.cooldowns


def test_backoff_is_capped_at_five_minutes():
    w = World()
    for _ in range(12):
        w.pool.cool("a", "", "m", None, "500: x")
    assert w.pool.cooling("a", "", "m").until == pytest.approx(w.clock() + 300)


def test_a_one_member_pool_returns_its_own_error():
    w = World()
    w.fail(A, err(500))
    with pytest.raises(GatewayError) as e:
        w.request([A])
    assert (e.value.status, e.value.code, e.value.message) == (500, "upstream_error", "Server error failed.")


def test_last_resort_member_backing_off_is_tried_when_nobody_else_can_serve():
    w = World()
    w.fail(A, err(500))
    with pytest.raises(GatewayError):
        w.request([A])
    assert w.served([A]) == "a/m"  # backing off, but nobody else can serve: tried anyway
    assert w.asked == [("a/m", False), ("a/m", True)]


def test_a_failing_last_resort_returns_its_own_error():
    w = World()
    w.fail(A, err(500), err(502))
    with pytest.raises(GatewayError):
        w.request([A])
    with pytest.raises(GatewayError) as e:
        w.request([A])
    assert e.value.status == 502 and e.value.code == "upstream_error"
    assert w.asked[-1] == ("a/m", True)


def test_the_probe_is_the_member_whose_backoff_ends_first():
    w = World()
    w.pool.cool("a", "", "m", 5, "500: x")
    w.pool.cool("b", "", "m", 2, "503: y")
    w.pool.cool("c", "", "m", 1, "429: rate limited")  # a rate limit is never probed
    assert w.served([A, B, C]) == "b/m"
    assert w.asked == [("b/m", True)]


def test_no_probe_when_a_member_failed_in_this_request():
    w = World()
    w.pool.cool("b", "", "m", 5, "500: x")
    w.fail(A, err(500))
    with pytest.raises(GatewayError) as e:
        w.request([A, B])
    assert e.value.code == "pool_exhausted" and e.value.status == 500
    assert "a/m: 500 Server error failed" in e.value.message
    assert "b/m: cooling down for 5 s more (500: x)" in e.value.message
    assert w.asked == [("a/m", False)]


def test_never_before_a_rate_limit_ends_429_with_retry_after():
    w = World()
    w.fail(A, err(429, "rate_limit_exceeded", "30"))
    with pytest.raises(GatewayError) as e:
        w.request([A])
    assert (e.value.status, e.value.code, e.value.headers) == (429, "rate_limit_exceeded", {"Retry-After": "30"})
    w.clock.advance(1.5)
    with pytest.raises(GatewayError) as e:
        w.request([A])
    assert (e.value.status, e.value.code) == (429, "pool_exhausted")
    assert e.value.headers == {"Retry-After": "28"}  # 28.5 s left, rounded
    assert "a/m: cooling down for 28 s more (429: Rate limited failed)" in e.value.message
    assert len(w.asked) == 1  # the rate-limited member was not asked
    w.pool.reset("a")  # the operator ends it early
    assert w.served([A]) == "a/m"


def test_every_member_cooling_for_rate_limits_is_429_with_the_earliest_retry_after():
    w = World()
    w.fail(A, err(429, "rate_limit_exceeded", "7"))
    w.fail(B, err(429, "rate_limit_exceeded", "9"))
    with pytest.raises(GatewayError) as e:
        w.request([A, B])
    assert (e.value.status, e.value.code, e.value.headers) == (429, "pool_exhausted", {"Retry-After": "7"})
    assert "a/m: 429" in e.value.message and "b/m: 429" in e.value.message
    w.clock.advance(3)
    with pytest.raises(GatewayError) as e:
        w.request([A, B])
    assert (e.value.status, e.value.headers) == (429, {"Retry-After": "4"})
    assert "a/m: cooling down for 4 s more" in e.value.message and "b/m: cooling down for 6 s more" in e.value.message
    assert len(w.asked) == 2


def test_a_backoff_among_the_coolings_is_not_a_pure_rate_limit():
    w = World()
    w.pool.cool("a", "", "m", 10, "429: slow down")
    w.fail(B, err(503))
    with pytest.raises(GatewayError) as e:
        w.request([A, B])
    assert (e.value.status, e.value.code) == (503, "pool_exhausted")
    assert e.value.headers == {"Retry-After": "10"}


def test_a_busy_member_is_skipped_and_named():
    w = World()
    w.busy.add("a")
    assert w.served([A, B]) == "b/m"
    with pytest.raises(GatewayError) as e:
        w.request([A])
    assert (e.value.status, e.value.code) == (503, "pool_exhausted")
    assert "a/m: at its concurrency limit" in e.value.message and e.value.headers == {}


def test_max_concurrency_counts_in_flight_requests():
    w = World()
    lim = route("lim", max_concurrency=1)
    slot = w.pool.acquire("lim", "")
    assert member_state(w.pool, lim, None) is None
    assert w.served([lim, B]) == "b/m"
    w.pool.release(slot)
    assert member_state(w.pool, lim, None) is True
    assert w.served([lim, B]) == "lim/m"


def test_max_attempts_bounds_upstream_attempts():
    w = World(max_attempts=2)
    members = [route(f"p{i}") for i in range(1, 5)]
    for r in members:
        w.fail(r, err(500))
    with pytest.raises(GatewayError) as e:
        w.request(members)
    assert (e.value.status, e.value.code) == (500, "pool_exhausted")
    assert "p1/m: 500" in e.value.message and "p2/m: 500" in e.value.message
    assert "p3/" not in e.value.message and "p4/" not in e.value.message
    assert [m for m, _ in w.asked] == ["p1/m", "p2/m"]


def test_the_deadline_bounds_attempts():
    w = World(deadline=0.5)
    members = [route(f"h{i}") for i in range(1, 4)]
    for r in members:
        w.fail(r, err(504, "upstream_timeout"))
    with pytest.raises(GatewayError) as e:
        w.request(members, take=1.0)  # each attempt waits out a 1 s read timeout
    assert (e.value.status, e.value.code) == (504, "upstream_timeout")  # one attempt: its own error
    assert [m for m, _ in w.asked] == ["h1/m"]


def test_an_attempt_may_start_until_the_deadline():
    w = World(deadline=1.0)
    w.fail(A, err(500))
    assert w.served([A, B], take=1.0) == "b/m"  # at the deadline, not past it


def test_fallback_models_are_tried_after_the_pool():
    w = World()
    flaky = [route("a", "fault-500"), route("c", "fault-500")]
    backup = route("c", "backup-model")
    for r in flaky:
        w.fail(r, err(500))
    assert w.served(flaky + [backup], model="flaky") == "c/backup-model"
    assert w.served(flaky + [backup], model="flaky") == "c/backup-model"  # both cooling: straight to the fallback
    assert [m for m, _ in w.asked] == ["a/fault-500", "c/fault-500", "c/backup-model", "c/backup-model"]


def test_subscription_members_are_open_while_one_account_is():
    pool = PoolState(clock=Clock())
    r = route("sub", max_concurrency=1)
    pool.cool("sub", "one.json", "m", 5, "429: x")
    assert member_state(pool, r, ["one.json", "two.json"]) is True
    pool.acquire("sub", "two.json")
    c = member_state(pool, r, ["one.json", "two.json"])
    assert c is not True and c.reason == "429: x"
    assert member_state(pool, r, []) is True  # no usable account: the attempt says which logins are missing


def test_the_soonest_cooldown_of_the_accounts_is_reported():
    pool = PoolState(clock=Clock())
    r = route("sub")
    pool.cool("sub", "one.json", "m", 50, "429: later")
    pool.cool("sub", "two.json", "", 5, "quota exhausted: sooner")
    assert member_state(pool, r, ["one.json", "two.json"]).reason == "quota exhausted: sooner"
