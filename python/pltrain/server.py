"""The trainer's WebSocket endpoint (src/trainer/server.ts): a Unix socket in the owner-only run
directory on Linux and macOS (no TCP port at all), loopback TCP with PLTRAIN_TRANSPORT=tcp. Only the
holder of the run token gets in (compared in constant time during the HTTP upgrade, before any frame),
browsers are refused by their Origin header, DNS rebinding by the Host header, frames are capped and
checked. Nobody without the token can hurt the run either: unfinished handshakes are bounded (the
oldest makes room) and timed out, clients are bounded, refusals are counted and logged at a bounded
rate."""
import asyncio
import collections
import hashlib
import hmac
import http
import math
import os
import shutil
import stat
import struct
import tempfile

import websockets
from websockets.legacy.server import WebSocketServerProtocol

from .protocol import MAX_FRAME_BYTES, TOKEN_HEADER, FrameError, dumps, parse_client_frame

HEARTBEAT_S = (int(os.environ.get("PLTRAIN_HEARTBEAT_MS") or 0) or 10_000) / 1000
HANDSHAKE_S = (int(os.environ.get("PLTRAIN_HANDSHAKE_MS") or 0) or 3000) / 1000
REFUSAL_WINDOW_S = (int(os.environ.get("PLTRAIN_REFUSAL_WINDOW_MS") or 0) or 10_000) / 1000
# A client that reads slower than we stream is dropped once this much is queued for it.
MAX_BUFFERED_BYTES = 16 * 1024 * 1024
MAX_PENDING_HANDSHAKES = 16
MAX_CLIENTS = 8
# sockaddr_un holds 108 bytes on Linux, 104 on macOS: a deeper run directory gets its socket in a
# fresh owner-only folder under the temp dir.
MAX_SOCKET_PATH = 100
TRANSPORT_ENV = "PLTRAIN_TRANSPORT"


def token_matches(presented, token):
    """Digests first, so the comparison is constant-time whatever the presented token's length."""
    if not isinstance(presented, str):
        return False
    return hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), hashlib.sha256(token.encode()).digest())


def choose_transport(run_dir, socket_name, env=os.environ):
    """{'socket': path} or {'tcp': True} (server.ts chooseTransport)."""
    if os.name == "nt" or env.get(TRANSPORT_ENV) == "tcp":
        return {"tcp": True}
    in_run_dir = os.path.join(run_dir, socket_name)
    if len(in_run_dir.encode()) <= MAX_SOCKET_PATH:
        return {"socket": in_run_dir}
    return {"socket": os.path.join(tempfile.mkdtemp(prefix="pltrain-"), socket_name)}  # mkdtemp: 0700


class RefusalLog:
    """Counts refused connections; the first after a quiet window is logged at once with its detail,
    the rest as one summary line per window, by kind (server.ts RefusalLog, the same lines)."""

    def __init__(self, log, window_s=REFUSAL_WINDOW_S):
        self.log, self.window_s = log, window_s
        self.total = 0
        self.counts = collections.OrderedDict()
        self.timer = None

    def refused(self, kind, detail=""):
        self.total += 1
        if self.timer is None:
            self.log(f"refused a connection: {kind}" + (f" ({str(detail)[:120]})" if detail else ""))
            self._arm()
            return
        self.counts[kind] = self.counts.get(kind, 0) + 1

    def _arm(self):
        self.timer = asyncio.get_event_loop().call_later(self.window_s, self._tick)

    def _tick(self):
        self.timer = None
        if self._flush():
            self._arm()  # a flood that goes on keeps the window armed

    def _flush(self):
        if not self.counts:
            return False
        n = sum(self.counts.values())
        kinds = ", ".join(f"{k} ×{c}" for k, c in self.counts.items())
        self.counts.clear()
        self.log(f"refused {n} more connection{'' if n == 1 else 's'} in the last {math.floor(self.window_s + 0.5)} s ({kinds}); {self.total} since the run started")
        return True

    def dispose(self):
        if self.timer:
            self.timer.cancel()
            self.timer = None
        self._flush()


