"""Demo upstream: a finance MCP server with deterministic, PII-laden fake data.

`run_forecast` streams progress notifications and a log message before its result, so a gateway's
SSE relaying can be tested. Card numbers, IBANs, emails and phone numbers appear in results for
masking work.

Run: python -m examples.upstreams.finance --port 8102
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.prompts.base import Message, UserMessage
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field
from starlette.types import ASGIApp

from examples.upstreams import _serve

SERVER_NAME = "finance"

Region = Literal["EMEA", "AMER", "APAC"]
Currency = Literal["USD", "EUR", "GBP"]
RegionArg = Annotated[Region, Field(description="Sales region.")]

FORECAST_STEPS = ("loading history", "fitting model", "projecting", "formatting")
FORECAST_STEP_DELAY = 0.05  # seconds; keeps the whole call well under 0.5 s

BASE_REVENUE: dict[str, int] = {"EMEA": 1_250_000, "AMER": 2_100_000, "APAC": 980_000}


class Account(BaseModel):
    name: str
    contact_email: str
    contact_phone: str
    iban: str


class RevenueReport(BaseModel):
    region: Region
    quarter: str
    currency: Currency
    revenue: int
    cost: int
    margin_pct: float
    top_accounts: list[Account]


class ForecastPoint(BaseModel):
    month: str
    revenue: int


class Forecast(BaseModel):
    region: Region
    months: int
    currency: Currency
    model: str
    points: list[ForecastPoint]


class TransactionCheck(BaseModel):
    card_number: str
    card_valid: bool
    brand: str
    amount: float
    currency: Currency
    approved: bool
    reason: str
    authorization_code: str | None


class StatementLine(BaseModel):
    date: str
    description: str
    amount: float
    card: str


class Statement(BaseModel):
    account_id: str
    month: str
    holder: str
    holder_email: str
    iban: str
    opening_balance: float
    closing_balance: float
    lines: list[StatementLine]


TOP_ACCOUNTS: dict[str, list[Account]] = {
    "EMEA": [
        Account(
            name="Initech GmbH",
            contact_email="billing@initech.example",
            contact_phone="+49 30 901820",
            iban="DE89 3704 0044 0532 0130 00",
        ),
        Account(
            name="Globex Ltd",
            contact_email="ap@globex.example",
            contact_phone="+44 161 496 0000",
            iban="GB29 NWBK 6016 1331 9268 19",
        ),
    ],
    "AMER": [
        Account(
            name="Acme Corp",
            contact_email="finance@acme.example",
            contact_phone="+1 (312) 555-0142",
            iban="FR76 3000 6000 0112 3456 7890 189",
        ),
    ],
    "APAC": [
        Account(
            name="Umbrella KK",
            contact_email="keiri@umbrella.example",
            contact_phone="+81 3-1234-5678",
            iban="NL91 ABNA 0417 1643 00",
        ),
    ],
}

ACCOUNTS: dict[str, tuple[str, str, str]] = {
    # account_id: (holder, email, iban)
    "ACC-2001": ("Ada Lovelace", "ada.lovelace@example.com", "GB82 WEST 1234 5698 7654 32"),
    "ACC-2002": ("Grace Hopper", "grace.hopper@example.org", "DE89370400440532013000"),
}

LATEST_REPORT = """# Quarterly finance report (2025-Q4)

| region | revenue (USD) |
| --- | --- |
| EMEA | 1,470,000 |
| AMER | 2,320,000 |
| APAC | 1,200,000 |

