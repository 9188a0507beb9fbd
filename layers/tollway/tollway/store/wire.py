"""The stores' DynamoDB requests, without the client's per-request machinery.

The stores build every request in DynamoDB's own JSON (typed attribute values, `{"S": ...}`),
which is the body the service takes. The low-level client (botocore's, what boto3 returns)
spends about 1.3 ms of CPU on each one besides (parameter building, a dozen event hooks, its
retry handler, urllib3, response parsing): a fifth of a fully-on call's CPU on the local server
(py-spy). `DynamoWire` sends the same JSON, signed with SigV4 (`_Signer`), over a kept-alive
HTTP connection, for about a third of the client's CPU per request. It takes the data
operations the stores make (`DATA_OPERATIONS`); anything else (creating tables, paginators,
`meta`) is the client's, unchanged.

What stays botocore's: the endpoint and region (the client's own, so
`AWS_ENDPOINT_URL_DYNAMODB`, FIPS and dual-stack settings hold), the credentials (the session's
provider chain, refreshed as it refreshes them), timeouts and the attempt count (the client's
config, `AWS_MAX_ATTEMPTS`), the CA bundle (`AWS_CA_BUNDLE`, else botocore's), and the modeled
exceptions (`client.exceptions`). Each request is offered to botocore's `before-send` event
first, as botocore's endpoint offers it, so what hooks there (moto's in-process mock, counters
in tests and the bench) sees these requests too. A proxied environment keeps the client
(`DynamoClient`): this sends directly.

Answers: a result is the body's JSON, as the client returns it (no `ResponseMetadata`); a
refusal is the modeled `ClientError` with botocore's response shape (`Error.Code`/`Message`, and
the body's other members: the `Item` of a failed condition); a connection that cannot be made
or breaks is `EndpointConnectionError`, and an answer that is not a JSON object
`MalformedAnswer` (a BotoCoreError, as the stores expect of a failure). Throttling, 5xx answers
and connection failures are tried again, up to the client's attempts (3 unless configured),
after a jittered exponential pause (50 ms doubling, as botocore does for DynamoDB); a kept-alive
connection the server closed while idle (an instance frozen a while) is replaced at once, not
counted as an attempt.
Binary attribute values (`B`, `BS`) are not taken: the stores write none.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import queue
import random
import socket
import ssl
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httptools
from botocore.awsrequest import AWSPreparedRequest, HeadersDict
from botocore.exceptions import BotoCoreError, EndpointConnectionError, NoCredentialsError
from botocore.utils import normalize_url_path

DATA_OPERATIONS = {
    "get_item": "GetItem",
    "put_item": "PutItem",
    "update_item": "UpdateItem",
    "delete_item": "DeleteItem",
    "query": "Query",
    "scan": "Scan",
    "batch_get_item": "BatchGetItem",
    "batch_write_item": "BatchWriteItem",
    "transact_get_items": "TransactGetItems",
    "transact_write_items": "TransactWriteItems",
}
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "TransactionInProgressException",
        "InternalServerError",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
DEFAULT_ATTEMPTS = 3
BACKOFF_BASE_SECONDS = 0.05
IDLE_CONNECTIONS = 10
"""Connections kept open between requests (botocore's default pool size)."""


class MalformedAnswer(BotoCoreError):
    fmt = "DynamoDB answered {operation} with something that is not a JSON object"


class DynamoWire:
    """A DynamoDB client (botocore's) whose data operations go out as signed JSON on kept-alive
    connections (thread-safe: a connection serves one request at a time)."""

    def __init__(self, client: Any, credentials: Any) -> None:
        self._client = client
        self._credentials = credentials
        self._region = client.meta.region_name
        self._url = client.meta.endpoint_url
        self._target = client.meta.service_model.metadata["targetPrefix"]
        self._events = client.meta.events
        parts = urlsplit(self._url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        if parts.port not in (None, 443 if self._https else 80):
            host += f":{parts.port}"  # as SigV4 signs it: the default port is left out
        self._head = f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}\r\n".encode("ascii")
        self._signer = _Signer(host, parts.path or "/", self._region)
        config = client.meta.config
        self._timeout = max(config.connect_timeout, config.read_timeout)
        retries = config.retries or {}
        self._attempts = retries.get("total_max_attempts") or (
            retries["max_attempts"] + 1 if "max_attempts" in retries else DEFAULT_ATTEMPTS
        )
        self._context = (
            ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or _botocore_ca_bundle())
            if self._https
            else None
        )
        self._idle: queue.LifoQueue[_Connection] = queue.LifoQueue(IDLE_CONNECTIONS)

    def __getattr__(self, name: str) -> Any:
        operation = DATA_OPERATIONS.get(name)
        if operation is None:
            return getattr(self._client, name)  # the client's own: meta, exceptions, create_table...
        call = functools.partial(self._call, operation)
        setattr(self, name, call)  # found directly from now on
        return call

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        body = json.dumps(params, separators=(",", ":")).encode()
        for attempt in range(1, self._attempts + 1):
            try:
                status, data = self._send(operation, body)
            except OSError as exc:
                if attempt == self._attempts:
                    raise EndpointConnectionError(endpoint_url=self._url, error=type(exc).__name__) from exc
                _pause(attempt)
                continue
            if status == 200:
                try:
                    answer = json.loads(data) if data else {}
                except ValueError:
                    answer = None
                if not isinstance(answer, dict):
                    raise MalformedAnswer(operation=operation)
                return answer
            refusal = self._refusal(operation, status, data)
            if attempt < self._attempts and (status >= 500 or refusal.response["Error"]["Code"] in RETRYABLE_CODES):
                _pause(attempt)
                continue
            raise refusal
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _send(self, operation: str, body: bytes) -> tuple[int, bytes]:
        if self._credentials is None:
            raise NoCredentialsError()
        fields = self._signer.sign(
            {"Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": f"{self._target}.{operation}"},
            body,
            self._credentials.get_frozen_credentials(),
            datetime.now(UTC),
        )
        fields["Content-Length"] = str(len(body))
        url = self._url + ("" if self._url.endswith("/") else "/")
        prepared = AWSPreparedRequest("POST", url, HeadersDict(fields), body, False)
        _, answer = self._events.emit_until_response(f"before-send.dynamodb.{operation}", request=prepared)
        if answer is not None:  # a hook answered (a mock, a stub): as botocore's endpoint does
            return answer.status_code, answer.content
        head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        request = self._head + head.encode("latin-1") + b"\r\n" + body
        while True:
            connection, reused = self._connection()
            try:
                status, data = connection.exchange(request)
            except _Closed as closed:
                connection.close()
                if reused and not closed.received:
                    continue  # closed by the server while idle: a fresh connection, same attempt
                raise
            except BaseException:
                connection.close()
                raise
            if not connection.keep_alive:
                connection.close()
            else:
                try:
                    self._idle.put_nowait(connection)
                except queue.Full:
                    connection.close()
            return status, data

    def _connection(self) -> tuple[_Connection, bool]:
        try:
            return self._idle.get_nowait(), True
        except queue.Empty:
            pass
        return _Connection(self._host, self._port, self._timeout, self._context), False

    def _refusal(self, operation: str, status: int, data: bytes) -> Exception:
        """botocore's ClientError (the modeled subclass where there is one) for an error answer."""
        try:
            body = json.loads(data) if data else {}
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        code = str(body.get("__type") or status).rpartition("#")[2]
        message = body.get("message") or body.get("Message") or ""
        response = {k: v for k, v in body.items() if k not in ("__type", "message", "Message")}
        response["Error"] = {"Code": code, "Message": str(message)}
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
        return self._client.exceptions.from_code(code)(response, operation)


