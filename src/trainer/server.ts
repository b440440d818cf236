// The trainer's WebSocket endpoint. Only the holder of the run token gets in: 127.0.0.1 only, token
// checked in constant time during the HTTP upgrade (before any WebSocket frame), browsers refused by
// their Origin header, DNS rebinding refused by the Host header, frames capped and schema-checked.
import { createHash, timingSafeEqual } from 'node:crypto';
import * as http from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import { ClientFrame, ClientFrameSchema, MAX_FRAME_BYTES, TOKEN_HEADER, TrainerEvent, parseFrame } from '../protocol';
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

/** Digests first, so the comparison is constant-time whatever the presented token's length. */
export function tokenMatches(presented: string | string[] | undefined, token: string): boolean {
  if (typeof presented !== 'string') return false;
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}

export class TrainerServer {
  private readonly http = http.createServer((_req, res) => {
    // No information for plain HTTP (a browser probing the port learns nothing).
    res.writeHead(404).end();
  });
  private readonly wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES });
  private heartbeat: NodeJS.Timeout | undefined;
  port = 0;

  constructor(private readonly token: string, private readonly hooks: ServerHooks) {
    this.http.on('upgrade', (req, socket, head) => this.upgrade(req, socket, head));
    this.wss.on('connection', (ws) => this.serve(ws));
  }

  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.http.once('error', reject);
      this.http.listen(0, '127.0.0.1', () => {
        this.port = (this.http.address() as { port: number }).port;
        this.heartbeat = setInterval(() => this.ping(), HEARTBEAT_MS);
        this.heartbeat.unref();
        resolve(this.port);
      });
    });
  }

  close(): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    for (const c of this.wss.clients) c.close(1001, 'run ended');
    return new Promise((resolve) => {
      this.wss.close();
      this.http.close(() => resolve());
      this.http.closeAllConnections?.();
    });
  }

  private upgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const refuse = (code: 401 | 403, why: string) => {
      this.hooks.log(`refused a connection: ${why}`);
      socket.end(`HTTP/1.1 ${code} ${code === 401 ? 'Unauthorized' : 'Forbidden'}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      socket.destroy();
    };
    if (!tokenMatches(req.headers[TOKEN_HEADER], this.token)) return refuse(401, 'missing or wrong token');
    // Browsers always send Origin on WebSocket upgrades; our only client (Node in the extension host) sends none.
    if (req.headers.origin !== undefined) return refuse(403, `browser origin ${req.headers.origin}`);
    const host = req.headers.host;
    if (host !== `127.0.0.1:${this.port}` && host !== `localhost:${this.port}`) return refuse(403, `foreign Host header ${host}`);
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
      const r = parseFrame(ClientFrameSchema, isBinary ? (data as Buffer) : (data as Buffer).toString('utf8'));
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
