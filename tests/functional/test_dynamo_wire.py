"""The stores' DynamoDB client (tollway.store.wire.DynamoWire) over real HTTP: the same answers
as boto3's client for the stores' operations (moto's server), botocore's refusals and their
shapes, retries of throttling, 5xx and broken connections (a scripted server), signed requests,
and boto3 itself where a proxy is configured.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EndpointConnectionError
from tollway.aws import CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS
from tollway.errors import StorageError
from tollway.store.sessions import DynamoSessionStore
from tollway.store.table import DynamoClient
from tollway.store.wire import DynamoWire, MalformedAnswer, _Signer

from tests.conftest import moto_server

TABLE = "WireTable"
KEY = {"pk": {"S": "k#1"}, "sk": {"S": "META"}}


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDWIRE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wire-secret-never-sent")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    for name in (
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "https_proxy",
        "http_proxy",
        "AWS_MAX_ATTEMPTS",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """moto's server holding the table `TABLE` (pk, sk)."""
    with moto_server() as url:
        boto3.client("dynamodb", endpoint_url=url, region_name="eu-west-1").create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        yield url


def _clients(url: str, **config: Any) -> tuple[Any, DynamoWire]:
    session = boto3.session.Session()
    client = session.client("dynamodb", endpoint_url=url, config=Config(**config))
    return client, DynamoWire(client, session.get_credentials())


def _plain(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "ResponseMetadata"}


def test_the_stores_operations_answer_as_boto3s_client_does(moto_url: str) -> None:
    boto, wire = _clients(moto_url)
    assert wire.meta is boto.meta  # not a data operation: the boto3 client's own
    assert wire.describe_table(TableName=TABLE)["Table"]["TableName"] == TABLE

    wire.put_item(
        TableName=TABLE, Item={**KEY, "n": {"N": "1"}, "m": {"M": {"a": {"L": [{"S": "x"}, {"BOOL": True}]}}}}
    )
    update = {
        "TableName": TABLE,
        "Key": KEY,
        "UpdateExpression": "ADD n :one",
        "ExpressionAttributeValues": {":one": {"N": "1"}},
        "ReturnValues": "UPDATED_NEW",
    }
    by_wire, by_boto = wire.update_item(**update), _plain(boto.update_item(**update))
    assert (by_wire["Attributes"], by_boto["Attributes"]) == ({"n": {"N": "2"}}, {"n": {"N": "3"}})
    assert set(by_wire) == set(by_boto)
    assert wire.get_item(TableName=TABLE, Key=KEY) == _plain(boto.get_item(TableName=TABLE, Key=KEY))
    query = {"TableName": TABLE, "KeyConditionExpression": "pk = :pk", "ExpressionAttributeValues": {":pk": KEY["pk"]}}
    assert wire.query(**query) == _plain(boto.query(**query))
    batch = {"RequestItems": {TABLE: {"Keys": [KEY]}}}
    assert wire.batch_get_item(**batch) == _plain(boto.batch_get_item(**batch))
    assert wire.delete_item(TableName=TABLE, Key=KEY) == {}
    assert wire.get_item(TableName=TABLE, Key=KEY) == {}


def test_a_failed_condition_is_botocores_modeled_refusal_with_the_item(moto_url: str) -> None:
    boto, wire = _clients(moto_url)
    wire.put_item(TableName=TABLE, Item={**KEY, "n": {"N": "5"}})
    refused = {
        "TableName": TABLE,
        "Key": KEY,
        "UpdateExpression": "ADD n :one",
        "ConditionExpression": "n < :one",
        "ExpressionAttributeValues": {":one": {"N": "1"}},
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
    }
    with pytest.raises(boto.exceptions.ConditionalCheckFailedException) as caught:
        wire.update_item(**refused)
    with pytest.raises(boto.exceptions.ConditionalCheckFailedException) as expected:
        boto.update_item(**refused)
    for response in (caught.value.response, expected.value.response):
        assert response["Error"]["Code"] == "ConditionalCheckFailedException"
        assert response["Item"] == {**KEY, "n": {"N": "5"}}
    assert caught.value.operation_name == "UpdateItem"