class TrainerServer:
    def __init__(self, token, events, on_command, log):
        self.token, self.events, self.on_command, self.log = token, events, on_command, log
        self.port = 0
        self.socket_path = None
        self._server = None
        self._clients = set()
        self._streams = set()
        self._pending = collections.OrderedDict()  # protocols still in their handshake, oldest first
        self.refusals = None

    async def listen(self, at):
        self.refusals = RefusalLog(self.log)
        server = self

        class Protocol(WebSocketServerProtocol):
            def connection_made(self, transport):
                super().connection_made(transport)
                server._admit(self)

            def connection_lost(self, exc):
                server._pending.pop(self, None)
                super().connection_lost(exc)

        # backlog also bounds how many connections asyncio accepts in one go (each holds a descriptor
        # until its protocol starts): a flood of connects waits in the kernel's queue, not in ours.
        # compression=None is load-bearing: _Stream writes its own uncompressed frames (text_frame).
        options = dict(backlog=MAX_PENDING_HANDSHAKES, process_request=self._check_request, max_size=MAX_FRAME_BYTES, ping_interval=HEARTBEAT_S, ping_timeout=HEARTBEAT_S, close_timeout=1, compression=None, create_protocol=Protocol)
        if "socket" in at:
            path = at["socket"]
            _remove_stale_socket(path)
            old = os.umask(0o177)  # bound owner-only
            try:
                self._server = await websockets.unix_serve(self._serve, path, **options)
            finally:
                os.umask(old)
            os.chmod(path, 0o600)
            self.socket_path = path
            return {"socket": path}
        self._server = await websockets.serve(self._serve, "127.0.0.1", 0, **options)
        self.port = self._server.sockets[0].getsockname()[1]
        return {"port": self.port}

    def _admit(self, protocol):
        if len(self._pending) >= MAX_PENDING_HANDSHAKES:
            oldest, timer = self._pending.popitem(last=False)
            timer.cancel()
            oldest.transport.abort()
            self.refusals.refused("too many unfinished handshakes")
        loop = asyncio.get_event_loop()

        def deadline():
            if self._pending.pop(protocol, None) is not None:
                protocol.transport.abort()
                self.refusals.refused("handshake not finished in time")

        self._pending[protocol] = loop.call_later(HANDSHAKE_S, deadline)

    def _end_pending(self, protocol):
        timer = self._pending.pop(protocol, None)
        if timer:
            timer.cancel()

    async def close(self):
        if self.refusals:
            self.refusals.dispose()
        for protocol in list(self._pending):
            self._end_pending(protocol)
            protocol.transport.abort()
        # The last events (the refusal summary just flushed, the final state) reach every client
        # before its socket closes: listeners run on this loop, then each writer empties its queue.
        await asyncio.sleep(0)
        deadline = asyncio.get_event_loop().time() + 1
        while any(not c.idle() for c in self._streams) and asyncio.get_event_loop().time() < deadline:
            await asyncio.sleep(0.01)
        for ws in list(self._clients):
            await ws.close(1001, "run ended")
        self._server.close()
        await self._server.wait_closed()
        if self.socket_path:
            try:
                os.unlink(self.socket_path)
            except OSError:
                pass
            parent = os.path.dirname(self.socket_path)
            if os.path.basename(parent).startswith("pltrain-") and os.path.dirname(parent) == tempfile.gettempdir():
                shutil.rmtree(parent, ignore_errors=True)

    async def _check_request(self, path, headers):
        # The handshake is over (answered either way): no deadline for it any more.
        for protocol in list(self._pending):
            if getattr(protocol, "request_headers", None) is headers:
                self._end_pending(protocol)
        close = [("Connection", "close")]
        # No information for plain HTTP (a browser probing the socket learns nothing).
        if "upgrade" not in headers.get("Connection", "").lower() or headers.get("Upgrade", "").lower() != "websocket":
            self.refusals.refused("plain HTTP request")
            return http.HTTPStatus.NOT_FOUND, close, b""

        def refuse(status, kind, detail=""):
            self.refusals.refused(kind, detail)
            return status, close, b""

        if not token_matches(headers.get(TOKEN_HEADER), self.token):
            return refuse(http.HTTPStatus.UNAUTHORIZED, "missing or wrong token")
        # Browsers always send Origin on WebSocket upgrades; our only client (the extension host) sends none.
        if "Origin" in headers:
            return refuse(http.HTTPStatus.FORBIDDEN, "browser origin", headers["Origin"])
        # DNS rebinding needs a TCP port; a Unix socket's clients say `localhost`.
        host = headers.get("Host")
        ok = host == "localhost" if self.socket_path else host in (f"127.0.0.1:{self.port}", f"localhost:{self.port}")
        if not ok:
            return refuse(http.HTTPStatus.FORBIDDEN, "foreign Host header", host or "")
        if len(self._clients) >= MAX_CLIENTS:
            return refuse(http.HTTPStatus.SERVICE_UNAVAILABLE, f"more than {MAX_CLIENTS} clients")
        return None

    async def _serve(self, ws, path=None):
        self._end_pending(ws)
        self._clients.add(ws)
        client = _Client(ws, self)
        self._streams.add(client)
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    # Frames are JSON text (docs/protocol.md); a binary frame is refused whatever it holds.
                    await ws.send(dumps({"type": "error", "message": "binary frames are refused: frames are JSON text"}))
                    continue
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
            self._streams.discard(client)
            self._clients.discard(ws)


