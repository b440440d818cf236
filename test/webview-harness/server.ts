// Serves the panel to a real browser the way VS Code would: the document is `renderPanelHtml`'s
// output (same CSP meta tag, same nonce rules), the bundle comes from a freshly built
// dist/webview, and the harness script (fake `acquireVsCodeApi`) plus a dark theme are injected
// right after the CSP, so they are subject to it like everything else.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import * as esbuild from 'esbuild';
import { renderPanelHtml } from '../../src/protocol/panelDocument';

const harnessDir = __dirname;
const repoRoot = path.resolve(__dirname, '..', '..');

const CONTENT_TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
  '.html': 'text/html; charset=utf-8',
};

/**
 * Bundles the panel with the options scripts/build.mjs uses for the webview, into `outDir`, from the
 * harness's entry (entry.ts: the production panel, its model and charts readable by the tests).
 * (A private output folder: other test files may be running the trainer from dist/ meanwhile.)
 */
export async function buildWebview(outDir: string): Promise<void> {
  await esbuild.build({
    absWorkingDir: repoRoot,
    entryPoints: { main: 'test/webview-harness/entry.ts' },
    outdir: outDir,
    bundle: true,
    sourcemap: true,
    legalComments: 'none',
    platform: 'browser',
    format: 'iife',
    target: 'chrome110',
    loader: { '.css': 'css' },
    logLevel: 'silent',
  });
}

export interface HarnessServer {
  /** The panel page. */
  url: string;
  origin: string;
  close(): Promise<void>;
}

export async function startHarnessServer(webviewDir: string): Promise<HarnessServer> {
  let origin = '';
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', origin || 'http://127.0.0.1');
    const send = (status: number, type: string, body: string | Buffer) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (url.pathname === '/' || url.pathname === '/index.html') {
      send(200, CONTENT_TYPES['.html'], panelPage(origin));
      return;
    }
    if (url.pathname === '/favicon.ico') {
      // Browsers ask for it; VS Code webviews never do.
      send(204, 'image/x-icon', '');
      return;
    }
    const file = resolveStatic(url.pathname, webviewDir);
    if (!file || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      send(404, 'text/plain', 'not found');
      return;
    }
    send(200, CONTENT_TYPES[path.extname(file)] ?? 'application/octet-stream', fs.readFileSync(file));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: `${origin}/`,
    origin,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Maps `/dist/webview/x` and `/harness/x` to files, refusing anything that escapes its folder. */
function resolveStatic(pathname: string, webviewDir: string): string | undefined {
  const roots: [string, string][] = [
    ['/dist/webview/', webviewDir],
    ['/harness/', harnessDir],
  ];
  for (const [prefix, dir] of roots) {
    if (!pathname.startsWith(prefix)) continue;
    const file = path.resolve(dir, decodeURIComponent(pathname.slice(prefix.length)));
    return file.startsWith(dir + path.sep) ? file : undefined;
  }
  return undefined;
}

function panelPage(origin: string): string {
  const nonce = randomBytes(16).toString('base64');
  const html = renderPanelHtml({
    cspSource: origin,
    nonce,
    scriptUri: `${origin}/dist/webview/main.js`,
    styleUri: `${origin}/dist/webview/main.css`,
    title: 'PL Training',
  });
  const cspMeta = /<meta http-equiv="Content-Security-Policy"[^>]*>/;
  if (!cspMeta.test(html)) throw new Error('renderPanelHtml produced no CSP meta tag');
  const injected = html
    .replace(cspMeta, (meta) => `${meta}\n  <link rel="stylesheet" href="${origin}/harness/theme-dark.css">\n  <script nonce="${nonce}" src="${origin}/harness/harness.js"></script>`)
    // VS Code marks the theme kind on <body>.
    .replace('<body>', '<body class="vscode-dark" data-vscode-theme-kind="vscode-dark">');
  return injected;
}
