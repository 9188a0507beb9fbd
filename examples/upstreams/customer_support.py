"""Demo upstream: a customer-support MCP server with deterministic, PII-laden fake data.

The data deliberately contains emails, phone numbers, IBANs and payment card numbers (Luhn-valid
test cards) next to 16-digit order numbers that are *not* Luhn-valid, so masking features can be
tested for both hits and false positives.

Run: python -m examples.upstreams.customer_support --port 8101
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.mcpserver.prompts.base import AssistantMessage, Message, UserMessage
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field
from starlette.types import ASGIApp

from examples.upstreams import _serve

SERVER_NAME = "customer-support"

CustomerId = Annotated[str, Field(description="Customer identifier, e.g. 'C-1001'.", pattern=r"^C-\d{4}$")]
OrderId = Annotated[str, Field(description="Order identifier, e.g. 'ORD-50001'.", pattern=r"^ORD-\d{5}$")]
Priority = Literal["low", "normal", "high", "urgent"]


class Customer(BaseModel):
    customer_id: str
    name: str
    email: str
    phone: str
    tier: str
    address: str
    card_on_file: str = Field(description="Primary payment card (full number; mask before showing to users).")
    iban: str


class Order(BaseModel):
    order_id: str
    order_number: str = Field(description="16-digit merchant order number (not a card number).")
    placed_on: str
    status: str
    total: float
    currency: str
    payment_card: str


class OrderList(BaseModel):
    customer_id: str
    orders: list[Order]
    total_orders: int


class RefundStatus(BaseModel):
    order_id: str
    status: str
    amount: float
    currency: str
    refund_to_card: str
    contact_email: str
    note: str


class Ticket(BaseModel):
    ticket_id: str
    customer_id: str
    subject: str
    body: str
    priority: Priority
    status: str
    assigned_to: str
    callback_phone: str


CUSTOMERS: dict[str, Customer] = {
    c.customer_id: c
    for c in (
        Customer(
            customer_id="C-1001",
            name="Ada Lovelace",
            email="ada.lovelace@example.com",
            phone="+44 20 7946 0958",
            tier="gold",
            address="12 St James's Square, London SW1Y 4JH, UK",
            card_on_file="4242 4242 4242 4242",
            iban="GB82 WEST 1234 5698 7654 32",
        ),
        Customer(
            customer_id="C-1002",
            name="Grace Hopper",
            email="grace.hopper@example.org",
            phone="+1 (555) 010-4477",
            tier="silver",
            address="1 Navy Yard Ave, Arlington, VA 22202, USA",
            card_on_file="5555-5555-5555-4444",
            iban="DE89370400440532013000",
        ),
        Customer(
            customer_id="C-1003",
            name="Alan Turing",
            email="alan.turing@example.net",
            phone="+1-202-555-0173",
            tier="bronze",
            address="Bletchley Park, Milton Keynes MK3 6EB, UK",
            card_on_file="4000056655665556",
            iban="FR14 2004 1010 0505 0001 3M02 606",
        ),
    )
}

ORDERS: dict[str, list[Order]] = {
    "C-1001": [
        Order(
            order_id="ORD-50001",
            order_number="8350 0012 4417 9926",
            placed_on="2025-01-14",
            status="delivered",
            total=129.99,
            currency="GBP",
            payment_card="4242 4242 4242 4242",
        ),
        Order(
            order_id="ORD-50002",
            order_number="4242 4242 4242 4241",  # looks like a card, fails Luhn
            placed_on="2025-02-03",
            status="refund_requested",
            total=45.50,
            currency="GBP",
            payment_card="4242 4242 4242 4242",
        ),
        Order(
            order_id="ORD-50003",
            order_number="7304221500981123",
            placed_on="2025-03-21",
            status="shipped",
            total=310.00,
            currency="GBP",
            payment_card="4242 4242 4242 4242",
        ),
    ],
    "C-1002": [
        Order(
            order_id="ORD-50004",
            order_number="1234 5678 9012 3456",
            placed_on="2025-02-11",
            status="delivered",
            total=89.00,
            currency="USD",
            payment_card="5555-5555-5555-4444",
        ),
    ],
    "C-1003": [],
}

REFUNDS: dict[str, RefundStatus] = {
    "ORD-50001": RefundStatus(
        order_id="ORD-50001",
        status="none",
        amount=0.0,
        currency="GBP",
        refund_to_card="4242 4242 4242 4242",
        contact_email="ada.lovelace@example.com",
        note="No refund was requested for this order.",
    ),
    "ORD-50002": RefundStatus(
        order_id="ORD-50002",
        status="approved",
        amount=45.50,
        currency="GBP",
        refund_to_card="4242 4242 4242 4242",
        contact_email="ada.lovelace@example.com",
        note="Refund approved; funds arrive in 3-5 business days. Questions: call +44 20 7946 0000.",
    ),
    "ORD-50003": RefundStatus(
        order_id="ORD-50003",
        status="none",
        amount=0.0,
        currency="GBP",
        refund_to_card="4242 4242 4242 4242",
        contact_email="ada.lovelace@example.com",
        note="No refund was requested for this order.",
    ),
    "ORD-50004": RefundStatus(
        order_id="ORD-50004",
        status="pending_review",
        amount=89.00,
        currency="USD",
        refund_to_card="5555-5555-5555-4444",
        contact_email="grace.hopper@example.org",
        note="Waiting for the returned item to reach the warehouse.",
    ),
}

REFUND_POLICY = """# Refund policy

