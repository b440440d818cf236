// The trainer's WebSocket endpoint: a Unix socket in the owner-only run directory on Linux and macOS
// (no TCP port exists, so nothing lists or forwards it, and only the owner can even connect), loopback
// TCP on Windows (docs/security.md, "Transport"). Only the holder of the run token gets in: token
// checked in constant time during the HTTP upgrade (before any WebSocket frame), browsers refused by
// their Origin header, DNS rebinding refused by the Host header, frames capped and schema-checked.
// Nobody without the token can hurt the run either: connections and unfinished handshakes are bounded
// (the oldest unfinished one makes room), a handshake has HANDSHAKE_MS to finish, and refusals are
// counted and logged at most about twice per REFUSAL_WINDOW_MS, never one event each.
import { createHash, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { ClientFrame, ClientFrameSchema, MAX_FRAME_BYTES, TOKEN_HEADER, TRANSPORT_ENV, TrainerEndpoint, TrainerEvent, parseFrame } from '../protocol';
import type { EventLog } from './events';

export interface ServerHooks {
  events: EventLog;
  onCommand(id: string, command: Extract<ClientFrame, { type: 'command' }>['command']): void;
  log(message: string): void;
}

/** Ping interval; a peer that misses a whole interval is dropped. Overridable for tests. */
const HEARTBEAT_MS = Number(process.env.PLTRAIN_HEARTBEAT_MS) || 10_000;
/**
 * A client that reads slower than we stream (a stalled socket, a suspended laptop) is dropped once
 * this much is queued for it, rather than letting memory grow or training wait. It can reconnect and
 * replay from the last seq it holds.
 */
export const MAX_BUFFERED_BYTES = 16 * 1024 * 1024;
/**
 * A replay (a long history, on subscribe) pauses while more than this is queued for the client and
 * goes on once its socket has drained, so it never trips MAX_BUFFERED_BYTES, never holds the whole
 * history in send buffers, and lets training steps run in between.
 */
const REPLAY_HIGH_WATER_BYTES = 4 * 1024 * 1024;
/** Events few enough to send in one go (well under the high water mark), with no pacing. */
const REPLAY_UNPACED_EVENTS = 1000;
/** Connections that have not finished the upgrade; a new one beyond this closes the oldest. */
export const MAX_PENDING_HANDSHAKES = 16;
/** Authenticated clients at once (the extension host needs one per window; see docs/security.md). */
export const MAX_CLIENTS = 8;
/** Time a connection has to complete its upgrade. Overridable for tests. */
const HANDSHAKE_MS = Number(process.env.PLTRAIN_HANDSHAKE_MS) || 3000;
/** Refusals are summed over windows this long: the log gets one line when they start, one per window while they go on. */
export const REFUSAL_WINDOW_MS = Number(process.env.PLTRAIN_REFUSAL_WINDOW_MS) || 10_000;

/**
 * Counts refused connections and logs them at a bounded rate: the first refusal after a quiet window
 * at once (with its detail), the rest as one summary line per window, by kind.
 */
export class RefusalLog {
  /** Every refusal since the server started. */
  total = 0;
  private readonly counts = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly log: (message: string) => void, private readonly windowMs = REFUSAL_WINDOW_MS) {}

  /** `kind`: one of a few fixed reasons (the key of the summary); `detail`: what this one presented. */
  refused(kind: string, detail = ''): void {
    this.total++;
    if (!this.timer) {
      this.log(`refused a connection: ${kind}${detail ? ` (${detail.slice(0, 120)})` : ''}`);
      this.arm();
      return;
    }
    this.counts.set(kind, (this.counts.get(kind) ?? 0) + 1);
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.flush();
  }

  private arm(): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      // A flood that goes on keeps the window armed: one summary per window, however many there were.
      if (this.flush()) this.arm();
    }, this.windowMs);
    this.timer.unref();
  }

  private flush(): boolean {
    if (!this.counts.size) return false;
    const n = [...this.counts.values()].reduce((a, b) => a + b, 0);
    const kinds = [...this.counts].map(([k, c]) => `${k} ×${c}`).join(', ');
    this.counts.clear();
    this.log(`refused ${n} more connection${n === 1 ? '' : 's'} in the last ${Math.round(this.windowMs / 1000)} s (${kinds}); ${this.total} since the run started`);
    return true;
  }
}

/**
 * Longest Unix socket path we bind (sockaddr_un holds 108 bytes on Linux, 104 on macOS, with the NUL).
 * A run directory deeper than that gets its socket in a fresh owner-only folder under the temp dir.
 */
export const MAX_SOCKET_PATH = 100;