Prepared by controller@example.com (+1-415-555-0100). Remittance IBAN: GB29 NWBK 6016 1331 9268 19.
"""


def luhn_valid(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    if len(digits) < 12:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_brand(number: str) -> str:
    digits = "".join(c for c in number if c.isdigit())
    if digits.startswith("4"):
        return "visa"
    if digits[:2] in {"51", "52", "53", "54", "55"}:
        return "mastercard"
    if digits[:2] in {"34", "37"}:
        return "amex"
    return "unknown"


def revenue_for(region: Region, quarter: str) -> int:
    year, q = int(quarter[:4]), int(quarter[-1])
    return BASE_REVENUE[region] + (year - 2024) * 120_000 + q * 25_000


def build_server() -> MCPServer:
    server = MCPServer(
        SERVER_NAME,
        version="1.0.0",
        log_level="WARNING",
        instructions="Finance tools: revenue data, forecasts, card transaction checks and statements.",
    )
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @server.tool(annotations=read_only)
    def fetch_revenue_data(
        region: RegionArg,
        quarter: Annotated[
            str, Field(description="Fiscal quarter as YYYY-QN, e.g. '2025-Q1'.", pattern=r"^20\d\d-Q[1-4]$")
        ],
    ) -> RevenueReport:
        """Return revenue, cost and margin for a region and quarter, with the region's top accounts."""
        revenue = revenue_for(region, quarter)
        cost = revenue * 62 // 100
        return RevenueReport(
            region=region,
            quarter=quarter,
            currency="USD",
            revenue=revenue,
            cost=cost,
            margin_pct=round((revenue - cost) * 100 / revenue, 1),
            top_accounts=TOP_ACCOUNTS[region],
        )

    @server.tool(annotations=read_only)
    async def run_forecast(
        region: RegionArg,
        ctx: Context,
        months: Annotated[int, Field(description="How many months to project.", ge=1, le=24)] = 6,
    ) -> Forecast:
        """Project monthly revenue for a region. Reports progress while it runs."""
        total = len(FORECAST_STEPS)
        for step, label in enumerate(FORECAST_STEPS, start=1):
            await asyncio.sleep(FORECAST_STEP_DELAY)
            await ctx.report_progress(step, total, label)
        monthly = revenue_for(region, "2025-Q4") // 3
        points = [
            ForecastPoint(month=f"2026-{m:02d}" if m <= 12 else f"2027-{m - 12:02d}", revenue=monthly + 10_000 * m)
            for m in range(1, months + 1)
        ]
        # Logging is deprecated at 2026-07-28 (delivered there only on logLevel opt-in) but is
        # the only way to exercise notifications/message relaying.
        await ctx.info(f"forecast for {region} ready: {months} months")
        return Forecast(region=region, months=months, currency="USD", model="linear-demo", points=points)

    @server.tool(annotations=read_only)
    def validate_transaction(
        card_number: Annotated[str, Field(description="Payment card number (spaces or dashes allowed).")],
        amount: Annotated[float, Field(description="Transaction amount.", gt=0)],
        currency: Annotated[Currency, Field(description="ISO 4217 currency code.")] = "USD",
    ) -> TransactionCheck:
        """Check a card number (Luhn) and approve or decline a transaction amount."""
        valid = luhn_valid(card_number)
        approved = valid and amount <= 10_000
        if not valid:
            reason = "card number fails the Luhn check"
        elif not approved:
            reason = "amount exceeds the 10000 limit"
        else:
            reason = "approved"
        code = hashlib.sha256(f"{card_number}|{amount}|{currency}".encode()).hexdigest()[:6].upper()
        return TransactionCheck(
            card_number=card_number,
            card_valid=valid,
            brand=card_brand(card_number),
            amount=amount,
            currency=currency,
            approved=approved,
            reason=reason,
            authorization_code=code if approved else None,
        )

    @server.tool(annotations=read_only)
    def download_statement(
        account_id: Annotated[str, Field(description="Account identifier, e.g. 'ACC-2001'.")],
        month: Annotated[str, Field(description="Statement month as YYYY-MM.", pattern=r"^20\d\d-(0[1-9]|1[0-2])$")],
    ) -> Statement:
        """Return the monthly statement of an account, including card transactions."""
        if account_id not in ACCOUNTS:
            raise ToolError(f"unknown account {account_id!r}")
        holder, email, iban = ACCOUNTS[account_id]
        lines = [
            StatementLine(
                date=f"{month}-03",
                description="Coffee Roasters Ltd",
                amount=-4.20,
                card="4242 4242 4242 4242",
            ),
            StatementLine(date=f"{month}-11", description="Salary", amount=3200.00, card=""),
            StatementLine(
                date=f"{month}-19", description="Airline tickets", amount=-612.35, card="5555 5555 5555 4444"
            ),
        ]
        opening = 1000.00
        return Statement(
            account_id=account_id,
            month=month,
            holder=holder,
            holder_email=email,
            iban=iban,
            opening_balance=opening,
            closing_balance=round(opening + sum(line.amount for line in lines), 2),
            lines=lines,
        )

    @server.resource(
        "finance://reports/latest",
        name="latest_report",
        title="Latest quarterly report",
        description="Revenue per region for the latest closed quarter.",
        mime_type="text/markdown",
    )
    def latest_report() -> str:
        return LATEST_REPORT

    @server.prompt(title="Explain variance", description="Explain the revenue variance of a region.")
    def explain_variance(region: Annotated[str, Field(description="EMEA, AMER or APAC.")]) -> list[Message]:
        return [
            UserMessage(
                f"Compare {region} revenue for 2025-Q3 and 2025-Q4 using fetch_revenue_data and explain the "
                "variance in three bullet points."
            )
        ]

    return server


def create_app() -> ASGIApp:
    return _serve.streamable_app(build_server())


if __name__ == "__main__":
    _serve.main(create_app, prog="python -m examples.upstreams.finance")