# --- a scripted DynamoDB ------------------------------------------------------------------------
class Scripted:
    """An HTTP server answering each POST with the next (status, body) of `answers` (the last one
    again when they run out); it records each request's headers and body. `close_after_each`:
    it closes every connection after answering, without saying so (a server that drops idle
    keep-alive connections)."""

    def __init__(self, answers: list[tuple[int, Any]], close_after_each: bool = False, reset: bool = False) -> None:
        self.answers = answers
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.fields: list[list[tuple[str, str]]] = []
        """Each request's header fields as they came, repeated names included."""
        self.connections = 0
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                scripted.connections += 1

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                scripted.requests.append((dict(self.headers.items()), body))
                scripted.fields.append(list(self.headers.items()))
                status, answer = scripted.answers[min(len(scripted.requests), len(scripted.answers)) - 1]
                data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/x-amz-json-1.0")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                if close_after_each:
                    self.close_connection = True
                    if reset:  # ended with a TCP reset, not a FIN
                        self.wfile.flush()
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextlib.contextmanager
    def running(self) -> Iterator[Scripted]:
        thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
            thread.join(timeout=5)


THROTTLED = (
    400,
    {"__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException", "message": "slow down"},
)
OK = (200, {"Item": {"pk": {"S": "k#1"}}})


def test_throttling_is_tried_again_until_it_passes() -> None:
    with Scripted([THROTTLED, THROTTLED, OK]).running() as server:
        _, wire = _clients(server.url, retries={"total_max_attempts": 3})
        assert wire.get_item(TableName=TABLE, Key=KEY) == {"Item": {"pk": {"S": "k#1"}}}
    assert len(server.requests) == 3


def test_throttling_past_the_attempts_is_the_refusal_and_the_store_says_it_is_unavailable() -> None:
    with Scripted([THROTTLED]).running() as server:
        _, wire = _clients(server.url, retries={"total_max_attempts": 2})
        with pytest.raises(ClientError) as caught:
            wire.get_item(TableName=TABLE, Key=KEY)
        assert caught.value.response["Error"] == {
            "Code": "ProvisionedThroughputExceededException",
            "Message": "slow down",
        }
        with pytest.raises(StorageError, match=r"^Session store unavailable$"):
            DynamoSessionStore(TABLE, client=wire).get("s-1")
    assert len(server.requests) == 4  # two attempts each


def test_a_5xx_answer_that_is_not_json_is_tried_again_then_refused_by_its_status() -> None:
    with Scripted([(503, b"<html>unavailable</html>")]).running() as server:
        _, wire = _clients(server.url, retries={"total_max_attempts": 2})
        with pytest.raises(ClientError) as caught:
            wire.get_item(TableName=TABLE, Key=KEY)
    assert caught.value.response["Error"]["Code"] == "503"
    assert len(server.requests) == 2


def test_a_refusal_that_is_not_retryable_is_not_tried_again() -> None:
    invalid = (400, {"__type": "com.amazonaws.dynamodb.v20120810#ValidationException", "message": "bad key"})
    with Scripted([invalid]).running() as server:
        _, wire = _clients(server.url, retries={"total_max_attempts": 3})
        with pytest.raises(ClientError) as caught:
            wire.get_item(TableName=TABLE, Key=KEY)
    assert caught.value.response["Error"] == {"Code": "ValidationException", "Message": "bad key"}
    assert len(server.requests) == 1


def test_a_success_that_is_not_json_is_a_parser_error_and_the_store_says_it_is_unavailable() -> None:
    with Scripted([(200, b"<html>hello</html>")]).running() as server:
        _, wire = _clients(server.url, retries={"total_max_attempts": 1})
        with pytest.raises(MalformedAnswer):
            wire.get_item(TableName=TABLE, Key=KEY)
        with pytest.raises(StorageError, match=r"^Session store unavailable$"):
            DynamoSessionStore(TABLE, client=wire).get("s-1")


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
def test_a_connection_closed_while_idle_is_replaced_without_using_an_attempt(reset: bool) -> None:
    with Scripted([OK], close_after_each=True, reset=reset).running() as server:
        _, wire = _clients(server.url, retries={"total_max_attempts": 1})
        for _ in range(3):
            assert wire.get_item(TableName=TABLE, Key=KEY) == {"Item": {"pk": {"S": "k#1"}}}
    assert len(server.requests) == 3
    assert server.connections == 3


def test_an_endpoint_nobody_answers_is_a_connection_error_after_the_attempts(dead_url: str) -> None:
    _, wire = _clients(dead_url, retries={"total_max_attempts": 2})
    with pytest.raises(EndpointConnectionError):
        wire.get_item(TableName=TABLE, Key=KEY)
    with pytest.raises(StorageError, match=r"^Session store unavailable$"):
        DynamoSessionStore(TABLE, client=wire).get("s-1")