/** Where the trainer of `runDir` listens: its socket path, or TCP where Unix sockets are not used. */
export function chooseTransport(runDir: string, socketName: string, env = process.env, platform = process.platform): { socket: string } | { tcp: true } {
  if (platform === 'win32' || env[TRANSPORT_ENV] === 'tcp') return { tcp: true };
  const inRunDir = path.join(runDir, socketName);
  if (Buffer.byteLength(inRunDir) <= MAX_SOCKET_PATH) return { socket: inRunDir };
  // mkdtemp creates the folder 0700: the socket stays the owner's alone.
  return { socket: path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pltrain-')), socketName) };
}

/** Digests first, so the comparison is constant-time whatever the presented token's length. */
export function tokenMatches(presented: string | string[] | undefined, token: string): boolean {
  if (typeof presented !== 'string') return false;
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}

export class TrainerServer {
  private readonly http = http.createServer({ headersTimeout: HANDSHAKE_MS, requestTimeout: HANDSHAKE_MS }, (req, res) => {
    // No information for plain HTTP (a browser probing the port learns nothing).
    this.refusals.refused('plain HTTP request');
    res.writeHead(404, { Connection: 'close' }).end();
  });
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES });
  private heartbeat: NodeJS.Timeout | undefined;
  /** Connections still in their handshake, oldest first, each with the timer that ends it. */
  private readonly pending = new Map<Duplex, NodeJS.Timeout>();
  readonly refusals: RefusalLog;
  port = 0;
  /** The Unix socket's path, when listening on one. */
  socketPath: string | undefined;

  constructor(private readonly token: string, private readonly hooks: ServerHooks) {
    this.refusals = new RefusalLog((m) => hooks.log(m));
    // A hard bound on open sockets (the kernel's backlog holds the rest, costing us no descriptor).
    this.http.maxConnections = MAX_PENDING_HANDSHAKES + MAX_CLIENTS + 4;
    this.http.on('connection', (socket: Duplex) => this.admit(socket));
    this.http.on('upgrade', (req, socket, head) => this.upgrade(req, socket, head));
    this.wss.on('connection', (ws) => this.serve(ws));
  }

  /** Authenticated clients connected now. */
  get clientCount(): number {
    return this.wss.clients.size;
  }

  /** A new connection gets HANDSHAKE_MS to upgrade; beyond MAX_PENDING_HANDSHAKES the oldest unfinished one goes. */
  private admit(socket: Duplex): void {
    if (this.pending.size >= MAX_PENDING_HANDSHAKES) {
      const [oldest] = this.pending.keys();
      this.endPending(oldest);
      oldest.destroy();
      this.refusals.refused('too many unfinished handshakes');
    }
    const timer = setTimeout(() => {
      if (!this.pending.has(socket)) return;
      this.endPending(socket);
      socket.destroy();
      this.refusals.refused('handshake not finished in time');
    }, HANDSHAKE_MS);
    timer.unref();
    this.pending.set(socket, timer);
    socket.once('close', () => this.endPending(socket));
    socket.on('error', () => socket.destroy());
  }

  private endPending(socket: Duplex): void {
    const timer = this.pending.get(socket);
    if (timer) clearTimeout(timer);
    this.pending.delete(socket);
  }

  /** Listens on a Unix socket at `at.socket` (owner-only), or on an ephemeral loopback TCP port. */
  listen(at: { socket: string } | { tcp: true } = { tcp: true }): Promise<TrainerEndpoint> {
    return new Promise((resolve, reject) => {
      this.http.once('error', reject);
      const started = () => {
        this.heartbeat = setInterval(() => this.ping(), HEARTBEAT_MS);
        this.heartbeat.unref();
      };
      if ('socket' in at) {
        removeStaleSocket(at.socket);
        // Bound owner-only (the umask while Node binds it, synchronously), in an owner-only directory.
        const umask = process.umask(0o177);
        try {
          this.http.listen(at.socket, () => {
            fs.chmodSync(at.socket, 0o600);
            this.socketPath = at.socket;
            started();
            resolve({ socket: at.socket });
          });
        } finally {
          process.umask(umask);
        }
      } else {
        this.http.listen(0, '127.0.0.1', () => {
          this.port = (this.http.address() as { port: number }).port;
          started();
          resolve({ port: this.port });
        });
      }
    });
  }

  close(): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.refusals.dispose();
    for (const socket of [...this.pending.keys()]) {
      this.endPending(socket);
      socket.destroy();
    }
    for (const c of this.wss.clients) c.close(1001, 'run ended');
    return new Promise((resolve) => {
      this.wss.close();
      this.http.close(() => {
        // Node removes its socket file on close; a temp folder made for it goes too.
        if (this.socketPath && path.basename(path.dirname(this.socketPath)).startsWith('pltrain-') && path.dirname(path.dirname(this.socketPath)) === os.tmpdir()) {
          fs.rmSync(path.dirname(this.socketPath), { recursive: true, force: true });
        }
        resolve();
      });
      this.http.closeAllConnections?.();
    });
  }

  private upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    this.endPending(socket);
    const refuse = (code: 401 | 403 | 503, kind: string, detail = '') => {
      this.refusals.refused(kind, detail);
      const text = code === 401 ? 'Unauthorized' : code === 403 ? 'Forbidden' : 'Service Unavailable';
      socket.end(`HTTP/1.1 ${code} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      socket.destroy();
    };
    if (!tokenMatches(req.headers[TOKEN_HEADER], this.token)) return refuse(401, 'missing or wrong token');
    // Browsers always send Origin on WebSocket upgrades; our only client (Node in the extension host) sends none.
    if (req.headers.origin !== undefined) return refuse(403, 'browser origin', req.headers.origin);
    // DNS rebinding needs a TCP port; a Unix socket's clients (Node's http) say `localhost`.
    const host = req.headers.host;
    const hostOk = this.socketPath ? host === 'localhost' : host === `127.0.0.1:${this.port}` || host === `localhost:${this.port}`;
    if (!hostOk) return refuse(403, 'foreign Host header', host);
    if (this.wss.clients.size >= MAX_CLIENTS) return refuse(503, `more than ${MAX_CLIENTS} clients`);
    this.wss.handleUpgrade(req, socket, head, (ws) => this.wss.emit('connection', ws, req));
  }

  private serve(ws: WebSocket): void {
    const alive = ws as WebSocket & { isAlive?: boolean };
    alive.isAlive = true;
    ws.on('pong', () => (alive.isAlive = true));
    let unsubscribe: (() => void) | undefined;
    // A newer subscribe (or the close) ends an older replay still in progress.
    let subscription = 0;
    const send = (e: TrainerEvent) => {
      if (ws.readyState !== WebSocket.OPEN) return;
      if (ws.bufferedAmount > MAX_BUFFERED_BYTES) {
        this.hooks.log(`dropped a client that stopped reading (${ws.bufferedAmount} bytes queued)`);
        ws.terminate();
        return;
      }
      ws.send(JSON.stringify(e));
    };
    ws.on('message', (data, isBinary) => {
      // Frames are JSON text (docs/protocol.md); a binary frame is refused whatever it holds.
      if (isBinary) {
        ws.send(JSON.stringify({ type: 'error', message: 'binary frames are refused: frames are JSON text' }));
        return;
      }
      const r = parseFrame(ClientFrameSchema, (data as Buffer).toString('utf8'));
      if (!r.ok) {
        ws.send(JSON.stringify({ type: 'error', message: r.error }));
        return;
      }
      const frame = r.value;
      if (frame.type === 'subscribe') {
        unsubscribe?.();
        unsubscribe = undefined;
        void this.replayThenLive(ws, frame.sinceSeq, ++subscription, () => subscription, send).then((off) => {
          if (off) unsubscribe = off;
        });
      } else {
        this.hooks.onCommand(frame.id, frame.command);
      }
    });
    ws.on('close', () => {
      subscription++;
      unsubscribe?.();
    });
    ws.on('error', (e) => this.hooks.log(`connection error: ${e.message}`));
  }

  /**
   * Sends every event after `sinceSeq`, paced by the client's socket (see REPLAY_HIGH_WATER_BYTES),
   * then goes live with nothing lost in between: the events emitted while the replay waited are
   * taken from the log in the same tick that the live listener is attached. Resolves to that
   * listener's unsubscribe, or undefined when the replay was superseded or the socket closed.
   */
  private async replayThenLive(
    ws: WebSocket,
    sinceSeq: number,
    generation: number,
    current: () => number,
    send: (e: TrainerEvent) => void,
  ): Promise<(() => void) | undefined> {
    const stale = () => current() !== generation || ws.readyState !== WebSocket.OPEN;
    let sent = sinceSeq;
    // A long history is sent paced; then what training emitted meanwhile, until the rest is short.
    let history = this.hooks.events.since(sent);
    while (history.length > REPLAY_UNPACED_EVENTS) {
      for (const e of history) {
        if (stale()) return undefined;
        send(e);
        sent = e.seq;
        while (ws.bufferedAmount > REPLAY_HIGH_WATER_BYTES && !stale()) await new Promise((r) => setTimeout(r, 5));
      }
      history = this.hooks.events.since(sent);
    }
    if (stale()) return undefined;
    // The short rest and the live listener in one tick: nothing can be emitted in between.
    for (const e of history) {
      send(e);
      sent = e.seq;
    }
    return this.hooks.events.subscribe((e) => {
      if (e.seq > sent) {
        send(e);
        sent = e.seq;
      }
    });
  }

  private ping(): void {
    for (const c of this.wss.clients) {
      const ws = c as WebSocket & { isAlive?: boolean };
      if (ws.isAlive === false) {
        ws.terminate(); // missed a whole heartbeat: a dead peer, drop it
        continue;
      }
      ws.isAlive = false;
      ws.ping();
    }
  }
}

/**
 * A socket file left by a killed trainer blocks listen (EADDRINUSE): remove it, but only a socket (a
 * planted file or link of another kind is refused, never removed through).
 */
function removeStaleSocket(file: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`${file} exists and is not a socket; refusing to replace it`);
  fs.rmSync(file);
}