def _remove_stale_socket(path):
    """A socket left by a killed trainer blocks the bind: remove it, but only a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise RuntimeError(f"{path} exists and is not a socket; refusing to replace it")
    os.unlink(path)


def text_frame(data):
    """One unfragmented, unmasked WebSocket text frame (RFC 6455 §5.2) holding `data` (UTF-8 bytes): what
    websockets' send() writes for a str on the server side, with no compression negotiated."""
    n = len(data)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + data
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + data
    return struct.pack("!BBQ", 0x81, 127, n) + data


class _Stream:
    """One subscription's events for one client, in seq order: the replay of the history after a seq,
    then the live events. The log calls it (on the loop's thread) once per event of a hand-over and
    `end_of_batch()` after the last: once the replay is sent, a client whose socket keeps up gets the
    whole batch in one write, one frame per event, with no task switch; otherwise (replay still going,
    a previous send not finished, bytes still buffered) the batch waits in the queue for the writer
    task, which paces it by the socket's backpressure. A queue beyond MAX_BUFFERED_BYTES drops the
    client (it can reconnect and replay)."""

    def __init__(self, ws, server, since_seq):
        self.ws, self.server = ws, server
        self.queue = collections.deque()
        self.queued = 0
        self.sent = since_seq  # the last seq handed to the socket
        self.live = False  # the replay is sent
        self.sending = False  # the writer task is inside a send
        self.wake = asyncio.Event()
        self.task = None

    def __call__(self, event, text):
        self.queue.append((event["seq"], text))
        self.queued += len(text)
        if self.queued > MAX_BUFFERED_BYTES:
            self.server.log(f"dropped a client that stopped reading ({self.queued} bytes queued)")
            self.ws.transport.abort()

    def end_of_batch(self):
        if not self.queue:
            return
        transport = self.ws.transport
        if self.live and not self.sending and self.ws.open and transport.get_write_buffer_size() == 0:
            frames = []
            for seq, text in self.queue:
                if seq > self.sent:
                    frames.append(text_frame(text.encode("utf-8")))
                    self.sent = seq
            self.queue.clear()
            self.queued = 0
            if frames:
                transport.write(b"".join(frames))
        else:
            self.wake.set()

    def idle(self):
        return self.task is None or self.task.done() or (not self.queue and not self.sending)

    async def write(self, history):
        queue = self.queue
        try:
            self.sending = True
            for e in history:
                await self._send(dumps(e))
                self.sent = e["seq"]
            while True:
                self.sending = True
                while queue:
                    seq, text = queue.popleft()
                    self.queued -= len(text)
                    if seq > self.sent:
                        await self._send(text)
                        self.sent = seq
                self.live = True
                self.sending = False
                self.wake.clear()
                await self.wake.wait()
        except (websockets.ConnectionClosed, asyncio.CancelledError, _StoppedReading):
            pass

    async def _send(self, text):
        # websockets' send waits while the socket's buffer is over its high-water mark, and so does its
        # keepalive ping, which then never times out: a peer that stopped reading with the buffer full
        # would be kept forever. A send that cannot drain within two heartbeats drops it instead.
        try:
            await asyncio.wait_for(self.ws.send(text), 2 * HEARTBEAT_S)
        except asyncio.TimeoutError:
            self.server.log(f"dropped a client that stopped reading (nothing drained for {2 * HEARTBEAT_S:g} s)")
            self.ws.transport.abort()
            raise _StoppedReading() from None


class _StoppedReading(Exception):
    """A client's socket did not drain within two heartbeats (_Stream._send)."""


class _Client:
    """One connection's stream (a _Stream per subscribe; a new subscribe replaces the old)."""

    def __init__(self, ws, server):
        self.ws, self.server = ws, server
        self.stream = None
        self.unsubscribe = None

    def idle(self):
        return self.stream is None or self.stream.idle()

    def subscribe(self, since_seq):
        self.stop()
        stream = self.stream = _Stream(self.ws, self.server, since_seq)
        # The listener and the history snapshot under the log's lock: nothing emitted between.
        history, self.unsubscribe = self.server.events.subscribe_since(since_seq, stream)
        stream.task = asyncio.ensure_future(stream.write(history))

    def stop(self):
        if self.unsubscribe:
            self.unsubscribe()
            self.unsubscribe = None
        if self.stream and self.stream.task:
            self.stream.task.cancel()
        self.stream = None
