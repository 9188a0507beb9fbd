"""gateway.yaml as pydantic models, and where it is loaded from.

Every section is strict: an unknown key is an error naming where it is, so a typo
never silently turns a setting off.
"""

import functools
import json
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tollway.aws import client_config
from tollway.errors import ConfigError

PREFIX_SEPARATOR = "__"
"""Joins an upstream's prefix to its tool and prompt names: `finance__run_forecast`."""
URI_PREFIX_SEPARATOR = "+"
"""Joins an upstream's prefix to its resource URIs as a scheme prefix: `finance+finance://reports/x`."""

# Lowercase letters, digits and '-': valid in tool names and in URI schemes, and never
# contains the separators above, so `prefix__name` splits unambiguously.
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


class Strict(BaseModel):
    """Defaults are written as values, never `default_factory`: pydantic gives each instance its
    own copy of a default, and a factory costs an `inspect.signature` call per field as the class
    is made (a cold start's import makes every class here)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthConfig(Strict):
    """OAuth 2.1 resource-server settings (validation is enforced by the auth stage)."""

    issuer: str | None = None
    audience: str | None = None
    """Defaults to `resource` (RFC 8707)."""
    jwks_url: str | None = None
    algorithms: list[str] = ["RS256", "ES256"]
    tenant_claim: str = "tenant_id"
    """Claim naming the caller's tenant, e.g. `tenant_id` or `custom:tenant` (Cognito)."""
    roles_claim: str = "roles"
    """Claim listing the caller's roles or groups, e.g. `cognito:groups`."""
    default_tenant: str | None = None
    """Tenant for tokens without the tenant claim; unset = such tokens are refused."""
    required_scopes: list[str] = []
    """Scopes every caller needs (403 insufficient_scope otherwise)."""
    scopes_supported: list[str] | None = None
    """Advertised in protected-resource metadata; default: `required_scopes`."""
    required_claims: list[str] = []
    leeway_seconds: Annotated[int, Field(ge=0, le=300)] = 30
    max_token_bytes: Annotated[int, Field(ge=512, le=65536)] = 8192
    jwks_cache_seconds: Annotated[int, Field(ge=1)] = 300
    jwks_refresh_cooldown: Annotated[float, Field(ge=1)] = 10.0
    """At most one JWKS refresh per cooldown for unknown `kid`s."""
    allow_anonymous: bool = False
    """Explicit opt-out of authentication (local experiments only); without an issuer and
    without this, the gateway refuses to start: auth fails closed."""

    @field_validator("algorithms")
    @classmethod
    def _no_weak_algorithms(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one algorithm is required")
        for alg in value:
            if alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ValueError(f"algorithm {alg!r} is not allowed (only asymmetric algorithms)")
        return value


class UpstreamAuth(Strict):
    """How the gateway authenticates to an upstream. The caller's token is never forwarded."""

    type: Literal["none", "header", "bearer", "oauth_client_credentials"] = "none"
    secret: str | None = None
    """AWS Secrets Manager secret id. `header`/`bearer`: the secret string is the value sent;
    `oauth_client_credentials`: a JSON object with `client_id` and `client_secret`."""
    header: str = "Authorization"
    """Header name for `type: header` (e.g. `X-Api-Key`)."""
    token_url: str | None = None
    scope: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.type != "none" and not self.secret:
            raise ValueError(f"auth.type {self.type!r} needs auth.secret (a Secrets Manager secret id)")
        if self.type == "oauth_client_credentials" and not self.token_url:
            raise ValueError("auth.type 'oauth_client_credentials' needs auth.token_url")
        return self


class CircuitConfig(Strict):
    """Per upstream, per warm instance: after `failure_threshold` consecutive failures (timeouts,
    unreachable, invalid answers) calls fail fast for `recovery_seconds`, then one probe call
    decides whether the circuit closes again."""

    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = 5
    recovery_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0


class UpstreamConfig(Strict):
    name: Annotated[str, Field(pattern=_PREFIX_RE.pattern)]
    url: str
    prefix: str | None = None
    """Namespace for this upstream's tools, prompts and resource URIs; default: `name`;
    the empty string mounts the upstream unprefixed."""
    protocol: Literal["auto", "legacy", "2026-07-28"] = "auto"
    """`auto` probes with server/discover once and remembers the answer."""
    timeout_seconds: Annotated[float, Field(gt=0, le=900)] = 25.0
    """Budget of one request to this upstream, everything included (era probe, session opening,
    retries, the call itself); on Lambda also bounded by the invocation's remaining time."""
    interaction_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 300.0
    """How long a call may still take once one of its server requests (elicitation, sampling) has
    been relayed to the client: a person may be filling in a form. Only 2025-era sessions on a
    streaming server relay such requests; everything else keeps `timeout_seconds`."""
    max_response_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 5 * 1024 * 1024
    """Largest answer read from this upstream (JSON body or whole event stream); more is refused
    with a clear error. The default stays below Lambda's 6 MB response limit."""
    retries: Annotated[int, Field(ge=0, le=5)] = 2
    """Retries with jittered backoff, only where safe: lists and probes, requests that never
    reached the upstream (connection refused), and tools/call of idempotent tools."""
    idempotent_tools: list[str] = []
    """Glob patterns on this upstream's own tool names whose calls may be retried, besides tools
    annotated `idempotentHint: true`."""
    circuit: CircuitConfig = CircuitConfig()
    probe_retry_seconds: Annotated[float, Field(ge=0, le=600)] = 5.0
    """How long a failed era probe (unreachable, timed out) is remembered before the next try."""
    headers: dict[str, str] = {}
    """Static, non-secret headers sent to this upstream."""
    auth: UpstreamAuth = UpstreamAuth()
    identity_headers: bool = False
    """Send the caller's tenant and subject as `X-Tollway-Tenant` / `X-Tollway-Subject` (not secrets)."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("prefix")
    @classmethod
    def _valid_prefix(cls, value: str | None) -> str | None:
        if value and not _PREFIX_RE.match(value):
            raise ValueError("must be lowercase letters, digits and '-', starting with a letter (max 32)")
        return value

    @property
    def namespace(self) -> str:
        return self.name if self.prefix is None else self.prefix


class HttpConfig(Strict):
    max_body_bytes: Annotated[int, Field(gt=0, le=6 * 1024 * 1024)] = 1024 * 1024
    allowed_origins: list[str] | None = None
    """Browser origins allowed to call the gateway (`*` wildcards); requests without Origin pass.
    Default: none on Lambda; loopback origins under `tollway dev`."""
    allowed_hosts: list[str] | None = None
    """Host header allow-list (`*` wildcards), checked by the local server to stop DNS rebinding."""
    list_ttl_ms: Annotated[int, Field(ge=0)] = 0
    """`ttlMs` on 2026-07-28 list results: how long a client may cache a list."""
    streaming: bool | None = None
    """Whether responses can stream (SSE as events arrive). Default: yes locally and on the
    streaming deployment, no on the buffered one (`response_mode()`)."""
    buffered_deadline_seconds: Annotated[float, Field(gt=0, le=29)] = 25.0
    """Buffered deployment only (API Gateway HTTP API cuts an integration at 30 s, counted from
    its side, cold start included): a request still running this long after it arrived is
    answered with a JSON-RPC timeout error instead of the gateway's 503."""
    listen_max_seconds: Annotated[float, Field(gt=0, le=290)] = 240.0
    """How long one 2026-07-28 `subscriptions/listen` stream stays open before the gateway
    closes it gracefully (the client listens again). Streamed deployments only; below API
    Gateway's 5-minute idle cut, and never past the invocation's own deadline."""
    listen_check_seconds: Annotated[float, Field(gt=0, le=300)] = 10.0
    """How often an open listen stream compares the lists its caller may see with what it saw,
    and announces a change (a definition approved or withheld, a config change). A check reads
    the instance's catalog and pins, which ask the upstreams and the table again only after
    `definitions.cache_seconds`."""


class SessionsConfig(Strict):
    ttl_seconds: Annotated[int, Field(ge=60, le=7 * 86400)] = 86400
    """Lifetime of a 2025-era session; a session in use is renewed once half of it has passed."""
    cache_seconds: Annotated[float, Field(ge=0, le=300)] = 10.0
    """How long an instance reuses a session it read (0: read it on every request). A session
    ended through another instance still answers on this one for up to this long."""


class DevConfig(Strict):
    launch: dict[str, str] = {}
    """`tollway dev` only: upstream name -> Python module started on the upstream URL's port."""


class AuditConfig(Strict):
    """Where audit records go (`tollway.telemetry.audit`). Deployed: the audit log group the
    template names (TOLLWAY_AUDIT_LOG_GROUP); otherwise this JSON-lines file (TOLLWAY_AUDIT_FILE
    overrides it), relative to the working directory."""

    file: str = ".tollway/audit.jsonl"


Patterns = list[str]
"""Glob patterns (`*`, `?`, `[…]`) on public names: `finance__*`, `support+support://policies/*`."""


class AccessRule(Strict):
    """Extra requirements for the items `match` selects: every scope, and one of the roles."""

    match: Annotated[Patterns, Field(min_length=1)]
    scopes: list[str] = []
    roles: list[str] = []


class VirtualServer(Strict):
    """A curated subset of the gateway's tools, resources and prompts, shown to a tenant."""

    tools: Patterns = ["*"]
    resources: Patterns = ["*"]
    prompts: Patterns = ["*"]
    description: str | None = None


class Limits(Strict):
    """Limits for one scope (a tenant, a subject within it, or a tool within it).
    Rates count calls; quotas count cost units. Unset = unlimited."""

    per_second: Annotated[int, Field(gt=0)] | None = None
    per_minute: Annotated[int, Field(gt=0)] | None = None
    per_day: Annotated[int, Field(gt=0)] | None = None
    per_month: Annotated[int, Field(gt=0)] | None = None


class Plan(Strict):
    tenant: Limits = Limits()
    subject: Limits = Limits()
    """Per subject (user or agent) within the tenant."""
    tools: dict[str, Limits] = {}
    """Per tool within the tenant: glob pattern on public tool names -> limits."""
    shards: Annotated[int, Field(ge=1, le=32)] = 1
    """Items the tenant's own limits and usage are spread over each day, for a tenant hotter than
    one item's ~1,000 writes/s (each takes an even share of every tenant limit; see
    store/ledger.py for the bound). 1 = one item, exact. Change it at the start of a UTC month."""


class QuotaConfig(Strict):
    plans: dict[str, Plan] = {}
    default_plan: str | None = None
    """Plan of tenants whose policy names none; unset: such tenants are not limited."""
    costs: dict[str, Annotated[int, Field(ge=0)]] = {}
    """Glob pattern on public tool names -> cost units per call (first match; default 1)."""
    failure_policy: Literal["closed", "open"] = "closed"
    """When DynamoDB cannot answer: refuse the call (retryable error) or let it through."""
    lease_units: Annotated[int, Field(ge=1, le=10000)] = 1
    """Units a warm instance reserves per quota write (1 = exact, one write per call). Larger
    leases cut writes for hot tenants; they shrink as a quota runs out, so it is never exceeded."""

    @model_validator(mode="after")
    def _default_plan_exists(self) -> Self:
        if self.default_plan is not None and self.default_plan not in self.plans:
            raise ValueError(f"quotas.default_plan names unknown plan {self.default_plan!r}")
        return self


class CostModel(Strict):
    """Estimated AWS cost per call (USD); prices are inputs — check your region's."""

    api_gateway_per_million_requests: float = 1.00
    lambda_per_million_requests: float = 0.20
    lambda_per_gb_second: float = 0.0000133334
    """arm64 price."""
    lambda_memory_mb: Annotated[int, Field(ge=128, le=10240)] = 1024
    lambda_overhead_ms: Annotated[float, Field(ge=0)] = 13.0
    """Billed Lambda time per call besides the upstream's: the handler's CPU at this memory size
    plus the wait on DynamoDB (`make bench` prints the figure it measured, and how)."""
    dynamodb_per_million_writes: float = 0.625
    dynamodb_per_million_reads: float = 0.125
    dynamodb_writes_per_call: Annotated[float, Field(ge=0)] = 1.0
    """Billed write units per call: 1 for the tenant's ledger item (admission and usage record
    in one write), one more per subject or tool limit, fewer with leases. `make bench` prints
    the measured figure."""
    dynamodb_reads_per_call: Annotated[float, Field(ge=0)] = 0.0
    log_bytes_per_call: Annotated[int, Field(ge=0)] = 1000
    """CloudWatch Logs bytes ingested per call: function logs and EMF records, the audit record
    and API Gateway's access-log line, each with 26 bytes of event overhead (`make bench`)."""
    cloudwatch_logs_per_gb: float = 0.50


class FinanceConfig(Strict):
    admin_scope: str = "tollway:admin"
    """Scope a token needs for the admin API (usage reports)."""
    cost_model: CostModel = CostModel()
    record_usage: bool = True
    """Record each metered call's usage (calls, units, errors, latency per tenant, tool and day)
    in the write that admits it. Off: a tenant without a plan costs no DynamoDB write at all."""


class FieldRule(Strict):
    """What to do with a field path (`$.account.iban`, `customer.email`) of one tool's arguments
    or structured results."""

    path: str
    action: Literal["mask", "remove", "hash", "round", "bucket"] = "mask"
    digits: Annotated[int, Field(ge=-9, le=9)] = 0
    """`round`: decimal places kept (negative rounds to tens, hundreds…)."""
    buckets: list[float] = []
    """`bucket`: ascending upper bounds; a value becomes the range it falls in ("1000-5000")."""


class ToolMasking(Strict):
    allow_detectors: list[str] = []
    """Detectors not applied to this tool's arguments (a tool that legitimately needs an email)."""
    arguments: list[FieldRule] = []
    results: list[FieldRule] = []
    max_result_bytes: Annotated[int, Field(gt=0)] | None = None
    """Shape oversized results: text beyond this is cut with a clear truncation marker."""
    projection: str | None = None
    """JMESPath applied to structured results, so agents get what they need and no more."""


class MaskingConfig(Strict):
    enabled: bool = True
    detectors: list[str] = [
        "email",
        "phone",
        "card",
        "ssn",
        "iban",
        "ip",
        "aws_access_key",
        "jwt",
        "api_key",
    ]
    tools: dict[str, ToolMasking] = {}
    """Glob pattern on public tool names -> per-tool rules (every matching entry applies)."""
    hash_key_secret: str | None = None
    """Secrets Manager secret holding the key for `hash` rules (consistent per tenant); unset:
    a key derived from the gateway name — fine locally, set a secret in production."""


class DefinitionPolicy(Strict):
    """What happens to upstream tool/resource/prompt definitions that look poisoned."""

    high: Literal["block", "sanitize", "warn"] = "block"
    medium: Literal["block", "sanitize", "warn"] = "sanitize"
    low: Literal["block", "sanitize", "warn"] = "warn"
    max_description_chars: Annotated[int, Field(gt=0)] = 2000
    pinning: bool = True
    """Pin approved definitions (hash in DynamoDB); a changed definition is withheld until re-approved."""
    auto_approve_first_seen: bool = True
    """Pin definitions the first time they are seen (trust on first use); false: an admin approves each."""
    result_injection: Literal["flag", "wrap", "block", "off"] = "flag"
    """Instruction-like text in results: mark it in `_meta`, wrap it as quoted data, or fail the call."""
    cache_seconds: Annotated[float, Field(ge=0, le=3600)] = 30.0
    """How long a warm instance trusts what it knows: the pins it read (an approval made on another
    instance, or by the CLI, takes effect within this) and the definitions a call is checked
    against (a definition an upstream changes is caught by calls within this, by lists at once)."""


_CONDITION_RE = re.compile(
    r"^\s*(?P<path>[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)\s*(?P<op>==|!=|>=|<=|>|<)\s*(?P<literal>.+?)\s*$"
)
_ORDERED_OPS = {">", ">=", "<", "<="}


class Condition(NamedTuple):
    """`<argument path> <operator> <JSON literal>`, e.g. `amount > 1000`, `payee.country != "FR"`,
    `urgent == true`. The path is an argument name, dotted into objects (a number indexes a list).
    Checked at config load (`ApprovalRule.when` keeps the text); parsed once more and evaluated
    by `tollway.policy.approvals`. No expression is ever evaluated as code."""

    path: tuple[str, ...]
    op: str
    literal: Any
    text: str

    @classmethod
    def parse(cls, text: str) -> Self:
        found = _CONDITION_RE.match(text)
        if found is None:
            raise ValueError('must be "<argument> <op> <literal>" with op one of == != > >= < <= (e.g. amount > 1000)')
        try:
            literal = json.loads(found["literal"])
        except ValueError:
            raise ValueError(
                f'literal {found["literal"]!r} is not a JSON number, "string", true, false or null'
            ) from None
        if isinstance(literal, dict | list) or (isinstance(literal, float) and not math.isfinite(literal)):
            raise ValueError("literal must be a number, a string, true, false or null")
        op = found["op"]
        if op in _ORDERED_OPS and (literal is None or isinstance(literal, bool)):
            raise ValueError(f"{op} compares numbers or strings, not {found['literal']}")
        return cls(tuple(found["path"].split(".")), op, literal, text.strip())


class ApprovalRule(Strict):
    """Calls of the tools `match` selects (public names) wait for an approver, when `when` holds
    of their (masked) arguments, for the `tenants` listed (default: every tenant)."""

    match: Annotated[Patterns, Field(min_length=1)]
    when: str | None = None
    """A `Condition`'s text, checked at load; `tollway.policy.approvals` parses it once at build."""
    tenants: Patterns | None = None

    @field_validator("match", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("when")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        return None if value is None else Condition.parse(value).text


class ApprovalsConfig(Strict):
    rules: list[ApprovalRule] = []
    expiry_seconds: Annotated[int, Field(ge=1, le=7 * 86400)] = 3600
    """How long a pending approval can be decided, and an approved one used."""
    event_bus: str | None = "default"
    """EventBridge bus for `Approval Requested` events (env TOLLWAY_APPROVAL_EVENT_BUS wins); null: none."""
    approval_url: str | None = None
    """Where an approver decides, `{id}` replaced (shown to 2026-07-28 users in the URL
    elicitation); default: `<resource origin>/admin/approvals/{id}`."""

    @field_validator("approval_url")
    @classmethod
    def _has_id(cls, value: str | None) -> str | None:
        if value is not None and (value.count("{id}") != 1 or not value.startswith(("https://", "http://"))):
            raise ValueError("must be an http(s) URL containing {id} once")
        return value


class TenantPolicy(Strict):
    upstreams: list[str] | None = None
    """Upstreams this tenant may reach (default: all)."""
    tools: Patterns = ["*"]
    resources: Patterns = ["*"]
    prompts: Patterns = ["*"]
    virtual_server: str | None = None
    """Narrow everything above to a named `virtual_servers` entry."""
    rules: list[AccessRule] = []
    plan: str | None = None
    """Quota plan (`quotas.plans`); default `quotas.default_plan`."""
    failure_policy: Literal["closed", "open"] | None = None
    """Overrides `quotas.failure_policy` for this tenant."""


class GatewayConfig(Strict):
    resource: str
    """The gateway's canonical URL (`https://…/mcp`); the default token audience."""
    name: str = "tollway"
    auth: AuthConfig = AuthConfig()
    upstreams: Annotated[list[UpstreamConfig], Field(min_length=1)]
    http: HttpConfig = HttpConfig()
    sessions: SessionsConfig = SessionsConfig()
    dev: DevConfig = DevConfig()
    tenants: dict[str, TenantPolicy] = {}
    """Authorization per tenant; key `*` applies to tenants not listed. No entries: every
    authenticated caller may use everything. Entries but none for a tenant: it sees nothing."""
    virtual_servers: dict[str, VirtualServer] = {}
    quotas: QuotaConfig = QuotaConfig()
    finance: FinanceConfig = FinanceConfig()
    masking: MaskingConfig = MaskingConfig()
    definitions: DefinitionPolicy = DefinitionPolicy()
    audit: AuditConfig = AuditConfig()
    approvals: ApprovalsConfig = ApprovalsConfig()

    @model_validator(mode="after")
    def _references_exist(self) -> Self:
        names = {u.name for u in self.upstreams}
        for tenant, policy in self.tenants.items():
            for name in policy.upstreams or []:
                if name not in names:
                    raise ValueError(f"tenants.{tenant}.upstreams names unknown upstream {name!r}")
            if policy.plan and policy.plan not in self.quotas.plans:
                raise ValueError(f"tenants.{tenant}.plan names unknown plan {policy.plan!r}")
            if policy.virtual_server and policy.virtual_server not in self.virtual_servers:
                raise ValueError(
                    f"tenants.{tenant}.virtual_server names unknown virtual server {policy.virtual_server!r}"
                )
        return self

    @model_validator(mode="after")
    def _no_collisions(self) -> Self:
        names: set[str] = set()
        namespaces: dict[str, str] = {}
        for upstream in self.upstreams:
            if upstream.name in names:
                raise ValueError(f"upstream name {upstream.name!r} is declared twice")
            names.add(upstream.name)
            other = namespaces.get(upstream.namespace)
            if other is not None:
                what = "are both unprefixed" if not upstream.namespace else f"share prefix {upstream.namespace!r}"
                raise ValueError(f"upstreams {other!r} and {upstream.name!r} {what}: their names would collide")
            namespaces[upstream.namespace] = upstream.name
        for name in self.dev.launch:
            if name not in names:
                raise ValueError(f"dev.launch names unknown upstream {name!r}")
        return self

    @property
    def audience(self) -> str:
        return self.auth.audience or self.resource

    def upstream(self, name: str) -> UpstreamConfig:
        return next(u for u in self.upstreams if u.name == name)

    def metric_tenant(self, tenant: str) -> str:
        """The Tenant dimension of a metric: a tenant named here, else "other" (bounded series)."""
        return tenant if tenant in self.tenants and tenant != "*" else "other"


def parse_config(data: Any, source: str = "gateway.yaml") -> GatewayConfig:
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _describe(exc: ValidationError, source: str) -> str:
    lines = [f"{source} is invalid:"]
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  {where}: unknown key")
        elif err["type"] == "missing":
            lines.append(f"  {where}: required key is missing")
        else:
            lines.append(f"  {where}: {err['msg']}")
    return "\n".join(lines)


RESPONSE_MODE_ENV = "TOLLWAY_RESPONSE_MODE"
ResponseMode = Literal["stream", "buffered"]


def response_mode() -> ResponseMode:
    """How answers leave this process, from `$TOLLWAY_RESPONSE_MODE` (set by the SAM template):
    "buffered" behind API Gateway's HTTP API (Mangum; the whole answer at once, within 30 s),
    "stream" behind the REST API with response streaming (Lambda Web Adapter) and under
    `tollway dev`. Unset: "buffered" on Lambda, "stream" elsewhere."""
    mode = os.environ.get(RESPONSE_MODE_ENV, "").strip().lower()
    if mode == "stream" or mode == "buffered":
        return mode
    if mode:
        raise ConfigError(f"{RESPONSE_MODE_ENV} must be 'stream' or 'buffered', got {mode!r}")
    return "buffered" if "AWS_LAMBDA_FUNCTION_NAME" in os.environ else "stream"


CONFIG_TTL_ENV = "TOLLWAY_CONFIG_TTL_SECONDS"
DEFAULT_CONFIG_TTL_SECONDS = 30.0


def config_source(source: str | None = None) -> str:
    """Where the config comes from: `source`, else `$TOLLWAY_CONFIG`, else `gateway.yaml`."""
    return source or os.environ.get("TOLLWAY_CONFIG") or "gateway.yaml"


def config_ttl() -> float:
    """Seconds between two reads of the config source by a running gateway (0: read once),
    from `$TOLLWAY_CONFIG_TTL_SECONDS` (default 30)."""
    raw = os.environ.get(CONFIG_TTL_ENV, "").strip()
    if not raw:
        return DEFAULT_CONFIG_TTL_SECONDS
    try:
        ttl = float(raw)
    except ValueError:
        raise ConfigError(f"{CONFIG_TTL_ENV} must be a number of seconds, got {raw!r}") from None
    if not 0 <= ttl <= 86400:
        raise ConfigError(f"{CONFIG_TTL_ENV} must be between 0 and 86400 seconds, got {raw!r}")
    return ttl


def load_config(source: str | None = None) -> GatewayConfig:
    """Load from a file path, `ssm:/parameter/name` or `appconfig:application/environment/profile`;
    default `$TOLLWAY_CONFIG` or `gateway.yaml`.

    Environment overrides (set by the SAM template's parameters) win over the file:
    TOLLWAY_AUTH_ISSUER, TOLLWAY_AUTH_AUDIENCE, TOLLWAY_AUTH_JWKS_URL, TOLLWAY_RESOURCE,
    TOLLWAY_APPROVAL_EVENT_BUS.
    """
    source = config_source(source)
    return config_from_text(read_source(source), source)


def config_from_text(text: str, source: str) -> GatewayConfig:
    """The config a source's text describes (YAML, environment overrides applied), or ConfigError
    naming every problem; never the text itself (it may hold secrets)."""
    data = _document(text, source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a YAML mapping")
    return parse_config(_apply_env_overrides(data), source)


def _document(text: str, source: str) -> Any:
    """A JSON document is read as JSON, any other text as YAML (JSON is YAML's subset). The config
    `sam build` bundles is JSON (`json_config`): PyYAML's import, which compiles its patterns,
    is about a tenth of a cold start's import."""
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            pass  # a YAML flow mapping, or a mistake: YAML reads it and names the line
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source} is not valid YAML{where}") from None


def json_config(text: str, source: str) -> str | None:
    """The same document as JSON, for a deployed function to read without PyYAML (`sam build`
    runs this on the bundled config: `tollway compile-config`), or None when YAML reads more
    into it than JSON can say (a date, a key that is not a string): that text stays YAML."""
    data = _document(text, source)
    if not _plain_json(data):
        return None
    return json.dumps(data, ensure_ascii=False, indent=1, allow_nan=False) + "\n"


def _plain_json(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(key, str) and _plain_json(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_plain_json(item) for item in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


def read_source(source: str, max_age: float = 300) -> str:
    """The text of a config source. Parameter Store and AppConfig are read through Powertools
    parameters, cached for `max_age` seconds (0: read now)."""
    if source.startswith(("ssm:", "appconfig:")):
        try:
            return _read_parameter(source, int(max_age))
        except ConfigError:
            raise
        except Exception as exc:  # boundary: any AWS failure is a config failure, detail to the log
            raise ConfigError(f"could not read config parameter {source}: {type(exc).__name__}") from exc
    path = Path(source)
    if not path.is_absolute() and not path.exists() and "LAMBDA_TASK_ROOT" in os.environ:
        path = Path(os.environ["LAMBDA_TASK_ROOT"]) / source
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        raise ConfigError(f"config file {source} cannot be read") from None


def _read_parameter(source: str, max_age: int) -> str:
    if source.startswith("ssm:"):
        return str(ssm_provider().get(source.removeprefix("ssm:"), max_age=max_age))
    application, environment, profile = appconfig_parts(source)
    value = appconfig_provider(application, environment).get(profile, max_age=max_age)
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def appconfig_parts(source: str) -> tuple[str, str, str]:
    """`appconfig:application/environment/profile` -> its three parts (names or ids)."""
    parts = source.removeprefix("appconfig:").split("/")
    if len(parts) != 3 or not all(parts):
        raise ConfigError(f"{source}: an AppConfig source is appconfig:application/environment/profile")
    return parts[0], parts[1], parts[2]


@functools.cache
def ssm_provider() -> Any:
    """One Powertools Parameter Store provider per instance (it caches values for `max_age`). Its
    client's waits are bounded (`tollway.aws`): the request that finds the TTL passed waits for
    the read."""
    from aws_lambda_powertools.utilities.parameters import SSMProvider

    return SSMProvider(boto_config=client_config())


@functools.cache
def appconfig_provider(application: str, environment: str) -> Any:
    """One Powertools AppConfig provider per application and environment: it keeps the AppConfig
    data session (and its next poll token) across reads. Its client's waits are bounded too."""
    from aws_lambda_powertools.utilities.parameters import AppConfigProvider

    return AppConfigProvider(environment=environment, application=application, boto_config=client_config())


def _apply_env_overrides(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    if resource := os.environ.get("TOLLWAY_RESOURCE"):
        data["resource"] = resource
    auth = dict(data.get("auth") or {})
    for key in ("issuer", "audience", "jwks_url"):
        if value := os.environ.get(f"TOLLWAY_AUTH_{key.upper()}"):
            auth[key] = value
    if auth:
        data["auth"] = auth
    if bus := os.environ.get("TOLLWAY_APPROVAL_EVENT_BUS"):
        data["approvals"] = {**(data.get("approvals") or {}), "event_bus": bus}
    return data
