// The extension host's WebSocket client to one trainer (its Unix socket, or loopback TCP on Windows):
// authenticates with the run token, subscribes from the last seq it holds (so a reconnect replays
// without gap or duplicate), and reconnects with backoff while the trainer process lives.
import WebSocket from 'ws';
import {
  ClientFrame,
  MAX_FRAME_BYTES,
  ProtocolError,
  TOKEN_HEADER,
  TrainerEndpoint,
  TrainerEvent,
  TrainerFrameSchema,
  parseFrame,
} from '../../protocol';
import { Signal } from './signal';

export interface ConnectionOptions {
  /** The trainer's Unix socket (Linux, macOS) or loopback TCP port (Windows), from run.json. */
  endpoint: TrainerEndpoint;
  token: string;
  /** Seq of the last event already held; the trainer replays everything after it. */
  lastSeq: () => number;
  /** Whether reconnecting still makes sense (e.g. the trainer pid is alive). */
  shouldReconnect: () => boolean;
  log?: (message: string) => void;
}

/** The WebSocket URL of an endpoint: `ws+unix:` (ws's form for a Unix socket) or loopback `ws:`. */
export function endpointUrl(e: TrainerEndpoint): string {
  return 'socket' in e ? `ws+unix:${e.socket}:/` : `ws://127.0.0.1:${e.port}/`;
}

export class TrainerConnection {
  readonly onEvent = new Signal<TrainerEvent>();
  readonly onProtocolError = new Signal<ProtocolError>();
  readonly onConnectedChange = new Signal<boolean>();
  private ws: WebSocket | undefined;
  private disposed = false;
  private backoffMs = 200;
  private timer: NodeJS.Timeout | undefined;
  private _connected = false;

  constructor(private readonly opts: ConnectionOptions) {}

  get connected(): boolean {
    return this._connected;
  }

  connect(): void {
    if (this.disposed) return;
    const ws = new WebSocket(endpointUrl(this.opts.endpoint), {
      headers: { [TOKEN_HEADER]: this.opts.token },
      maxPayload: 16 * 1024 * 1024, // inbound replay frames can be large; outbound commands are tiny
      handshakeTimeout: 10_000,
    });
    this.ws = ws;
    ws.on('open', () => {
      this.backoffMs = 200;
      this.setConnected(true);
      this.sendRaw({ type: 'subscribe', sinceSeq: this.opts.lastSeq() });
    });
    ws.on('message', (data) => {
      const r = parseFrame(TrainerFrameSchema, data as Buffer, Number.MAX_SAFE_INTEGER);
      if (!r.ok) {
        this.opts.log?.(`ignored a frame from the trainer: ${r.error}`);
        return;
      }
      if (r.value.type === 'error') this.onProtocolError.fire(r.value);
      else this.onEvent.fire(r.value);
    });
    // A socket closed by dispose() still reports its error: the log it would go to may be gone too.
    ws.on('error', (e) => !this.disposed && this.opts.log?.(`trainer connection: ${e.message}`));
    ws.on('close', () => {
      if (this.ws !== ws) return;
      this.ws = undefined;
      this.setConnected(false);
      this.scheduleReconnect();
    });
  }

  /** Sends a client frame; false when not connected (the caller reports the command as failed). */
  send(frame: ClientFrame): boolean {
    return this.sendRaw(frame);
  }

  dispose(): void {
    this.disposed = true;
    if (this.timer) clearTimeout(this.timer);
    this.ws?.removeAllListeners('close');
    this.ws?.close();
    this.ws = undefined;
    this.setConnected(false);
    this.onEvent.clear();
    this.onProtocolError.clear();
    this.onConnectedChange.clear();
  }

  private sendRaw(frame: ClientFrame): boolean {
    const text = JSON.stringify(frame);
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || text.length > MAX_FRAME_BYTES) return false;
    this.ws.send(text);
    return true;
  }

  private scheduleReconnect(): void {
    if (this.disposed || !this.opts.shouldReconnect()) return;
    this.timer = setTimeout(() => this.connect(), this.backoffMs);
    this.backoffMs = Math.min(this.backoffMs * 2, 5000);
  }

  private setConnected(v: boolean): void {
    if (this._connected === v) return;
    this._connected = v;
    this.onConnectedChange.fire(v);
  }
}
