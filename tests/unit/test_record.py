"""tollway.record.Record: the plain-data classes a cold start makes (request context, session,
stores, upstream info) keep what their dataclass versions gave callers: keyword and positional
construction with fresh defaults, `replace`, equality and a readable repr."""

from __future__ import annotations

import pytest
from tollway.context import ANONYMOUS, Principal, RequestContext, Session, UpstreamSession
from tollway.routing.upstream import UpstreamInfo


def _session() -> Session:
    return Session("s1", "acme", "alice", "2025-11-25", {"name": "agent"}, {}, 1_000)


def test_defaults_are_fresh_for_each_instance() -> None:
    first, second = RequestContext(ANONYMOUS, True, "2026-07-28"), RequestContext(ANONYMOUS, True, "2026-07-28")

    first.client_info["name"] = "agent"
    first.budgets["finance"] = None  # type: ignore[assignment]

    assert second.client_info == {} and second.budgets == {}
    assert first.audit is not second.audit
    assert _session().upstreams is not _session().upstreams


def test_replace_copies_with_the_changes_and_leaves_the_original() -> None:
    session = _session()

    renewed = session.replace(expires_at=2_000, upstreams={"finance": UpstreamSession("u1", "2025-11-25")})

    assert (renewed.expires_at, session.expires_at) == (2_000, 1_000)
    assert renewed.upstreams == {"finance": UpstreamSession("u1", "2025-11-25")} and session.upstreams == {}
    assert renewed.id == "s1" and renewed.client_info is session.client_info  # shallow, as dataclasses.replace


def test_replace_refuses_a_field_the_record_does_not_have() -> None:
    with pytest.raises(TypeError, match="RequestContext has no field sesion"):
        RequestContext(ANONYMOUS, True, "2026-07-28").replace(sesion=None)


def test_a_misspelt_attribute_is_an_error_not_a_new_field() -> None:
    ctx = RequestContext(ANONYMOUS, False, "2025-11-25")

    with pytest.raises(AttributeError):
        ctx.streamng = True  # type: ignore[attr-defined]


def test_equality_is_by_value_and_records_are_unhashable() -> None:
    assert _session() == _session()
    assert _session() != _session().replace(subject="bob")
    assert UpstreamInfo(True, None) == UpstreamInfo(modern=True, legacy=None, capabilities={})
    assert UpstreamInfo(True, None) != (True, None, {})
    with pytest.raises(TypeError):
        hash(_session())


def test_repr_names_each_field() -> None:
    info = UpstreamInfo(True, False, {"tools": {}})

    assert repr(info) == "UpstreamInfo(capabilities={'tools': {}}, legacy=False, modern=True)"
    assert "principal=Principal(subject='alice'" in repr(RequestContext(Principal("alice", "acme"), True, "x"))
