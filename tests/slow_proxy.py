"""A TCP proxy on loopback that holds every chunk a client sends for a while before passing it on.

Bad luck on the network, not a fake: the bytes are the real server's (TLS passes through untouched),
they only arrive late, as they do behind a loaded API server or a congested link. Every request on a
kept-alive connection is delayed too, not only a connection's first.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator


class SlowProxy:
    """Forwards 127.0.0.1:<port> to `upstream`, each chunk from the client `delay_s` late."""

    def __init__(self, upstream_host: str, upstream_port: int, delay_s: float) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay_s = delay_s
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            self._conns.discard(task)
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay_s: float) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    await asyncio.sleep(delay_s)
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_w, self.delay_s), pipe(up_r, writer, 0.0))
        finally:
            for w in (writer, up_w):
                w.close()
                with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                    await w.wait_closed()
            self._conns.discard(task)

    def __enter__(self) -> SlowProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for t in list(self._conns):
                t.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@contextlib.contextmanager
def slow(upstream_host: str, upstream_port: int, delay_s: float) -> Iterator[SlowProxy]:
    with SlowProxy(upstream_host, upstream_port, delay_s) as p:
        yield p