@pytest.fixture
def silent_url() -> Iterator[str]:
    """An endpoint that takes connections and never answers (a DynamoDB that hangs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_an_endpoint_that_never_answers_is_a_connection_error_after_the_read_timeout(silent_url: str) -> None:
    _, wire = _clients(silent_url, read_timeout=0.2, connect_timeout=0.2, retries={"total_max_attempts": 2})
    with pytest.raises(EndpointConnectionError):
        wire.get_item(TableName=TABLE, Key=KEY)


def test_the_stores_client_waits_seconds_for_dynamodb_not_botocores_minute() -> None:
    """The bound a hung DynamoDB holds a request (and, for a lone request, the event loop) for."""
    client = DynamoClient().get()
    assert isinstance(client, DynamoWire)
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (
        CONNECT_TIMEOUT_SECONDS,
        READ_TIMEOUT_SECONDS,
    )
    assert client._timeout == READ_TIMEOUT_SECONDS < 60


def test_requests_are_signed_json_with_the_target_and_never_carry_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-1")
    with Scripted([OK]).running() as server:
        _, wire = _clients(server.url)
        wire.get_item(TableName=TABLE, Key=KEY)
        wire.get_item(TableName=TABLE, Key=KEY)  # on the kept-alive connection
    assert server.connections == 1
    headers, body = server.requests[0]
    assert json.loads(body) == {"TableName": TABLE, "Key": KEY}
    assert headers["X-Amz-Target"] == "DynamoDB_20120810.GetItem"
    assert headers["Content-Type"] == "application/x-amz-json-1.0"
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDWIRE/")
    assert "/eu-west-1/dynamodb/aws4_request" in headers["Authorization"]
    assert headers["X-Amz-Security-Token"] == "session-token-1"
    assert all("wire-secret-never-sent" not in value for value in headers.values())
    assert b"wire-secret-never-sent" not in body


def test_the_request_as_sent_is_the_request_as_signed(monkeypatch: pytest.MonkeyPatch) -> None:
    """DynamoDB refuses a request whose Host or signed headers differ from what was signed: the
    signature is computed again from what arrived, and each header comes once."""
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-1")
    with Scripted([OK]).running() as server:
        _, wire = _clients(server.url)
        wire.get_item(TableName=TABLE, Key=KEY)
    headers, body = server.requests[0]
    names = [name.lower() for name, _ in server.fields[0]]
    assert len(names) == len(set(names)), names
    assert headers["Content-Length"] == str(len(body))
    authorization = headers["Authorization"]
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert "host" in signed
    request = AWSRequest(
        method="POST",
        url=f"http://{headers['Host']}/",
        data=body,
        headers={name: value for name, value in headers.items() if name.lower() in signed and name.lower() != "host"},
    )
    request.context["timestamp"] = headers["X-Amz-Date"]
    auth = SigV4Auth(Credentials("AKIDWIRE", "wire-secret-never-sent", "session-token-1"), "dynamodb", "eu-west-1")
    signature = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    assert authorization.endswith(f"Signature={signature}")


@pytest.mark.parametrize("token", [None, "session-token-1"])
def test_the_signature_is_botocores_for_the_same_request_across_days_and_secrets(
    monkeypatch: pytest.MonkeyPatch, token: str | None
) -> None:
    """The wire signs its one request shape itself (`_Signer`, a signing key kept per day and
    secret): at each instant, the headers botocore's SigV4Auth adds to the same request."""
    signer = _Signer("dynamodb.eu-west-1.amazonaws.com", "/", "eu-west-1")
    body = json.dumps({"TableName": TABLE, "Key": KEY}).encode()
    for secret, now in (
        ("secret-1", datetime(2026, 12, 5, 23, 59, 59, tzinfo=UTC)),
        ("secret-1", datetime(2026, 12, 6, 0, 0, 0, tzinfo=UTC)),  # a new day: a new signing key
        ("secret-2", datetime(2026, 12, 6, 0, 0, 1, tzinfo=UTC)),  # rotated credentials: the same
    ):
        credentials = Credentials("AKIDWIRE", secret, token)
        headers = {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.UpdateItem"}
        ours = signer.sign(headers, body, credentials.get_frozen_credentials(), now)
        theirs = AWSRequest(method="POST", url="https://dynamodb.eu-west-1.amazonaws.com/", data=body, headers=headers)
        monkeypatch.setattr("botocore.auth.get_current_datetime", lambda now=now: now.replace(tzinfo=None))
        SigV4Auth(credentials, "dynamodb", "eu-west-1").add_auth(theirs)
        assert ours == dict(theirs.headers.items())


def test_the_shared_client_is_boto3s_own_where_a_proxy_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", "https://dynamodb.eu-west-1.amazonaws.com")
    assert isinstance(DynamoClient().get(), DynamoWire)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert not isinstance(DynamoClient().get(), DynamoWire)
