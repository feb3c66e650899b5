"""The front server's client for its own mlx_lm.server: one request per connection.

mlx_lm.server speaks HTTP/1.0 (http.server's default): it closes every connection after its
answer, streamed or not. So a request here is one write (head and body together) on a fresh
connection, and its answer is a status line, headers, and the body up to Content-Length or, for
a stream, up to the close. httpx did the same work at about twice the CPU and system calls per
request (head and body written apart, a pool and its locks for connections never reused), which
showed in benchmarks/serve.py on a small model.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

CONNECT_TIMEOUT_S = 10.0
LINE_LIMIT = 1 << 24  # one SSE event is one line; an event can carry a long answer


class BackendLost(Exception):
    """The backend refused the connection, closed it early, or answered something not HTTP."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    _reader: asyncio.StreamReader
    _writer: asyncio.StreamWriter

    async def body(self) -> bytes:
        try:
            length = self.headers.get("content-length")
            if length is not None:
                return await self._reader.readexactly(int(length))
            return await self._reader.read()
        except (OSError, asyncio.IncompleteReadError, ValueError) as e:
            raise BackendLost(f"the answer was cut short ({type(e).__name__})") from None
        finally:
            self.close()

    async def lines(self) -> AsyncIterator[bytes]:
        """The body line by line, without line ends, until the backend closes."""
        try:
            while line := await self._reader.readline():
                yield line.rstrip(b"\r\n")
        except (OSError, ValueError) as e:
            raise BackendLost(f"the stream broke ({type(e).__name__})") from None
        finally:
            self.close()

    def close(self) -> None:
        self._writer.close()


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int

    async def request(self, method: str, path: str, body: bytes = b"") -> Answer:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=LINE_LIMIT),
                CONNECT_TIMEOUT_S,
            )
        except (OSError, TimeoutError) as e:
            raise BackendLost(f"cannot connect ({type(e).__name__}: {e})") from None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        try:
            writer.write(head.encode() + body)
            status_line = await reader.readline()
            parts = status_line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
                raise ValueError(f"not an HTTP status line: {status_line[:40]!r}")
            status = int(parts[1])
            headers = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
        except (OSError, ValueError) as e:
            writer.close()
            raise BackendLost(f"no answer ({type(e).__name__}: {e})") from None
        return Answer(status, headers, reader, writer)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        answer = await self.request("POST", path, body)
        return answer.status, await answer.body()

    async def get(self, path: str) -> tuple[int, bytes]:
        answer = await self.request("GET", path)
        return answer.status, await answer.body()
