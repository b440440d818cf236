// The metrics panel as the benchmarks drive it: the production panel bundled from the browser
// tests' entry (test/webview-harness/entry.ts, which also exposes its model and charts to the page),
// in headless Chromium, served by the browser-test harness (renderPanelHtml's document and CSP, a
// stand-in for VS Code's `acquireVsCodeApi`). Host messages reach it as `message` events on its
// window, as in VS Code; here they are posted through the DevTools protocol.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { chromium, type Browser, type CDPSession, type Page } from 'playwright-core';
import * as os from 'node:os';
import { buildWebview, startHarnessServer, type HarnessServer } from '../test/webview-harness/server';

export const REPO_ROOT = path.resolve(__dirname, '..');
/** PLTRAIN_BENCH_WEBVIEW_DIR: another build of the harness's panel (e.g. from an older commit) to compare against. */
const OTHER_BUNDLE_DIR = process.env.PLTRAIN_BENCH_WEBVIEW_DIR ? path.resolve(process.env.PLTRAIN_BENCH_WEBVIEW_DIR) : undefined;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

export interface PanelPage {
  page: Page;
  cdp: CDPSession;
  /** Posts a host → webview message, as VS Code's `webview.postMessage` would deliver it (calls need not be awaited in turn: they arrive in order). */
  post(message: unknown): Promise<void>;
  /** Used JS heap after a full garbage collection, in MiB. */
  heapMiB(): Promise<number>;
  /**
   * CPU time (user + system, ms) used so far by the browser's processes (this Node process's
   * descendants, read from /proc): on a loaded machine the wall-clock redraw times stretch with the
   * other processes' load, the CPU a phase used much less, so A/B runs compare by it.
   */
  cpuMs(): number;
  /** Page errors and console errors/warnings seen so far (a benchmark of a broken panel means nothing). */
  problems: string[];
  close(): Promise<void>;
}

/** The panel bundle to load: PLTRAIN_BENCH_WEBVIEW_DIR's, or this checkout's, bundled now into a private folder. */
async function panelBundle(): Promise<{ dir: string; built: boolean }> {
  if (OTHER_BUNDLE_DIR) {
    if (!fs.existsSync(path.join(OTHER_BUNDLE_DIR, 'main.js'))) throw new Error(`no panel bundle (main.js) in ${OTHER_BUNDLE_DIR}`);
    return { dir: OTHER_BUNDLE_DIR, built: false };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plt-bench-panel-'));
  await buildWebview(dir);
  return { dir, built: true };
}

export async function openPanelPage(viewport = { width: 1400, height: 1000 }): Promise<PanelPage> {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM=)`);
  let server: HarnessServer | undefined;
  let browser: Browser | undefined;
  const bundle = await panelBundle();
  const removeBundle = () => bundle.built && fs.rmSync(bundle.dir, { recursive: true, force: true });
  try {
    server = await startHarnessServer(bundle.dir);
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
    const page = await browser.newPage({ viewport });
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
    });
    await page.goto(server.url);
    await page.waitForFunction(() => (window as unknown as { __posted?: { type: string }[] }).__posted?.some((m) => m.type === 'ready'), undefined, { timeout: 30_000 });
    const cdp = await page.context().newCDPSession(page);
    const openServer = server;
    const openBrowser = browser;
    return {
      page,
      cdp,
      problems,
      // One DevTools call with the message as a JSON literal: the page handles calls in the order sent.
      post: async (message) => {
        const r = await cdp.send('Runtime.evaluate', { expression: `window.postMessage(${JSON.stringify(message)}, '*')` });
        if (r.exceptionDetails) throw new Error(`posting to the panel failed: ${r.exceptionDetails.text}`);
      },
      cpuMs: () => descendantCpuMs(process.pid),
      heapMiB: async () => {
        await cdp.send('HeapProfiler.collectGarbage');
        const { usedSize } = await cdp.send('Runtime.getHeapUsage');
        return usedSize / 2 ** 20;
      },
      close: async () => {
        await openBrowser.close();
        await openServer.close();
        removeBundle();
      },
    };
  } catch (e) {
    await browser?.close();
    await server?.close();
    removeBundle();
    throw e;
  }
}

/** Linux clock ticks per second of /proc/<pid>/stat's times (USER_HZ: 100 on every mainstream kernel). */
const USER_HZ = 100;

/** User + system CPU ms of the processes below `root` (not `root` itself); 0 where /proc is not there. */
export function descendantCpuMs(root: number): number {
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return 0;
  }
  const parent = new Map<number, number>();
  const ticks = new Map<number, number>();
  for (const d of entries) {
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      // Fields after the command name (which may hold spaces): state ppid … utime(14) stime(15).
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(d), Number(rest[1]));
      ticks.set(Number(d), Number(rest[11]) + Number(rest[12]));
    } catch {
      // Gone between the listing and the read.
    }
  }
  let total = 0;
  for (const [pid, t] of ticks) {
    for (let p = parent.get(pid); p !== undefined && p > 1; p = parent.get(p)) {
      if (p === root) {
        total += t;
        break;
      }
    }
  }
  return (total * 1000) / USER_HZ;
}

/** Evaluates one of the benchmarks' page scripts (plain JS next to this file; DevTools evaluation is not subject to the panel's CSP). */
export async function installPageScript(page: Page, file: string): Promise<void> {
  await page.evaluate(fs.readFileSync(path.join(__dirname, file), 'utf8'));
}

/** Median and other quantiles (nearest rank) of a sample, rounded for the report. */
export function quantiles(values: readonly number[], qs: Record<string, number>): Record<string, number> {
  const sorted = [...values].sort((a, b) => a - b);
  const out: Record<string, number> = {};
  for (const [name, q] of Object.entries(qs)) {
    out[name] = sorted.length ? round(sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]) : NaN;
  }
  return out;
}

/** Four significant digits: enough for timings, short in the JSON. */
export function round(x: number): number {
  return Number.isFinite(x) ? Number(x.toPrecision(4)) : x;
}

/** Prints the result line the runner (bench/run.ts) collects. */
export function emitResult(result: unknown): void {
  process.stdout.write(`BENCH_RESULT ${JSON.stringify(result)}\n`);
}

export function argValue(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v)) throw new Error(`--${name} needs a number`);
  return v;
}
