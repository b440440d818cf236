// Chart frame time on a long run: the real panel bundle in headless Chromium is fed a run whose 16
// experts are measured on every step (16 κ lines, plus μ, L_f, mask and the scalar series) through
// its normal message path (`message` event → schema validation → RunModel → series → chart.js), then
// redraws are timed: live appends at 200 steps/s, zooming and panning over the whole run.
// usage: node --import tsx bench/chart.ts [--points 1000000] [--experts 16] [--batch 5000] [--frames 120] [--profile out.json]
// --profile: records the redraw phases with the DevTools CPU profiler, writes the .cpuprofile and prints
// the functions with the most self time on stderr (where a frame's time goes).
// Prints progress on stderr and one `BENCH_RESULT {json}` line on stdout.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vm from 'node:vm';
import { HostToWebviewSchema } from '../src/protocol';
import { argValue, emitResult, installPageScript, openPanelPage, quantiles, round } from './panel-page';

const points = argValue('points', 1_000_000);
const experts = argValue('experts', 16);
const batch = argValue('batch', 5000);
const frames = argValue('frames', 120);
const liveRate = argValue('rate', 200);
const PAGE_SCRIPT = 'chart.page.js';
const profileIndex = process.argv.indexOf('--profile');
const profileFile = profileIndex >= 0 ? process.argv[profileIndex + 1] : undefined;

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

/** Self time per function (name and source line) of a CPU profile, largest first. */
function topSelfTime(profile: { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] }, count: number): string[] {
  const byNode = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) byNode.set(profile.samples[i], (byNode.get(profile.samples[i]) ?? 0) + profile.timeDeltas[i] / 1000);
  const byFunction = new Map<string, number>();
  let total = 0;
  for (const node of profile.nodes) {
    const ms = byNode.get(node.id) ?? 0;
    total += ms;
    const f = node.callFrame;
    const key = `${f.functionName || '(anonymous)'} ${path.basename(f.url)}:${f.lineNumber + 1}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + ms);
  }
  return [...byFunction.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, count)
    .map(([key, ms]) => `${((100 * ms) / total).toFixed(1).padStart(5)} %  ${ms.toFixed(0).padStart(6)} ms  ${key}`);
}

interface PageRun {
  snapshot(): unknown;
  next(n: number): unknown[];
}
interface FrameSample {
  redraw: number[];
  interval: number[];
  /** CPU ms the browser used over the phase, per frame (less sensitive to other processes' load than the times). */
  cpuPerFrame?: number;
}

/** The page script's generator, run in Node on a sample: its events must be valid protocol messages. */
function validateGenerator(): void {
  const context: { __benchChart?: { createRun(e: number, t: number, id: string): PageRun } } = {};
  vm.runInNewContext(fs.readFileSync(path.join(__dirname, PAGE_SCRIPT), 'utf8'), context);
  const run = context.__benchChart!.createRun(experts, points, 'bench-chart');
  for (const message of [run.snapshot(), { type: 'events', runId: 'bench-chart', events: run.next(50) }]) {
    const r = HostToWebviewSchema.safeParse(message);
    if (!r.success) throw new Error(`the benchmark's events break the protocol: ${r.error.issues[0].path.join('.')}: ${r.error.issues[0].message}`);
  }
}

const log = (m: string) => process.stderr.write(`[chart] ${m}\n`);
const uptimeLoad = () => {
  try {
    return Number(fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
  } catch {
    return NaN;
  }
};

async function main(): Promise<void> {
  validateGenerator();
  const loadAtStart = uptimeLoad();
  const panel = await openPanelPage();
  try {
    const { page } = panel;
    await installPageScript(page, PAGE_SCRIPT);
    const heapEmpty = await panel.heapMiB();
    await page.evaluate(({ e, p }) => (window as any).__benchChart.start(e, p), { e: experts, p: points });
    // Feed the run in quarters, reading the heap after each: it must level off once series are full.
    const heap: { step: number; MiB: number }[] = [{ step: 0, MiB: round(heapEmpty) }];
    const batchToFrame: number[] = [];
    let ingestMs = 0;
    for (let q = 1; q <= 4; q++) {
      const count = Math.round((points * q) / 4) - Math.round((points * (q - 1)) / 4);
      const r = await page.evaluate(({ c, b }) => (window as any).__benchChart.ingest(c, b), { c: count, b: batch });
      ingestMs += r.ms;
      batchToFrame.push(...r.batchToFrame);
      const step = Math.round((points * q) / 4);
      heap.push({ step, MiB: round(await panel.heapMiB()) });
      log(`${step} steps ingested (${(ingestMs / 1000).toFixed(1)} s), heap ${heap.at(-1)!.MiB} MiB`);
    }
    const stored = await page.evaluate(() => (window as any).__benchChart.stored());
    if (stored.step !== points) throw new Error(`the panel is at step ${stored.step}, not ${points}`);
    const modes: Record<string, FrameSample> = {};
    if (profileFile) {
      await panel.cdp.send('Profiler.enable');
      await panel.cdp.send('Profiler.setSamplingInterval', { interval: 200 });
      await panel.cdp.send('Profiler.start');
    }
    for (const kind of ['append', 'zoom', 'pan'] as const) {
      const cpuBefore = panel.cpuMs();
      modes[kind] = await page.evaluate(({ k, f, r }) => (window as any).__benchChart.frames(k, f, r), { k: kind, f: frames, r: liveRate });
      modes[kind].cpuPerFrame = round((panel.cpuMs() - cpuBefore) / frames);
      log(`${kind}: redraw median ${quantiles(modes[kind].redraw, { m: 0.5 }).m} ms, browser CPU ${modes[kind].cpuPerFrame} ms per frame`);
    }
    if (profileFile) {
      const { profile } = await panel.cdp.send('Profiler.stop');
      fs.writeFileSync(profileFile, JSON.stringify(profile));
      log(`profile of the redraws in ${profileFile}; most self time:\n${topSelfTime(profile as never, 40).join('\n')}`);
    }
    const heapAfter = round(await panel.heapMiB());
    if (panel.problems.length) throw new Error(`the panel reported problems: ${panel.problems.slice(0, 3).join(' | ')}`);
    const q = { median: 0.5, p95: 0.95 };
    emitResult({
      series: experts,
      pointsPerSeries: points,
      viewport: '1400x1000',
      stored,
      ingest: { ms: Math.round(ingestMs), stepsPerSec: Math.round(points / (ingestMs / 1000)), batch, batchToFrameMs: quantiles(batchToFrame, { median: 0.5, p95: 0.95, max: 1 }) },
      frames: Object.fromEntries(Object.entries(modes).map(([k, v]) => [k, { redrawMs: quantiles(v.redraw, q), frameIntervalMs: quantiles(v.interval, q), frames: v.redraw.length, browserCpuMsPerFrame: v.cpuPerFrame }])),
      liveRate,
      loadAverage: { start: loadAtStart, end: uptimeLoad() },
      heapMiB: { samples: heap, afterRedraws: heapAfter },
    });
  } finally {
    await panel.close();
  }
}

main().catch((e) => {
  process.stderr.write(`[chart] ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
