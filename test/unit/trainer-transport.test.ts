// Where the trainer listens (docs/security.md, "Transport"): a Unix socket in the run directory, in a
// fresh owner-only temp folder when that path is too long for sockaddr_un, loopback TCP on Windows.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { MAX_SOCKET_PATH, chooseTransport } from '../../src/trainer/server';

test('a short run directory holds its own socket', () => {
  assert.deepEqual(chooseTransport('/tmp/r', 'trainer.sock', {}, 'linux'), { socket: '/tmp/r/trainer.sock' });
  assert.deepEqual(chooseTransport('/Users/me/w/.pltrain/runs/x', 'trainer.sock', {}, 'darwin'), { socket: '/Users/me/w/.pltrain/runs/x/trainer.sock' });
});

test('a run directory too deep for sockaddr_un gets its socket in a fresh 0700 folder under the temp directory', () => {
  const deep = path.join('/work', 'a'.repeat(120), 'run');
  const t = chooseTransport(deep, 'trainer.sock', {}, 'linux');
  assert.ok('socket' in t);
  assert.ok(Buffer.byteLength(t.socket) <= MAX_SOCKET_PATH, t.socket);
  assert.equal(path.dirname(path.dirname(t.socket)), os.tmpdir());
  assert.equal(fs.statSync(path.dirname(t.socket)).mode & 0o777, 0o700);
  fs.rmSync(path.dirname(t.socket), { recursive: true });
});

test('Windows, or PLTRAIN_TRANSPORT=tcp, is loopback TCP', () => {
  assert.deepEqual(chooseTransport('C:\\\\w\\\\run', 'trainer.sock', {}, 'win32'), { tcp: true });
  assert.deepEqual(chooseTransport('/tmp/r', 'trainer.sock', { PLTRAIN_TRANSPORT: 'tcp' }, 'linux'), { tcp: true });
});
