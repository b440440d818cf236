// Reaching a trainer in tests the way the extension host does: its Unix socket (Linux, macOS) or,
// with PLTRAIN_TRANSPORT=tcp (Windows' transport), a loopback TCP port.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { LISTENING_PREFIX, runEndpoint, type TrainerEndpoint } from '../../src/protocol';
import { endpointUrl } from '../../src/extension/run/trainerConnection';

export type { TrainerEndpoint };
export { endpointUrl };

/** The endpoint in the trainer's PLTRAIN_LISTENING line, when `text` holds it. */
export function listeningEndpoint(text: string): (TrainerEndpoint & { runDir: string; runId: string; pid: number }) | undefined {
  const line = text.split('\n').find((l) => l.startsWith(LISTENING_PREFIX));
  if (!line) return undefined;
  const v = JSON.parse(line.slice(LISTENING_PREFIX.length));
  const endpoint = runEndpoint(v);
  if (!endpoint) throw new Error(`listening line without an endpoint: ${line}`);
  return { ...endpoint, runDir: v.runDir, runId: v.runId, pid: v.pid };
}

/** Only the endpoint's own fields (a listening record carries more). */
export const endpointOf = (e: TrainerEndpoint): TrainerEndpoint => ('socket' in e ? { socket: e.socket } : { port: e.port });

/** The Host header the trainer expects from its own client on this endpoint. */
export const hostHeader = (e: TrainerEndpoint) => ('socket' in e ? 'localhost' : `127.0.0.1:${e.port}`);

/** http.request options that reach the endpoint. */
export const httpTarget = (e: TrainerEndpoint): http.RequestOptions => ('socket' in e ? { socketPath: e.socket } : { host: '127.0.0.1', port: e.port });

/** A raw stream socket to the endpoint (a flood's connection). */
export const rawConnect = (e: TrainerEndpoint): net.Socket => ('socket' in e ? net.connect(e.socket) : net.connect(e.port, '127.0.0.1'));

/**
 * The TCP ports a process listens on (Linux): its socket inodes (/proc/<pid>/fd) matched against the
 * LISTEN entries of /proc/net/tcp and tcp6. What code-server's Ports view (and any port scanner) sees.
 */
export function tcpListenPorts(pid: number): number[] {
  const inodes = new Set<string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {
      /* closed meanwhile */
    }
  }
  const ports: number[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try {
      text = fs.readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const row of text.trim().split('\n').slice(1)) {
      const cols = row.trim().split(/\s+/);
      // local_address (hex ip:port), st (0A = LISTEN), …, inode (column 9)
      if (cols[3] === '0A' && inodes.has(cols[9])) ports.push(parseInt(cols[1].split(':')[1], 16));
    }
  }
  return ports;
}
