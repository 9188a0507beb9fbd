"""`tollway upstream approve` prints only its confirmation on stdout (structured logs go to stderr),
so an operator or a script can read its answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer
from tollway.store.pins import DynamoPinStore
from tollway.store.tables import ensure_tables, find_template


def test_the_approve_command_prints_only_its_confirmation(tmp_path: Path) -> None:
    """As beside `tollway dev`: its embedded DynamoDB is a moto server on 127.0.0.1, and the
    command runs from a fresh shell."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        "resource: https://gateway.example.com/mcp\nupstreams: [{name: poisoned, url: 'http://127.0.0.1:9/mcp'}]\n"
    )
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("dynamodb", endpoint_url=endpoint)
        ensure_tables(client, find_template(), {"TollwayTable": "TollwayTable"})
        store = DynamoPinStore("TollwayTable", client)
        store.approve("poisoned", "tool", "convert_currency", "a" * 64, "auto:first-seen")
        store.mark_drift("poisoned", "tool", "convert_currency", "b" * 64)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TOLLWAY_", "POWERTOOLS_"))}
        env["AWS_ENDPOINT_URL_DYNAMODB"] = endpoint
        command = ["upstream", "approve", "poisoned", "convert_currency", "--by", "olivia", "--config", str(config)]
        done = subprocess.run(
            [sys.executable, "-m", "tollway.cli", *command],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.stop()

    assert done.returncode == 0, done.stderr
    # Today stdout starts with {"level":"INFO",...,"message":"definition approved",...}.
    assert done.stdout == "approved poisoned tool convert_currency (bbbbbbbbbbbb…) by olivia\n"
