"""`tollway upstream approve` prints only its confirmation on stdout (structured logs go to stderr),
so an operator or a script can read its answer.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tollway.store.pins import DynamoPinStore


def test_the_approve_command_prints_only_its_confirmation(
    dynamodb_server: tuple[str, Any],
    tollway_in_a_fresh_shell: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    """As beside `tollway dev`: its embedded DynamoDB is a moto server on 127.0.0.1, and the
    command runs from a fresh shell."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "resource: https://gateway.example.com/mcp\nupstreams: [{name: poisoned, url: 'http://127.0.0.1:9/mcp'}]\n"
    )
    _, client = dynamodb_server
    store = DynamoPinStore("TollwayTable", client)
    store.approve("poisoned", "tool", "convert_currency", "a" * 64, "auto:first-seen")
    store.mark_drift("poisoned", "tool", "convert_currency", "b" * 64)

    done = tollway_in_a_fresh_shell(
        *("upstream", "approve", "poisoned", "convert_currency", "--by", "olivia", "--config", str(config)),
        drop=("AWS_", "TOLLWAY_", "POWERTOOLS_"),
    )

    assert done.returncode == 0, done.stderr
    # Not a structured log line ({"level":"INFO",...,"message":"definition approved",...}) on stdout.
    assert done.stdout == "approved poisoned tool convert_currency (bbbbbbbbbbbb…) by olivia\n"
