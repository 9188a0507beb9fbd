"""The listening sockets `tollway dev` and the demo upstreams bind themselves (to report a port
clash in one line) must say they are TCP: asyncio turns Nagle's algorithm off only on sockets
whose protocol is IPPROTO_TCP, and with it on, every response on a kept-alive connection waits
about 40 ms for the client's delayed ACK (measured: 44 ms against 1.3 ms per call)."""

from __future__ import annotations

import asyncio
import socket

from tollway.dev import listen


def test_the_gateways_listener_is_a_tcp_socket_whose_connections_get_no_delay() -> None:
    listener = listen(0, "gateway", "pick another port")
    port = listener.getsockname()[1]
    listener.listen()

    async def accepted_nodelay() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            value = await asyncio.wait_for(seen, 5)
            writer.close()
            return value

    assert listener.proto == socket.IPPROTO_TCP
    assert asyncio.run(accepted_nodelay()) == 1
