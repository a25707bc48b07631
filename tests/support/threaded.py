"""A small aiohttp server on a thread of the test process, with its own event loop: the token server, the
recording proxy, the workload API and the benchmark's counting proxy are each one of these. No child process,
so what it records is in the test's memory at once; `stop()` ends the loop and joins the thread."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path


class ThreadedApp:
    """Subclasses build the application in `make_app()` (on the server's loop, so they may open client sessions
    there) and close what they opened in `close()`, which runs before the server's own clean-up."""

    name = "threaded app"

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner = None

    async def make_app(self):
        raise NotImplementedError

    async def close(self) -> None:
        """Runs on the server's loop when it stops, before the site closes: end in-flight work early here."""

    def serve(self, address: int | Path, timeout: float = 10.0) -> None:
        """Serves the application on a loopback port, or on a unix socket at a path, returning once it listens."""
        where = f"127.0.0.1:{address}" if isinstance(address, int) else str(address)
        started = threading.Event()
        failure: list[BaseException] = []
        loop = self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start(address))
            except BaseException as error:  # noqa: BLE001 - raised by serve() in the caller's thread
                failure.append(error)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._stop())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"{self.name} {where}", daemon=True)
        self._thread.start()
        if not started.wait(timeout) or failure:
            self.stop()
            raise RuntimeError(f"{self.name} on {where} did not start: {failure[0] if failure else 'timed out'!r}")

    async def _start(self, address: int | Path) -> None:
        from aiohttp import web

        self._runner = web.AppRunner(await self.make_app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        if isinstance(address, int):
            await web.TCPSite(self._runner, "127.0.0.1", address).start()
        else:
            await web.UnixSite(self._runner, str(address)).start()

    async def _stop(self) -> None:
        try:
            await self.close()
        finally:
            if self._runner is not None:
                await self._runner.cleanup()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:  # queued even if the loop has not reached run_forever yet
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:  # closed: the thread has finished
            pass
        thread.join(timeout=20)
        if thread.is_alive():
            raise RuntimeError(f"{thread.name} did not stop")
