"""uvicorn's httptools protocol with one ``write`` per response instead of two.

uvicorn writes a response's status line and headers, then its body, as two transport writes;
over TLS that is two records and, on an idle socket, two ``write(2)`` calls, each waking the
client. For the KMS's small JSON answers the second write costs about as much as the work of the
request. :class:`CoalescingHttpProtocol` hands uvicorn a transport that gathers the writes of one
event-loop step and passes them on together at the end of it (or at once, before ``close``).
Everything else is delegated unchanged, and flow control still acts on the real transport.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["http_protocol"]


class _CoalescingTransport:
    """Delegates to ``transport``, but joins the writes made in one event-loop step."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; it leaves with the other writes of this step."""
        self._pending.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def writelines(self, chunks: Any) -> None:
        """Queue several chunks."""
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        self._scheduled = False
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        """Send what is queued, then close."""
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def http_protocol() -> type[asyncio.Protocol] | str:
    """The protocol class for ``uvicorn.Config(http=...)`` (``"auto"`` without httptools)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
        return "auto"

    class CoalescingHttpProtocol(HttpToolsProtocol):
        """:class:`HttpToolsProtocol` writing each response in one piece."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            coalescing: Any = _CoalescingTransport(transport, self.loop)
            self.transport = coalescing

    return CoalescingHttpProtocol
