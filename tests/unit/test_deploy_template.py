"""A deploy that works the first time: what `sam deploy --guided` refuses, what the deployed function
starts with, and the README's Deploy tables against template.yaml."""

from __future__ import annotations

from typing import Any

import pytest
from tollway.config import load_config
from tollway.errors import ConfigError
from tollway.http import create_app
from tollway.store import Stores

from tests.unit.cfn import ROOT, Deploy, readme_table, template

COGNITO = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123"
COGNITO_JWKS = f"{COGNITO}/.well-known/jwks.json"
AUTH0 = "https://acme.eu.auth0.com/"
AUTH0_JWKS = "https://acme.eu.auth0.com/.well-known/jwks.json"
BUNDLED_CONFIG = ROOT / "functions" / "gateway" / "gateway.yaml"


@pytest.fixture(scope="module")
def tpl() -> dict[str, Any]:
    return template()


def test_a_deploy_without_an_issuer_is_refused(tpl: dict[str, Any]) -> None:
    # Nothing entered at the guided prompts: no value at all.
    assert set(Deploy(tpl).missing()) == {"TokenIssuer", "JwksUrl"}
    # Enter pressed at the prompts: empty strings.
    refused = Deploy(tpl, TokenIssuer="", JwksUrl="", TokenAudience="api://tollway").pattern_violations()
    assert refused == ["TokenIssuer", "JwksUrl"]
    for name in ("TokenIssuer", "JwksUrl"):
        assert "is required" in tpl["Parameters"][name]["ConstraintDescription"]


def test_an_issuer_must_be_an_https_url(tpl: dict[str, Any]) -> None:
    deploy = Deploy(tpl, TokenIssuer="http://issuer.example.com", JwksUrl=" ", TokenAudience="api://tollway")
    assert deploy.pattern_violations() == ["TokenIssuer", "JwksUrl"]


@pytest.mark.parametrize(
    ("issuer", "jwks", "audience"),
    [(COGNITO, COGNITO_JWKS, "https://mcp.example.com/mcp"), (AUTH0, AUTH0_JWKS, "https://tollway.acme.com")],
)
def test_cognito_and_auth0_deploys_pass(tpl: dict[str, Any], issuer: str, jwks: str, audience: str) -> None:
    assert Deploy(tpl, TokenIssuer=issuer, JwksUrl=jwks, TokenAudience=audience).refusals() == []


def test_an_audience_must_be_known_at_deploy(tpl: dict[str, Any]) -> None:
    # The bundled gateway.yaml's `resource` is a placeholder, so tokens would be checked against it.
    failed = Deploy(tpl, TokenIssuer=COGNITO, JwksUrl=COGNITO_JWKS).failed_rules()
    assert len(failed) == 1 and "TokenAudience" in failed[0]
    for given in ({"ResourceUrl": "https://mcp.acme.com/mcp"}, {"TokenAudience": "api://tollway"}):
        assert Deploy(tpl, TokenIssuer=COGNITO, JwksUrl=COGNITO_JWKS, **given).refusals() == []


def test_a_custom_domain_needs_its_certificate(tpl: dict[str, Any]) -> None:
    base = {"TokenIssuer": COGNITO, "JwksUrl": COGNITO_JWKS}
    failed = Deploy(tpl, DomainName="mcp.acme.com", **base).failed_rules()
    assert len(failed) == 1 and "DomainCertificateArn" in failed[0]
    cert = "arn:aws:acm:eu-west-1:123456789012:certificate/0f1e2d3c-aaaa-bbbb-cccc-1234567890ab"
    deploy = Deploy(tpl, DomainName="mcp.acme.com", DomainCertificateArn=cert, **base)
    assert deploy.refusals() == []
    assert deploy.condition("HasCustomDomain")
    assert Deploy(tpl, DomainName="MCP.acme.com/mcp", DomainCertificateArn=cert, **base).pattern_violations() == [
        "DomainName"
    ]


def test_alarms_notify_one_target(tpl: dict[str, Any]) -> None:
    base = {"TokenIssuer": COGNITO, "JwksUrl": COGNITO_JWKS, "TokenAudience": "api://tollway"}
    topic = "arn:aws:sns:eu-west-1:123456789012:ops-alarms"
    assert Deploy(tpl, AlarmTopicArn=topic, AlarmEmail="ops@acme.com", **base).failed_rules() != []
    silent, mailed, own = (
        Deploy(tpl, **base),
        Deploy(tpl, AlarmEmail="ops@acme.com", **base),
        Deploy(tpl, AlarmTopicArn=topic, **base),
    )
    assert [d.condition("NotifyAlarms") for d in (silent, mailed, own)] == [False, True, True]
    assert [d.condition("CreateAlarmTopic") for d in (silent, mailed, own)] == [False, True, False]


