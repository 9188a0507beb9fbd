"""gateway.yaml validation: a good file loads; every mistake is refused with a message naming where it is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from tollway.config import config_from_text, json_config, load_config, parse_config
from tollway.errors import ConfigError

UPSTREAM = {"name": "support", "url": "http://127.0.0.1:8101/mcp"}

GOOD_YAML = """\
resource: https://gateway.example.com/mcp
auth:
  issuer: https://issuer.example.com/
  jwks_url: https://issuer.example.com/.well-known/jwks.json
  algorithms: [RS256, ES256]
  tenant_claim: custom:tenant
upstreams:
  - name: support
    url: http://127.0.0.1:8101/mcp
  - name: finance
    url: https://finance.internal.example/mcp
    prefix: fin
    timeout_seconds: 20
  - name: legacy-crm
    url: http://crm.internal.example/mcp
    prefix: ""
    protocol: legacy
http:
  max_body_bytes: 65536
  allowed_origins: ["http://localhost:*"]
  list_ttl_ms: 30000
sessions:
  ttl_seconds: 3600
dev:
  launch:
    support: examples.upstreams.customer_support
"""


def _config(**overrides: Any) -> dict[str, Any]:
    return {"resource": "https://gateway.example.com/mcp", "upstreams": [UPSTREAM], **overrides}


def _refusal(data: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    message = str(caught.value)
    assert message.startswith("gateway.yaml is invalid:\n"), message
    assert "errors.pydantic.dev" not in message
    return message


def test_a_complete_config_file_loads_with_every_setting_applied(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(GOOD_YAML)

    config = load_config(str(path))

    assert config.resource == "https://gateway.example.com/mcp"
    assert config.audience == "https://gateway.example.com/mcp"
    assert config.auth.tenant_claim == "custom:tenant"
    assert [(u.name, u.namespace) for u in config.upstreams] == [
        ("support", "support"),
        ("finance", "fin"),
        ("legacy-crm", ""),
    ]
    assert config.upstream("finance").timeout_seconds == 20
    assert config.upstream("legacy-crm").protocol == "legacy"
    assert config.upstream("support").protocol == "auto"
    assert config.http.max_body_bytes == 65536
    assert config.http.list_ttl_ms == 30000
    assert config.sessions.ttl_seconds == 3600
    assert config.dev.launch == {"support": "examples.upstreams.customer_support"}


def test_a_minimal_config_gets_safe_defaults() -> None:
    config = parse_config(_config())

    assert config.name == "tollway"
    assert config.auth.algorithms == ["RS256", "ES256"]
    assert config.http.max_body_bytes == 1024 * 1024
    assert config.http.allowed_hosts is None
    assert config.sessions.ttl_seconds == 86400
    assert config.upstreams[0].namespace == "support"


def test_each_config_gets_its_own_copy_of_every_default() -> None:
    first, second = parse_config(_config()), parse_config(_config())

    first.auth.algorithms.append("ES512")
    first.masking.detectors.clear()  # a section left out: its default instance's own list
    first.tenants["acme"] = first.tenants.get("*")  # type: ignore[assignment]

    assert second.auth.algorithms == ["RS256", "ES256"]
    assert "email" in second.masking.detectors
    assert second.tenants == {}


def test_an_explicit_audience_overrides_the_resource() -> None:
    config = parse_config(_config(auth={"audience": "api://tollway"}))

    assert config.audience == "api://tollway"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (_config(resorce="x"), "  resorce: unknown key"),
        (_config(http={"max_body_byte": 1}), "  http.max_body_byte: unknown key"),
        (_config(upstreams=[{**UPSTREAM, "timeout": 3}]), "  upstreams.0.timeout: unknown key"),
        (_config(auth={"isuer": "https://issuer.example.com/"}), "  auth.isuer: unknown key"),
    ],
    ids=["top-level", "http", "upstream", "auth"],
)
def test_a_misspelt_key_is_refused_with_its_path(data: dict[str, Any], fragment: str) -> None:
    assert fragment in _refusal(data)


def test_a_missing_resource_is_named() -> None:
    data = _config()
    del data["resource"]

    assert "  resource: required key is missing" in _refusal(data)


def test_a_gateway_without_upstreams_is_refused() -> None:
    assert "  upstreams: List should have at least 1 item" in _refusal(_config(upstreams=[]))


@pytest.mark.parametrize("name", ["Support", "1support", "sup_port", "sup__port", "a" * 33, ""])
def test_an_upstream_name_outside_lowercase_letters_digits_and_dashes_is_refused(name: str) -> None:
    message = _refusal(_config(upstreams=[{**UPSTREAM, "name": name}]))

    assert "  upstreams.0.name: String should match pattern '^[a-z][a-z0-9-]{0,31}$'" in message


@pytest.mark.parametrize("prefix", ["Fin", "fin_x", "fin__x", "fin+x", "9fin", "a" * 33])
def test_a_prefix_that_could_hold_a_separator_is_refused(prefix: str) -> None:
    message = _refusal(_config(upstreams=[{**UPSTREAM, "prefix": prefix}]))

    assert (
        "  upstreams.0.prefix: Value error, must be lowercase letters, digits and '-', starting with a letter (max 32)"
        in message
    )


@pytest.mark.parametrize("url", ["ftp://host/mcp", "127.0.0.1:8101/mcp", "http://", "http:// spaced/mcp"])
def test_an_upstream_url_must_be_http_or_https(url: str) -> None:
    message = _refusal(_config(upstreams=[{**UPSTREAM, "url": url}]))

    assert "  upstreams.0.url: Value error, must be an http:// or https:// URL" in message


def test_an_unknown_upstream_protocol_is_refused() -> None:
    message = _refusal(_config(upstreams=[{**UPSTREAM, "protocol": "2025-11-25"}]))

    assert "  upstreams.0.protocol: Input should be 'auto', 'legacy' or '2026-07-28'" in message


def test_the_same_upstream_name_twice_is_refused() -> None:
    message = _refusal(_config(upstreams=[UPSTREAM, {**UPSTREAM, "url": "http://127.0.0.1:9/mcp"}]))

    assert "upstream name 'support' is declared twice" in message


def test_two_upstreams_sharing_a_prefix_are_refused() -> None:
    upstreams = [
        {"name": "finance", "url": "http://a.example/mcp", "prefix": "money"},
        {"name": "billing", "url": "http://b.example/mcp", "prefix": "money"},
    ]

    message = _refusal(_config(upstreams=upstreams))

    assert "upstreams 'finance' and 'billing' share prefix 'money': their names would collide" in message


def test_a_prefix_equal_to_another_upstreams_default_prefix_is_refused() -> None:
    upstreams = [
        {"name": "finance", "url": "http://a.example/mcp"},
        {"name": "billing", "url": "http://b.example/mcp", "prefix": "finance"},
    ]

    message = _refusal(_config(upstreams=upstreams))

    assert "upstreams 'finance' and 'billing' share prefix 'finance'" in message


def test_two_unprefixed_upstreams_are_refused() -> None:
    upstreams = [
        {"name": "one", "url": "http://a.example/mcp", "prefix": ""},
        {"name": "two", "url": "http://b.example/mcp", "prefix": ""},
    ]

    message = _refusal(_config(upstreams=upstreams))

    assert "upstreams 'one' and 'two' are both unprefixed: their names would collide" in message


def test_one_unprefixed_upstream_beside_prefixed_ones_is_accepted() -> None:
    upstreams = [
        {"name": "one", "url": "http://a.example/mcp", "prefix": ""},
        {"name": "two", "url": "http://b.example/mcp"},
    ]

    config = parse_config(_config(upstreams=upstreams))

    assert [u.namespace for u in config.upstreams] == ["", "two"]


def test_dev_launch_must_name_a_declared_upstream() -> None:
    message = _refusal(_config(dev={"launch": {"ghost": "examples.upstreams.finance"}}))

    assert "dev.launch names unknown upstream 'ghost'" in message


@pytest.mark.parametrize("algorithm", ["none", "None", "HS256", "hs512"])
def test_symmetric_and_unsigned_token_algorithms_are_refused(algorithm: str) -> None:
    message = _refusal(_config(auth={"algorithms": ["RS256", algorithm]}))

    assert f"  auth.algorithms: Value error, algorithm {algorithm!r} is not allowed (only asymmetric algorithms)" in (
        message
    )


def test_an_empty_algorithm_list_is_refused() -> None:
    assert "  auth.algorithms: Value error, at least one algorithm is required" in _refusal(
        _config(auth={"algorithms": []})
    )


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ({"sessions": {"ttl_seconds": 5}}, "  sessions.ttl_seconds: Input should be greater than or equal to 60"),
        ({"http": {"max_body_bytes": 7 * 1024 * 1024}}, "  http.max_body_bytes: Input should be less than or equal to"),
        ({"http": {"max_body_bytes": 0}}, "  http.max_body_bytes: Input should be greater than 0"),
    ],
    ids=["session-ttl", "body-over-lambda-limit", "body-zero"],
)
def test_limits_outside_their_range_are_refused(section: dict[str, Any], fragment: str) -> None:
    assert fragment in _refusal(_config(**section))


def test_every_mistake_in_a_file_is_listed_at_once() -> None:
    data = _config(upstreams=[{**UPSTREAM, "url": "ftp://x"}], http={"max_body_byte": 1})

    message = _refusal(data)

    assert "upstreams.0.url" in message
    assert "http.max_body_byte: unknown key" in message


def test_a_file_that_is_not_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("resource: https://gateway.example.com/mcp\nupstreams: [\n  - name: x\n")

    with pytest.raises(ConfigError) as caught:
        load_config(str(path))

    assert str(caught.value).startswith(f"{path} is not valid YAML at line ")


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("- just\n- a list\n")

    with pytest.raises(ConfigError, match=r"must be a YAML mapping$"):
        load_config(str(path))


def test_the_json_form_of_a_config_loads_the_same_config(tmp_path: Path) -> None:
    compiled = json_config(GOOD_YAML, "gateway.yaml")
    assert compiled is not None
    assert compiled.startswith("{\n")
    path = tmp_path / "gateway.yaml"
    path.write_text(compiled)

    assert load_config(str(path)) == config_from_text(GOOD_YAML, "gateway.yaml")


def test_a_yaml_flow_mapping_is_still_read_as_yaml() -> None:
    config = config_from_text(
        "{resource: 'https://gateway.example.com/mcp', upstreams: [{name: a, url: 'http://h/mcp'}]}", "g"
    )

    assert [u.name for u in config.upstreams] == ["a"]


def test_broken_json_is_refused_with_its_line() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_text('{\n "resource": "https://gateway.example.com/mcp",\n "upstreams": [\n', "gateway.yaml")

    assert str(caught.value).startswith("gateway.yaml is not valid YAML at line ")


@pytest.mark.parametrize(
    "text",
    [
        "resource: 2026-12-05\n",  # YAML reads a date
        "costs: {1: 5}\n",  # a key that is not a string
        "leeway: .inf\n",  # a number JSON has no word for
        "secret: !!binary aGk=\n",
    ],
)
def test_a_document_json_cannot_carry_stays_yaml(text: str) -> None:
    assert json_config(text, "gateway.yaml") is None


def test_json_config_refuses_text_that_is_not_yaml() -> None:
    with pytest.raises(ConfigError, match=r"^gateway.yaml is not valid YAML at line 2$"):
        json_config("a: [\n", "gateway.yaml")


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    with pytest.raises(ConfigError) as caught:
        load_config(str(missing))

    assert str(caught.value) == f"config file {missing} cannot be read"


def test_the_config_path_comes_from_tollway_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(GOOD_YAML)
    monkeypatch.setenv("TOLLWAY_CONFIG", str(path))

    assert load_config().resource == "https://gateway.example.com/mcp"


def test_deployment_environment_overrides_win_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(GOOD_YAML)
    monkeypatch.setenv("TOLLWAY_RESOURCE", "https://mcp.example.org/mcp")
    monkeypatch.setenv("TOLLWAY_AUTH_ISSUER", "https://cognito.example.org/pool")
    monkeypatch.setenv("TOLLWAY_AUTH_AUDIENCE", "tollway-api")
    monkeypatch.setenv("TOLLWAY_AUTH_JWKS_URL", "https://cognito.example.org/pool/jwks.json")

    config = load_config(str(path))

    assert config.resource == "https://mcp.example.org/mcp"
    assert config.auth.issuer == "https://cognito.example.org/pool"
    assert config.auth.audience == "tollway-api"
    assert config.auth.jwks_url == "https://cognito.example.org/pool/jwks.json"
    assert config.auth.tenant_claim == "custom:tenant"


def test_environment_overrides_apply_to_a_file_without_an_auth_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "resource: https://gateway.example.com/mcp\nupstreams:\n  - {name: a, url: 'http://a.example/mcp'}\n"
    )
    monkeypatch.setenv("TOLLWAY_AUTH_ISSUER", "https://issuer.example.com/")

    assert load_config(str(path)).auth.issuer == "https://issuer.example.com/"


def test_the_config_can_come_from_an_ssm_parameter() -> None:
    with mock_aws():
        boto3.client("ssm").put_parameter(Name="/tollway/unit/gateway-yaml", Value=GOOD_YAML, Type="String")

        config = load_config("ssm:/tollway/unit/gateway-yaml")

    assert [u.name for u in config.upstreams] == ["support", "finance", "legacy-crm"]


def test_a_missing_ssm_parameter_is_a_config_error_without_aws_detail() -> None:
    with mock_aws(), pytest.raises(ConfigError) as caught:
        load_config("ssm:/tollway/unit/absent")

    assert str(caught.value) == "could not read config parameter ssm:/tollway/unit/absent: GetParameterError"
