"""The trainer's WebSocket endpoint (src/trainer/server.ts): only the holder of the run token gets in
(127.0.0.1 only, token compared in constant time during the HTTP upgrade, before any frame), browsers
are refused by their Origin header, DNS rebinding by the Host header, frames are capped and checked."""
import asyncio
import collections
import hashlib
import hmac
import http
import os

import websockets

from .protocol import MAX_FRAME_BYTES, TOKEN_HEADER, FrameError, dumps, parse_client_frame

HEARTBEAT_S = (int(os.environ.get("PLTRAIN_HEARTBEAT_MS") or 0) or 10_000) / 1000
# A client that reads slower than we stream is dropped once this much is queued for it.
MAX_BUFFERED_BYTES = 16 * 1024 * 1024


def token_matches(presented, token):
    """Digests first, so the comparison is constant-time whatever the presented token's length."""
    if not isinstance(presented, str):
        return False
    return hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), hashlib.sha256(token.encode()).digest())


class TrainerServer:
    def __init__(self, token, events, on_command, log):
        self.token, self.events, self.on_command, self.log = token, events, on_command, log
        self.port = 0
        self._server = None
        self._clients = set()

    async def listen(self):
        self._server = await websockets.serve(
            self._serve,
            "127.0.0.1",
            0,
            process_request=self._check_request,
            max_size=MAX_FRAME_BYTES,
            ping_interval=HEARTBEAT_S,
            ping_timeout=HEARTBEAT_S,
            close_timeout=1,
            compression=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self):
        for ws in list(self._clients):
            await ws.close(1001, "run ended")
        self._server.close()
        await self._server.wait_closed()

    def _check_request(self, path, headers):
        # No information for plain HTTP (a browser probing the port learns nothing).
        if "upgrade" not in headers.get("Connection", "").lower() or headers.get("Upgrade", "").lower() != "websocket":
            return http.HTTPStatus.NOT_FOUND, [("Connection", "close")], b""
        refuse = lambda status, why: (self.log(f"refused a connection: {why}"), (status, [("Connection", "close")], b""))[1]
        if not token_matches(headers.get(TOKEN_HEADER), self.token):
            return refuse(http.HTTPStatus.UNAUTHORIZED, "missing or wrong token")
        # Browsers always send Origin on WebSocket upgrades; our only client (the extension host) sends none.
        if "Origin" in headers:
            return refuse(http.HTTPStatus.FORBIDDEN, f"browser origin {headers['Origin']}")
        host = headers.get("Host")
        if host not in (f"127.0.0.1:{self.port}", f"localhost:{self.port}"):
            return refuse(http.HTTPStatus.FORBIDDEN, f"foreign Host header {host}")
        return None

    async def _serve(self, ws, path=None):
        self._clients.add(ws)
        client = _Client(ws, self)
        try:
            async for message in ws:
                try:
                    frame = parse_client_frame(message)
                except FrameError as e:
                    await ws.send(dumps({"type": "error", "message": str(e)}))
                    continue
                if frame["type"] == "subscribe":
                    client.subscribe(frame["sinceSeq"])
                else:
                    self.on_command(frame["id"], frame["command"])
        except websockets.ConnectionClosed:
            pass
        finally:
            client.stop()
            self._clients.discard(ws)


class _Client:
    """One connection's stream: a replay of the history after a seq, then live events, sent in order
    by one writer task (the socket's own backpressure paces the replay; a live queue beyond
    MAX_BUFFERED_BYTES drops the client, which can reconnect and replay)."""

    def __init__(self, ws, server):
        self.ws, self.server = ws, server
        self.task = None
        self.unsubscribe = None

    def subscribe(self, since_seq):
        self.stop()
        queue = collections.deque()
        wake = asyncio.Event()
        queued = [0]

        def listener(event):
            text = dumps(event)
            queue.append((event["seq"], text))
            queued[0] += len(text)
            wake.set()
            if queued[0] > MAX_BUFFERED_BYTES:
                self.server.log(f"dropped a client that stopped reading ({queued[0]} bytes queued)")
                self.ws.transport.abort()

        # The listener and the history snapshot in one synchronous section: nothing emitted between.
        history, self.unsubscribe = self.server.events.subscribe_since(since_seq, listener)
        self.task = asyncio.ensure_future(self._write(history, queue, wake, queued, since_seq))

    async def _write(self, history, queue, wake, queued, sent):
        try:
            for e in history:
                await self.ws.send(dumps(e))
                sent = e["seq"]
            while True:
                while queue:
                    seq, text = queue.popleft()
                    queued[0] -= len(text)
                    if seq > sent:
                        await self.ws.send(text)
                        sent = seq
                wake.clear()
                await wake.wait()
        except (websockets.ConnectionClosed, asyncio.CancelledError):
            pass

    def stop(self):
        if self.unsubscribe:
            self.unsubscribe()
            self.unsubscribe = None
        if self.task:
            self.task.cancel()
            self.task = None