def test_every_default_satisfies_its_own_constraints(tpl: dict[str, Any]) -> None:
    assert Deploy(tpl).pattern_violations() == []
    for name, spec in tpl["Parameters"].items():
        if "Default" not in spec:
            continue
        default = spec["Default"]
        if "AllowedValues" in spec:
            assert default in spec["AllowedValues"], name
        if "MinValue" in spec:
            assert float(default) >= float(spec["MinValue"]), name
        if "MaxValue" in spec:
            assert float(default) <= float(spec["MaxValue"]), name


def _deployed_app(monkeypatch: pytest.MonkeyPatch, deploy: Deploy) -> Any:
    """The bundled gateway.yaml loaded under the deployed function's environment, and the app
    built from it (in-memory stores: nothing is contacted)."""
    for name, value in deploy.environment().items():
        if name.startswith("TOLLWAY_") and name != "TOLLWAY_CONFIG":
            monkeypatch.setenv(name, value)
    config = load_config(str(BUNDLED_CONFIG))
    return create_app(config, stores=Stores.memory())


def test_the_bundled_config_starts_with_the_deploy_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    tpl = template()
    deploy = Deploy(tpl, TokenIssuer=COGNITO, JwksUrl=COGNITO_JWKS, TokenAudience="api://tollway")
    config = _deployed_app(monkeypatch, deploy).state.config
    assert (config.auth.issuer, config.auth.jwks_url, config.audience) == (COGNITO, COGNITO_JWKS, "api://tollway")


def test_a_custom_domain_is_the_resource_and_audience(monkeypatch: pytest.MonkeyPatch) -> None:
    tpl = template()
    cert = "arn:aws:acm:eu-west-1:123456789012:certificate/0f1e2d3c"
    domain = {"DomainName": "mcp.acme.com", "DomainCertificateArn": cert}
    deploy = Deploy(tpl, TokenIssuer=COGNITO, JwksUrl=COGNITO_JWKS, **domain)
    config = _deployed_app(monkeypatch, deploy).state.config
    assert (config.resource, config.audience) == ("https://mcp.acme.com/mcp", "https://mcp.acme.com/mcp")


def test_what_the_template_refuses_would_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # Why the parameters are required: an empty issuer makes every cold start fail.
    tpl = template()
    deploy = Deploy(tpl, TokenIssuer="", JwksUrl="", TokenAudience="api://tollway")
    with pytest.raises(ConfigError, match=r"auth\.issuer and auth\.jwks_url are required"):
        _deployed_app(monkeypatch, deploy)


def _default_cell(spec: dict[str, Any]) -> str:
    if "Default" not in spec:
        return "(required)"
    return str(spec["Default"]) if spec["Default"] != "" else "(empty)"


def test_readme_lists_every_parameter_with_its_default(tpl: dict[str, Any]) -> None:
    rows = readme_table("#### Parameters")
    documented = {row[0]: row[1] for row in rows}
    assert len(documented) == len(rows), "a parameter is listed twice"
    assert documented == {name: _default_cell(spec) for name, spec in tpl["Parameters"].items()}


def test_readme_lists_every_output(tpl: dict[str, Any]) -> None:
    rows = readme_table("#### Outputs")
    assert [row[0] for row in rows] == list(tpl["Outputs"])


# --- ApiMode: the buffered HTTP API (default) or the streaming REST API ------------------------------
BASE = {"TokenIssuer": COGNITO, "JwksUrl": COGNITO_JWKS, "TokenAudience": "api://tollway"}
FUNCTIONS = {"buffered": "GatewayFunction", "streaming": "StreamingGatewayFunction"}
LWA_LAYER = "arn:${AWS::Partition}:lambda:${AWS::Region}:753240598075:layer:LambdaAdapterLayerArm64:"


def _streaming(value: dict[str, Any]) -> dict[str, Any]:
    condition, when_true, _ = value["Fn::If"]
    assert condition == "Streaming"
    return when_true


def _routes(tpl: dict[str, Any], function: str) -> set[tuple[str, str]]:
    events = tpl["Resources"][function]["Properties"]["Events"].values()
    return {(event["Properties"]["Method"], event["Properties"]["Path"]) for event in events}


@pytest.mark.parametrize("mode", ["buffered", "streaming"])
def test_each_api_mode_deploys_one_gateway_function_and_one_api(tpl: dict[str, Any], mode: str) -> None:
    deploy = Deploy(tpl, **BASE) if mode == "buffered" else Deploy(tpl, ApiMode=mode, **BASE)
    assert deploy.refusals() == []
    created = {name for name in ("GatewayFunction", "StreamingGatewayFunction") if deploy.created(name)}
    apis = {name for name in ("TollwayHttpApi", "TollwayRestApi") if deploy.created(name)}
    assert created == {FUNCTIONS[mode]}
    assert apis == {"TollwayHttpApi" if mode == "buffered" else "TollwayRestApi"}
    # Outputs name the deployed function and API, whichever it is.
    outputs = {name: deploy.resolve(out["Value"]) for name, out in tpl["Outputs"].items() if "Condition" not in out}
    assert outputs["GatewayFunctionName"] == {"Ref": FUNCTIONS[mode]}
    assert ("TollwayRestApi" in outputs["McpEndpoint"]) == (mode == "streaming")
    assert outputs["McpEndpoint"].endswith("}/v1/mcp" if mode == "streaming" else "}/mcp")


