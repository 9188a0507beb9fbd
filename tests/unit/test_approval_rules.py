"""The approval rule: the condition language, which calls wait, and an approval's life
(pending -> approved -> used once; denied; expired; other arguments), on the in-memory store."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tollway.config import Condition, load_config, parse_config
from tollway.context import Principal, RequestContext
from tollway.errors import ApprovalNotPending, ConfigError, Forbidden, NotFound
from tollway.policy.approvals import INPUT_KEY, META_KEY, STATE_PREFIX, Approvals, Verdict, holds, without_own_state
from tollway.store.approvals import Approval, MemoryApprovalStore
from tollway.telemetry.audit import digest

AGENT = Principal(subject="agent-7", tenant="acme")
APPROVER = Principal(subject="boss", tenant="acme", scopes=frozenset({"tollway:admin"}))
URL_CAPABLE = {"elicitation": {"form": {}, "url": {}}}


def config(**approvals: Any) -> Any:
    data = {
        "resource": "https://gw.example.com/mcp",
        "auth": {"allow_anonymous": True},
        "upstreams": [{"name": "pay", "url": "http://127.0.0.1:9/mcp"}],
        "tenants": {"acme": {}},
        "approvals": {"rules": [{"match": "pay__send*", "when": "amount > 1000"}], "event_bus": None, **approvals},
    }
    return parse_config(data)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def events() -> list[Approval]:
    return []


@pytest.fixture
def approvals(clock: Clock, events: list[Approval]) -> Approvals:
    return Approvals(config(expiry_seconds=600), MemoryApprovalStore(), notify=events.append, clock=clock)


def ctx(modern: bool = False, capabilities: dict[str, Any] | None = None, who: Principal = AGENT) -> RequestContext:
    return RequestContext(who, modern, "2026-07-28" if modern else "2025-11-25", client_capabilities=capabilities or {})


def check(approvals: Approvals, context: RequestContext, tool: str, params: dict[str, Any]) -> Verdict | None:
    """As the pipeline asks: the masked arguments and their audited digest."""
    return approvals.check(context, tool, params["arguments"], digest(params["arguments"]))


def call(amount: Any = 5000, **more: Any) -> dict[str, Any]:
    return {"name": "send_payment", "arguments": {"amount": amount, **more}}


# --- the condition language ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "arguments", "expected"),
    [
        ("amount > 1000", {"amount": 1001}, True),
        ("amount > 1000", {"amount": 1000}, False),
        ("amount >= 1000", {"amount": 1000.0}, True),
        ("amount < 10", {"amount": 9.5}, True),
        ("amount <= 10", {"amount": 11}, False),
        ('payee.country != "FR"', {"payee": {"country": "FR"}}, False),
        ('payee.country != "FR"', {"payee": {"country": "DE"}}, True),
        ("lines.1.qty == 3", {"lines": [{"qty": 1}, {"qty": 3}]}, True),
        ("urgent == true", {"urgent": True}, True),
        ("urgent == true", {"urgent": 1}, False),
        ("count == 1", {"count": 1.0}, True),
        ("note == null", {"note": None}, True),
        ('code > "M"', {"code": "Z"}, True),
    ],
)
def test_a_condition_compares_an_argument_with_a_literal(text: str, arguments: Any, expected: bool) -> None:
    assert holds(Condition.parse(text), arguments) is expected


@pytest.mark.parametrize(
    ("text", "arguments"),
    [
        ("amount > 1000", {}),  # missing
        ("amount > 1000", {"amount": "5000"}),  # a string is not comparable with a number
        ("amount > 1000", None),
        ("lines.5.qty == 3", {"lines": []}),
        ("amount > 1000", {"amount": True}),
    ],
)
def test_a_condition_that_cannot_be_evaluated_asks_for_approval(text: str, arguments: Any) -> None:
    assert holds(Condition.parse(text), arguments) is True


@pytest.mark.parametrize(
    ("when", "complaint"),
    [
        ("amount >", "must be"),
        ("amount ~ 3", "must be"),
        ("__import__('os') > 1", "must be"),
        ("amount > EUR", "is not a JSON number"),
        ("amount > [1]", "literal must be"),
        ("amount > NaN", "literal must be"),
        ("flag > true", "compares numbers or strings"),
        (1000, "valid string"),
    ],
)
def test_a_bad_condition_is_refused_at_load_naming_its_path(when: Any, complaint: str) -> None:
    with pytest.raises(ConfigError) as refused:
        config(rules=[{"match": "x", "when": when}])
    assert "approvals.rules.0.when" in str(refused.value)
    assert complaint in str(refused.value)


def test_a_condition_is_kept_as_its_text_and_read_back_the_same() -> None:
    loaded = config(rules=[{"match": "pay__*", "when": '  payee.country != "FR" '}])

    dumped = loaded.model_dump(mode="json", exclude_defaults=True)["approvals"]["rules"]

    assert dumped == [{"match": ["pay__*"], "when": 'payee.country != "FR"'}]
    gate = Approvals(loaded, MemoryApprovalStore())
    assert gate.rule("acme", "pay__send", {"payee": {"country": "DE"}}) is loaded.approvals.rules[0]
    assert gate.rule("acme", "pay__send", {"payee": {"country": "FR"}}) is None


def test_an_approval_url_must_name_the_id() -> None:
    with pytest.raises(ConfigError, match=r"approvals\.approval_url"):
        config(approval_url="https://console.example.com/approvals")


def test_rules_match_tool_globs_tenants_and_conditions() -> None:
    gate = Approvals(config(rules=[{"match": ["pay__*"], "when": "amount > 1000", "tenants": ["acme", "b*"]}]), None)
    assert gate.rule("acme", "pay__send", {"amount": 5000}) is not None
    assert gate.rule("beta", "pay__send", {"amount": 5000}) is not None
    assert gate.rule("zeta", "pay__send", {"amount": 5000}) is None
    assert gate.rule("acme", "pay__send", {"amount": 5}) is None
    assert gate.rule("acme", "other__send", {"amount": 5000}) is None


# --- an approval's life ---------------------------------------------------------------------------
def test_a_call_below_the_condition_needs_no_approval(approvals: Approvals) -> None:
    assert check(approvals, ctx(), "pay__send_payment", call(amount=10)) is None


def test_the_first_call_waits_and_its_retry_waits_on_the_same_approval(
    approvals: Approvals, events: list[Approval]
) -> None:
    first_ctx = ctx()
    first = check(approvals, first_ctx, "pay__send_payment", call())
    again = check(approvals, ctx(), "pay__send_payment", call())

    assert first is not None and not first.proceed and first.created
    assert again is not None and not again.proceed and not again.created
    assert again.approval.id == first.approval.id
    assert events == [first.approval]  # one event per approval, not per retry
    assert (first_ctx.audit.decision, first_ctx.audit.approval_id) == ("pending_approval", first.approval.id)
    answer = approvals.answer(first_ctx, first, call())
    assert answer["isError"] is True
    assert f"approval id {first.approval.id}" in answer["content"][0]["text"]
    assert "retry the same call" in answer["content"][0]["text"]
    assert answer["_meta"][META_KEY]["status"] == "pending"


def test_an_approved_call_proceeds_once_then_needs_a_new_approval(approvals: Approvals) -> None:
    pending = check(approvals, ctx(), "pay__send_payment", call())
    assert pending is not None
    approvals.decide(pending.approval.id, True, "acme/boss", APPROVER)

    proceeding_ctx = ctx()
    proceeding = check(approvals, proceeding_ctx, "pay__send_payment", call())
    after = check(approvals, ctx(), "pay__send_payment", call())

    assert proceeding is not None and proceeding.proceed
    assert proceeding_ctx.audit.decision == "allowed"
    assert proceeding_ctx.audit.approval_id == pending.approval.id
    assert approvals.get(pending.approval.id).status == "consumed"
    assert after is not None and not after.proceed and after.created
    assert after.approval.id != pending.approval.id


def test_other_arguments_need_their_own_approval(approvals: Approvals) -> None:
    pending = check(approvals, ctx(), "pay__send_payment", call(amount=5000))
    assert pending is not None
    approvals.decide(pending.approval.id, True, "acme/boss", APPROVER)

    other = check(approvals, ctx(), "pay__send_payment", call(amount=5001))
    someone_else = check(approvals, ctx(who=Principal("agent-8", "acme")), "pay__send_payment", call(amount=5000))

    assert other is not None and not other.proceed and other.approval.id != pending.approval.id
    assert someone_else is not None and not someone_else.proceed
    assert approvals.get(pending.approval.id).status == "approved"  # still there for the call it approved


def test_a_denied_call_is_answered_denied_until_the_approval_expires(approvals: Approvals, clock: Clock) -> None:
    pending = check(approvals, ctx(), "pay__send_payment", call())
    assert pending is not None
    approvals.decide(pending.approval.id, False, "acme/boss", APPROVER)

    denied_ctx = ctx()
    denied = check(approvals, denied_ctx, "pay__send_payment", call())
    assert denied is not None and not denied.proceed and denied.approval.status == "denied"
    assert denied_ctx.audit.decision == "denied"
    assert approvals.answer(denied_ctx, denied, call())["content"][0]["text"].startswith("Approval denied")

    clock.now += 601
    later = check(approvals, ctx(), "pay__send_payment", call())
    assert later is not None and later.created and later.approval.status == "pending"


def test_an_expired_approval_can_be_neither_decided_nor_used(approvals: Approvals, clock: Clock) -> None:
    pending = check(approvals, ctx(), "pay__send_payment", call())
    assert pending is not None
    clock.now += 601
    with pytest.raises(ApprovalNotPending):
        approvals.decide(pending.approval.id, True, "acme/boss", APPROVER)
    assert approvals.view(approvals.get(pending.approval.id))["status"] == "expired"

    approved = check(approvals, ctx(), "pay__send_payment", call())
    assert approved is not None
    approvals.decide(approved.approval.id, True, "acme/boss", APPROVER)
    clock.now += 601
    retry = check(approvals, ctx(), "pay__send_payment", call())
    assert retry is not None and not retry.proceed and retry.approval.id != approved.approval.id


def test_decisions_are_taken_once_by_someone_else(approvals: Approvals) -> None:
    pending = check(approvals, ctx(), "pay__send_payment", call())
    assert pending is not None
    with pytest.raises(Forbidden):
        approvals.decide(pending.approval.id, True, "acme/agent-7", AGENT)
    approvals.decide(pending.approval.id, False, "acme/boss", APPROVER)
    with pytest.raises(ApprovalNotPending):
        approvals.decide(pending.approval.id, True, "acme/boss", APPROVER)
    with pytest.raises(NotFound):
        approvals.decide("no-such-id", True, "acme/boss", APPROVER)
    with pytest.raises(NotFound):
        approvals.get("../../etc")


def test_the_listing_filters_by_status_and_tenant(approvals: Approvals, clock: Clock) -> None:
    a = check(approvals, ctx(), "pay__send_payment", call(amount=2000))
    b = check(approvals, ctx(who=Principal("x", "other")), "pay__send_payment", call(amount=3000))
    assert a is not None and b is not None
    approvals.decide(b.approval.id, False, "acme/boss", APPROVER)

    assert [x["id"] for x in approvals.listing("pending")] == [a.approval.id]
    assert [x["id"] for x in approvals.listing(tenant="other")] == [b.approval.id]
    assert "arguments" not in approvals.listing()[0]
    clock.now += 601
    assert [x["id"] for x in approvals.listing("expired")] == [a.approval.id]


# --- the 2026-07-28 round trip ----------------------------------------------------------------------
def test_a_2026_client_that_opens_urls_gets_an_input_required_url_elicitation(approvals: Approvals) -> None:
    modern = ctx(modern=True, capabilities=URL_CAPABLE)
    verdict = check(approvals, modern, "pay__send_payment", call())
    assert verdict is not None

    answer = approvals.answer(modern, verdict, call())

    assert answer["resultType"] == "input_required"
    assert answer["requestState"] == STATE_PREFIX + verdict.approval.id
    request = answer["inputRequests"][INPUT_KEY]
    assert request["method"] == "elicitation/create"
    assert request["params"]["mode"] == "url"
    assert request["params"]["url"] == f"https://gw.example.com/admin/approvals/{verdict.approval.id}"


def test_a_2026_retry_still_pending_or_a_client_without_urls_gets_the_tool_error(approvals: Approvals) -> None:
    modern = ctx(modern=True, capabilities=URL_CAPABLE)
    verdict = check(approvals, modern, "pay__send_payment", call())
    assert verdict is not None
    retry = {**call(), "requestState": STATE_PREFIX + verdict.approval.id, "inputResponses": {}}

    assert approvals.answer(modern, verdict, retry)["isError"] is True
    assert approvals.answer(ctx(modern=True), verdict, call())["isError"] is True


def test_the_gateways_own_round_trip_is_not_sent_upstream() -> None:
    own = {**call(), "requestState": STATE_PREFIX + "abc", "inputResponses": {INPUT_KEY: {"action": "accept"}}}
    upstreams = {**call(), "requestState": "theirs", "inputResponses": {"q": {}}}

    assert without_own_state(own) == call()
    assert without_own_state(upstreams) == upstreams


def test_a_configured_approval_url_is_used(clock: Clock) -> None:
    gate = Approvals(config(approval_url="https://console.example.com/a/{id}?x=1"), MemoryApprovalStore(), clock=clock)
    assert gate.url("abc") == "https://console.example.com/a/abc?x=1"


def test_the_templates_event_bus_parameter_overrides_the_config(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gateway.yaml"
    data = config().model_dump(mode="json", exclude_defaults=True)
    path.write_text(json.dumps({**data, "approvals": {"event_bus": None}}))
    assert load_config(str(path)).approvals.event_bus is None
    monkeypatch.setenv("TOLLWAY_APPROVAL_EVENT_BUS", "approvals-bus")
    assert load_config(str(path)).approvals.event_bus == "approvals-bus"
