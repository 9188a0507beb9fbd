"""The live config's own rules, without AWS or sockets: how often the source is read, that there is
never more than one read at a time, that an unchanged text costs no rebuild, the TTL setting, and
reading an AppConfig source through Powertools (moto has no AppConfig data API, so its boto3 client
is stubbed with botocore's Stubber)."""

from __future__ import annotations

import asyncio
import io
import threading
from typing import Any

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from tollway.config import GatewayConfig, appconfig_provider, config_ttl, read_source
from tollway.errors import ConfigError
from tollway.live import LiveGateway

GOOD = "resource: https://gateway.example.com/mcp\nauth: {allow_anonymous: true}\nupstreams:\n  - {name: a, url: 'http://a.example/mcp'}\n"
CHANGED = GOOD.replace("a.example", "b.example")


class Source:
    """A config source whose text a test sets, counting reads; `hold()` makes reads wait."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.reads = 0
        self.release = threading.Event()
        self.release.set()

    def read(self, source: str, max_age: float) -> str:
        self.reads += 1
        self.release.wait(timeout=10)
        return self.text


class Built:
    """What `build` made: an ASGI app answering with its config's first upstream URL."""

    def __init__(self) -> None:
        self.configs: list[GatewayConfig] = []

    def __call__(self, config: GatewayConfig, previous: Any) -> Any:
        self.configs.append(config)
        url = config.upstreams[0].url.encode()

        async def app(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": url})

        return app


async def get(app: Any) -> bytes:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    await app({"type": "http", "method": "GET", "path": "/healthz", "headers": []}, receive, send)
    return sent[-1]["body"]


def test_concurrent_requests_past_the_ttl_start_one_read_and_the_others_do_not_wait() -> None:
    source, built = Source(GOOD), Built()
    live = LiveGateway("gateway.yaml", built, ttl=0.01, read=source.read)
    source.text, source.release = CHANGED, threading.Event()

    async def scenario() -> list[bytes]:
        await asyncio.sleep(0.02)  # past the TTL
        first = asyncio.ensure_future(get(live))
        while source.reads < 2:  # the first request is reading
            await asyncio.sleep(0.001)
        others = await asyncio.gather(get(live), get(live))  # answered meanwhile, by the old config
        source.release.set()
        return [*others, await first]

    answers = asyncio.run(scenario())

    assert source.reads == 2  # the start, and one refresh
    assert answers == [b"http://a.example/mcp", b"http://a.example/mcp", b"http://b.example/mcp"]


def test_an_unchanged_source_is_not_rebuilt() -> None:
    source, built = Source(GOOD), Built()
    live = LiveGateway("gateway.yaml", built, ttl=0.001, read=source.read)

    async def twice() -> None:
        for _ in range(2):
            await asyncio.sleep(0.005)
            await get(live)

    asyncio.run(twice())

    assert source.reads == 3
    assert len(built.configs) == 1


def test_a_ttl_of_zero_reads_the_source_once() -> None:
    source, built = Source(GOOD), Built()
    live = LiveGateway("gateway.yaml", built, ttl=0, read=source.read)
    source.text = CHANGED

    assert asyncio.run(get(live)) == b"http://a.example/mcp"
    assert source.reads == 1


def test_a_config_the_gateway_cannot_build_is_refused_with_its_type_only(caplog: pytest.LogCaptureFixture) -> None:
    source = Source(GOOD)
    calls = 0

    def build(config: GatewayConfig, previous: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("detail with internals")
        return Built()(config, previous)

    live = LiveGateway("gateway.yaml", build, ttl=60, read=source.read)
    source.text = CHANGED

    assert asyncio.run(live.refresh()) is False
    assert asyncio.run(get(live)) == b"http://a.example/mcp"
    [rejected] = [r for r in caplog.records if r.getMessage().startswith("config rejected")]
    assert rejected.__dict__["problem"] == "the gateway cannot be built: RuntimeError"
    assert "detail with internals" not in caplog.text


def test_the_config_ttl_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOLLWAY_CONFIG_TTL_SECONDS", raising=False)
    assert config_ttl() == 30.0
    monkeypatch.setenv("TOLLWAY_CONFIG_TTL_SECONDS", "2.5")
    assert config_ttl() == 2.5
    monkeypatch.setenv("TOLLWAY_CONFIG_TTL_SECONDS", "soon")
    with pytest.raises(ConfigError, match="TOLLWAY_CONFIG_TTL_SECONDS must be a number of seconds"):
        config_ttl()
    monkeypatch.setenv("TOLLWAY_CONFIG_TTL_SECONDS", "-1")
    with pytest.raises(ConfigError, match="between 0 and 86400"):
        config_ttl()


def _configuration(text: bytes, token: str) -> dict[str, Any]:
    return {
        "Configuration": StreamingBody(io.BytesIO(text), len(text)),
        "NextPollConfigurationToken": token,
        "ContentType": "application/x-yaml",
    }


def test_an_appconfig_source_is_read_through_a_powertools_session_and_polled() -> None:
    provider = appconfig_provider("tollway-unit", "prod")
    with Stubber(provider.client) as stub:
        stub.add_response(
            "start_configuration_session",
            {"InitialConfigurationToken": "t0" * 10},
            {
                "ApplicationIdentifier": "tollway-unit",
                "EnvironmentIdentifier": "prod",
                "ConfigurationProfileIdentifier": "gateway",
            },
        )
        stub.add_response(
            "get_latest_configuration", _configuration(GOOD.encode(), "t1" * 10), {"ConfigurationToken": "t0" * 10}
        )
        # AppConfig answers an empty configuration when nothing changed since the last poll.
        stub.add_response("get_latest_configuration", _configuration(b"", "t2" * 10), {"ConfigurationToken": "t1" * 10})

        first = read_source("appconfig:tollway-unit/prod/gateway", max_age=0)
        second = read_source("appconfig:tollway-unit/prod/gateway", max_age=0)

        stub.assert_no_pending_responses()
    assert first == second == GOOD


@pytest.mark.parametrize("source", ["appconfig:app/env", "appconfig:app//profile", "appconfig:a/b/c/d"])
def test_an_appconfig_source_needs_application_environment_and_profile(source: str) -> None:
    with pytest.raises(ConfigError, match="appconfig:application/environment/profile"):
        read_source(source)


# --- the SAM template ---------------------------------------------------------------------------
def _template() -> dict[str, Any]:
    from pathlib import Path

    from tollway.store.tables import load_template

    return load_template(Path(__file__).resolve().parents[2] / "template.yaml")


@pytest.mark.parametrize(
    ("source", "accepted"),
    [
        ("gateway.yaml", True),
        ("ssm:/tollway/prod/gateway-yaml", True),
        ("appconfig:tollway/prod/gateway", True),
        ("appconfig:tollway/prod", False),
        ("s3://bucket/gateway.yaml", False),
    ],
)
def test_the_templates_config_source_takes_a_file_a_parameter_or_an_appconfig_profile(
    source: str, accepted: bool
) -> None:
    import re

    pattern = _template()["Parameters"]["ConfigSource"]["AllowedPattern"]

    assert bool(re.match(pattern, source)) is accepted


def test_the_template_passes_the_config_ttl_and_lets_an_appconfig_source_be_read() -> None:
    template = _template()
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    statements = template["Resources"]["GatewayPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    appconfig = [s["Fn::If"] for s in statements if "Fn::If" in s and s["Fn::If"][0] == "ConfigFromAppConfig"]

    assert env["TOLLWAY_CONFIG_TTL_SECONDS"] == {"Ref": "ConfigTtlSeconds"}
    assert template["Parameters"]["ConfigTtlSeconds"]["Default"] == 30
    [[_, statement, _]] = appconfig
    assert statement["Action"] == ["appconfig:StartConfigurationSession", "appconfig:GetLatestConfiguration"]