def test_the_buffered_deployment_is_the_default_and_keeps_its_routes(tpl: dict[str, Any]) -> None:
    function = tpl["Resources"]["GatewayFunction"]["Properties"]
    assert tpl["Parameters"]["ApiMode"]["Default"] == "buffered"
    assert function["Handler"] == "app.handler" and "Timeout" not in function  # Globals: 29 s
    assert {event["Type"] for event in function["Events"].values()} == {"HttpApi"}
    assert Deploy(tpl, **BASE).environment("GatewayFunction")["TOLLWAY_RESPONSE_MODE"] == "buffered"


def test_the_streaming_deployment_streams_every_route_through_the_web_adapter(tpl: dict[str, Any]) -> None:
    function = tpl["Resources"]["StreamingGatewayFunction"]["Properties"]
    env = Deploy(tpl, ApiMode="streaming", **BASE).environment("StreamingGatewayFunction")

    assert function["Handler"] == "run.sh" and function["CodeUri"] == "functions/gateway/"
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/opt/bootstrap"
    assert env["AWS_LWA_INVOKE_MODE"] == "response_stream"
    assert env["AWS_LWA_READINESS_CHECK_PATH"] == "/healthz"
    assert env["TOLLWAY_RESPONSE_MODE"] == "stream"
    # The adapter layer matches the functions' architecture (Globals: arm64).
    assert tpl["Globals"]["Function"]["Architectures"] == ["arm64"]
    [adapter] = [layer["Fn::Sub"] for layer in function["Layers"] if "Fn::Sub" in layer]
    assert adapter.startswith(LWA_LAYER)
    # The adapter answers in one mode: every route streams, for as long as the function may run.
    for event in function["Events"].values():
        assert event["Type"] == "Api"
        assert event["Properties"]["ResponseTransferMode"] == "RESPONSE_STREAM"
        assert event["Properties"]["TimeoutInMillis"] == function["Timeout"] * 1000 == 900_000
    assert _routes(tpl, "StreamingGatewayFunction") == _routes(tpl, "GatewayFunction")
    # Same permissions, code and stores as the buffered function.
    buffered = tpl["Resources"]["GatewayFunction"]["Properties"]
    assert function["Policies"] == buffered["Policies"] == [{"Ref": "GatewayPolicy"}]
    assert function["CodeUri"] == buffered["CodeUri"]


def test_sam_turns_the_streaming_routes_into_response_streaming_integrations(
    tpl: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # SAM's translator comes with the build tools (the [test] extra), not the runtime suite's.
    transform = pytest.importorskip("samtranslator.translator.transform").transform
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    sam = template()
    for name in FUNCTIONS.values():
        sam["Resources"][name]["Properties"]["CodeUri"] = "s3://bucket/gateway.zip"
    sam["Resources"]["TollwayLayer"]["Properties"]["ContentUri"] = "s3://bucket/layer.zip"

    class NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    resources = transform(sam, {}, NoManagedPolicies())["Resources"]
    paths = resources["TollwayRestApi"]["Properties"]["Body"]["paths"]
    # SAM wraps what belongs to a conditional function in Fn::If [Streaming, it, AWS::NoValue].
    integrations = [
        _streaming(method)["x-amazon-apigateway-integration"]
        for path in paths.values()
        for method in _streaming(path).values()
    ]
    assert len(integrations) == len(tpl["Resources"]["StreamingGatewayFunction"]["Properties"]["Events"])
    for integration in integrations:
        assert integration["type"] == "aws_proxy" and integration["responseTransferMode"] == "STREAM"
        uri = _streaming(integration["uri"])["Fn::Sub"]
        assert uri.endswith("/2021-11-15/functions/${StreamingGatewayFunction.Arn}/response-streaming-invocations")


@pytest.mark.parametrize(("mode", "streams", "cap"), [("buffered", False, 25.0), ("streaming", True, None)])
def test_each_deployment_starts_in_its_response_mode(
    monkeypatch: pytest.MonkeyPatch, mode: str, streams: bool, cap: float | None
) -> None:
    tpl = template()
    deploy = Deploy(tpl, ApiMode=mode, **BASE)
    for name, value in deploy.environment(FUNCTIONS[mode]).items():
        if name.startswith("TOLLWAY_") and name != "TOLLWAY_CONFIG":
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", FUNCTIONS[mode])
    endpoint = create_app(load_config(str(BUNDLED_CONFIG)), stores=Stores.memory()).state.endpoint
    assert (endpoint.streaming, endpoint.cap) == (streams, cap)