- Refunds are accepted within 30 days of delivery.
- Refunds go back to the original payment card (e.g. 4242 4242 4242 4242).
- Escalations: refunds@example.com or +1-800-555-0199.
- Wire refunds require an IBAN such as GB33 BUKB 2020 1555 5555 55.
"""


def _customer(customer_id: str) -> Customer:
    try:
        return CUSTOMERS[customer_id]
    except KeyError:
        raise ToolError(f"unknown customer {customer_id!r}") from None


def build_server() -> MCPServer:
    server = MCPServer(
        SERVER_NAME,
        version="1.0.0",
        log_level="WARNING",
        instructions="Customer support tools: look up customers and orders, check refunds, open tickets.",
    )
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)

    @server.tool(annotations=read_only)
    def get_customer_profile(customer_id: CustomerId) -> Customer:
        """Return the full profile (contact details, card on file, IBAN) of one customer."""
        return _customer(customer_id)

    @server.tool(annotations=read_only)
    def list_orders(
        customer_id: CustomerId,
        limit: Annotated[int, Field(description="Maximum number of orders to return.", ge=1, le=100)] = 10,
    ) -> OrderList:
        """List a customer's orders, newest last."""
        _customer(customer_id)
        orders = ORDERS.get(customer_id, [])
        return OrderList(customer_id=customer_id, orders=orders[:limit], total_orders=len(orders))

    @server.tool(annotations=read_only)
    def check_refund_status(order_id: OrderId) -> RefundStatus:
        """Return the refund status of an order."""
        try:
            return REFUNDS[order_id]
        except KeyError:
            raise ToolError(f"unknown order {order_id!r}") from None

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=True, open_world_hint=False))
    def create_ticket(
        customer_id: CustomerId,
        subject: Annotated[str, Field(description="One-line summary of the issue.", min_length=1, max_length=200)],
        body: Annotated[str, Field(description="Full description of the issue.", min_length=1)],
        priority: Annotated[Priority, Field(description="Ticket priority.")] = "normal",
    ) -> Ticket:
        """Open a support ticket for a customer."""
        customer = _customer(customer_id)
        # Deterministic id: the same request always yields the same ticket (tests assert on it).
        digest = hashlib.sha256(f"{customer_id}|{subject}|{body}|{priority}".encode()).hexdigest()
        return Ticket(
            ticket_id=f"TCK-{digest[:8].upper()}",
            customer_id=customer_id,
            subject=subject,
            body=body,
            priority=priority,
            status="open",
            assigned_to="support-team@example.com",
            callback_phone=customer.phone,
        )

    @server.resource(
        "support://policies/refunds",
        name="refund_policy",
        title="Refund policy",
        description="The refund policy support agents follow.",
        mime_type="text/markdown",
    )
    def refund_policy() -> str:
        return REFUND_POLICY

    @server.resource(
        "support://customers/{customer_id}",
        name="customer_record",
        title="Customer record",
        description="A customer's profile as JSON.",
        mime_type="application/json",
    )
    def customer_record(customer_id: str) -> str:
        if customer_id not in CUSTOMERS:
            raise ResourceError(f"unknown customer {customer_id!r}")
        return json.dumps(CUSTOMERS[customer_id].model_dump())

    @server.prompt(title="Draft a reply", description="Draft a reply to a customer's latest support request.")
    def draft_reply(
        customer_id: Annotated[str, Field(description="Customer identifier, e.g. 'C-1001'.")],
        tone: Annotated[str, Field(description="friendly, formal or apologetic.")] = "friendly",
    ) -> list[Message]:
        customer = CUSTOMERS.get(customer_id)
        who = f"{customer.name} <{customer.email}>" if customer else customer_id
        return [
            UserMessage(f"Draft a {tone} reply to {who} about their most recent order."),
            AssistantMessage("I will check the order and refund status first, then draft the reply."),
        ]

    return server


def create_app() -> ASGIApp:
    return _serve.streamable_app(build_server())


if __name__ == "__main__":
    _serve.main(create_app, prog="python -m examples.upstreams.customer_support")
