"""A token issuer on 127.0.0.1 for the bench: ES256 key, JWKS over real HTTP, minted tokens."""

from __future__ import annotations

import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tollway.auth.dev import jwks, mint, signing_key

AUDIENCE = "http://127.0.0.1:8080/mcp"


class LocalIssuer:
    issuer = "https://issuer.bench.invalid"

    def __init__(self, key_path: Path) -> None:
        self.key = signing_key(key_path)
        document = json.dumps(jwks(self.key)).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(document)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.jwks_url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"

    def __enter__(self) -> LocalIssuer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()

    def token(self) -> str:
        return mint(self.key, subject="bench", tenant="bench", audience=AUDIENCE, issuer=self.issuer)

    def bench_verify(self, runs: int = 2000) -> None:
        """Warm cost of one token validation (JWKS cached, as on a warm Lambda instance)."""
        from tollway.auth.verifier import TokenVerifier
        from tollway.config import AuthConfig

        verifier = TokenVerifier(AuthConfig(issuer=self.issuer, jwks_url=self.jwks_url), AUDIENCE)
        token = self.token()
        verifier.verify(token)  # fetch and cache the JWKS
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            verifier.verify(token)
            times.append((time.perf_counter() - start) * 1000)
        print(f"7. token validation on a warm instance (ES256, JWKS cached), {runs} runs")
        print(f"   p50 {statistics.median(times):.3f} ms  p99 {statistics.quantiles(times, n=100)[98]:.3f} ms")