class _Signer:
    """AWS Signature Version 4 for the wire's one request shape: a POST of JSON to the endpoint's
    path, no query string, the headers given plus `Host` and `X-Amz-Date` (and the session token
    when the credentials have one). The signature is the one botocore's `SigV4Auth` makes for the
    same request at the same instant (tests/functional/test_dynamo_wire.py compares them, with
    and without a session token). Why not that signer: it handles every request shape (it parses the
    URL ten times and keeps headers in an email message), which cost about 0.2 ms of CPU per
    request, a tenth of a fully-on call; this signs one shape and derives the signing key once
    per day and secret."""

    def __init__(self, host: str, path: str, region: str) -> None:
        self._host = host  # as the Host header carries it: the default port left out
        self._path = quote(normalize_url_path(path), safe="/~")
        self._region = region
        self._key: tuple[str, str, bytes] = ("", "", b"")  # (secret, day, signing key)

    def sign(self, headers: dict[str, str], body: bytes, credentials: Any, now: datetime) -> dict[str, str]:
        """`headers` with `X-Amz-Date`, the token and `Authorization` added (a new dict)."""
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        day = stamp[:8]
        signed = {**headers, "X-Amz-Date": stamp}
        if credentials.token:
            signed["X-Amz-Security-Token"] = credentials.token
        canonical = sorted([("host", self._host), *((n.lower(), " ".join(v.split())) for n, v in signed.items())])
        names = ";".join(name for name, _ in canonical)
        request = "\n".join(
            (
                "POST",
                self._path,
                "",
                "".join(f"{name}:{value}\n" for name, value in canonical),
                names,
                hashlib.sha256(body).hexdigest(),
            )
        )
        scope = f"{day}/{self._region}/dynamodb/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(request.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(credentials.secret_key, day), to_sign.encode(), hashlib.sha256)
        signed["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, "
            f"SignedHeaders={names}, Signature={signature.hexdigest()}"
        )
        return signed

    def _signing_key(self, secret: str, day: str) -> bytes:
        cached_secret, cached_day, key = self._key
        if cached_secret != secret or cached_day != day:
            key = f"AWS4{secret}".encode()
            for part in (day, self._region, "dynamodb", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._key = (secret, day, key)  # one tuple, replaced whole: safe across threads
        return key


class _Closed(ConnectionError):
    """The connection ended before the answer did; `received`: how many bytes of it came."""

    def __init__(self, received: int) -> None:
        super().__init__("connection closed before the answer ended")
        self.received = received


class _Connection:
    """One kept-alive connection: a request written in one system call, the answer parsed by
    httptools (llhttp, the parser uvicorn uses). Through http.client, which parses an answer's
    headers with the email package, an `UpdateItem` against the emulator cost 0.46-0.52 ms of
    CPU; through this, 0.32-0.45 ms (one process, side by side, an ad-hoc A/B)."""

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext | None) -> None:
        sock = socket.create_connection((host, port), timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = context.wrap_socket(sock, server_hostname=host) if context is not None else sock
        except BaseException:
            sock.close()
            raise
        self.keep_alive = False
        self._parser: Any = None
        self._status = 0
        self._body: list[bytes] = []
        self._complete = False

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        self._body, self._complete, self.keep_alive = [], False, False
        parser = self._parser = httptools.HttpResponseParser(self)
        received = 0
        try:
            self.sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            raise _Closed(received) from None  # closed by the server before the request went
        while not self._complete:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                raise _Closed(received)
            received += len(data)
            try:
                parser.feed_data(data)
            except httptools.HttpParserError:
                raise ConnectionError("the answer is not HTTP/1.1") from None
        return self._status, b"".join(self._body)

    def close(self) -> None:
        self.sock.close()

    # httptools' callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            return  # an interim answer (100 Continue): the real one follows
        self._status, self.keep_alive = status, self._parser.should_keep_alive()
        self._complete = True


def _pause(attempt: int) -> None:
    time.sleep(random.uniform(0, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1)))


def _botocore_ca_bundle() -> str | None:
    from botocore.httpsession import get_cert_path

    path = get_cert_path(True)
    return path if isinstance(path, str) else None
