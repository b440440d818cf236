"""A protocol-2 client for tests (websockets 10 asyncio API): connects to a run's Unix socket with its
token, replays and follows the events, sends steering commands and waits for their acks."""
import asyncio
import json
import os

import websockets


class SteerClient:
    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.events = []
        self._changed = asyncio.Event()
        self._n = 0

    async def __aenter__(self):
        with open(os.path.join(self.run_dir, "run.json")) as f:
            info = json.load(f)
        with open(os.path.join(self.run_dir, "token")) as f:
            token = f.read().strip()
        self.ws = await websockets.unix_connect(info["socket"], "ws://localhost/", extra_headers={"x-pltrain-token": token})
        await self.ws.send(json.dumps({"type": "subscribe", "sinceSeq": -1}))
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def __aexit__(self, *exc):
        self._reader.cancel()
        await self.ws.close()

    async def _read(self):
        try:
            async for message in self.ws:
                self.events.append(json.loads(message))
                self._changed.set()
        except websockets.ConnectionClosed:
            self._changed.set()

    async def wait_for(self, predicate, timeout=60):
        async def loop():
            while True:
                for e in self.events:
                    if predicate(e):
                        return e
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(loop(), timeout)

    async def command(self, command, timeout=60):
        """Sends one command and returns its ack."""
        self._n += 1
        cid = f"t{self._n}-{command['kind']}"
        await self.ws.send(json.dumps({"type": "command", "id": cid, "command": command}))
        return await self.wait_for(lambda e: e.get("type") == "ack" and e["commandId"] == cid, timeout)

    def metrics_step(self):
        steps = [e["step"] for e in self.events if e.get("type") == "metrics"]
        return steps[-1] if steps else 0


def read_listening(proc, timeout=120):
    """The PLTRAIN_LISTENING line's JSON from a child's stdout (lines before it are skipped)."""
    import select
    import time

    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if not ready:
            if proc.poll() is not None:
                break
            continue
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
        for line in buf.split(b"\n")[:-1]:
            if line.startswith(b"PLTRAIN_LISTENING "):
                return json.loads(line[len(b"PLTRAIN_LISTENING "):])
    raise AssertionError(f"no PLTRAIN_LISTENING line (exit {proc.poll()}): {buf.decode(errors='replace')[-2000:]}")
