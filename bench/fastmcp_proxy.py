"""The peer `make bench` measures Tollway against: FastMCP's proxy in front of one upstream, with
one backend client shared by every request (connected once) and a stateless JSON front.
No auth, no quota, no masking. Runs in its own venv (`bench/cpu.py` makes it).

    python bench/fastmcp_proxy.py UPSTREAM_URL PORT
"""

import asyncio
import sys

from fastmcp import Client
from fastmcp.server import create_proxy


async def main(upstream: str, port: int) -> None:
    async with Client(upstream) as backend:  # connected: the proxy reuses this session
        proxy = create_proxy(backend, name="fastmcp-peer")
        await proxy.run_http_async(
            show_banner=False,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            stateless_http=True,
            json_response=True,
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
