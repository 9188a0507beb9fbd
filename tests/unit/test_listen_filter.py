"""The caller's `subscriptions/listen` filter: what is accepted, and what passes it."""

from __future__ import annotations

from typing import Any

import pytest
from tollway.errors import MalformedParams
from tollway.protocol.listen import _filter, _wanted


@pytest.mark.parametrize(
    "value",
    [
        None,
        [],
        {"toolsListChanged": "yes"},
        {"resourceSubscriptions": "w+watch://notes"},
        {"resourceSubscriptions": ["", "w+watch://notes"]},
        {"resourceSubscriptions": [7]},
        {"resourceSubscriptions": [f"w+watch://{n}" for n in range(101)]},
    ],
)
def test_a_malformed_filter_is_refused(value: Any) -> None:
    with pytest.raises(MalformedParams):
        _filter(value)


def test_a_filter_keeps_its_uris_once_and_in_order() -> None:
    wanted = _filter({"toolsListChanged": True, "resourceSubscriptions": ["b://x", "a://y", "b://x"]})
    assert wanted == {
        "toolsListChanged": True,
        "promptsListChanged": False,
        "resourcesListChanged": False,
        "resourceSubscriptions": ["b://x", "a://y"],
    }


def _note(method: str, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def test_only_what_was_acknowledged_passes() -> None:
    honored = {"toolsListChanged": True}
    uris = {"w+watch://notes"}
    assert _wanted(_note("notifications/tools/list_changed"), honored, uris)
    assert not _wanted(_note("notifications/prompts/list_changed"), honored, uris)
    assert not _wanted(_note("notifications/resources/list_changed"), honored, uris)
    assert _wanted(_note("notifications/resources/updated", uri="w+watch://notes"), honored, uris)
    assert _wanted(_note("notifications/resources/updated", uri="w+watch://notes/today"), honored, uris)
    assert not _wanted(_note("notifications/resources/updated", uri="w+watch://notes-private"), honored, uris)
    assert not _wanted(_note("notifications/resources/updated", uri="w+watch://payroll"), honored, uris)
