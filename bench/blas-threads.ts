// OpenBLAS sgemm through the native addon at 1 and 2 threads, per product shape: the figures behind
// TWO_THREADS_MIN_MACS (src/trainer/engine/native.ts), which gives a product a second thread by size.
// Shapes: the reference MoE step's products (forward, both backward products, the probe's rows) and
// squares from 64 to 1024. Each timing is the median of alternating 1-thread / 2-thread rounds, so both
// see the same load.
// usage: node --import tsx bench/blas-threads.ts [--rounds 7]
// Prints progress on stderr and one `BENCH_RESULT {json}` line on stdout.
import * as os from 'node:os';
import { TWO_THREADS_MIN_MACS, loadNativeBlas } from '../src/trainer/engine/native';
import { argValue, emitResult, round } from './panel-page';

process.env.PLTRAIN_BLAS_THREADS = '1'; // the raw addon, thread count set here
const rounds = argValue('rounds', 7);
const log = (m: string) => process.stderr.write(`[blas-threads] ${m}\n`);

const SHAPES: { name: string; m: number; n: number; k: number }[] = [
  { name: 'MoE layer-2 forward 128×10×256', m: 128, n: 10, k: 256 },
  { name: 'MoE probe forward 16×256×784', m: 16, n: 256, k: 784 },
  { name: 'square 64', m: 64, n: 64, k: 64 },
  { name: 'square 128', m: 128, n: 128, k: 128 },
  { name: 'MoE forward 128×256×784', m: 128, n: 256, k: 784 },
  { name: 'MoE dW 784×256×128', m: 784, n: 256, k: 128 },
  { name: 'MoE dX 128×784×256', m: 128, n: 784, k: 256 },
  { name: 'square 256', m: 256, n: 256, k: 256 },
  { name: 'batch 512 forward 512×256×784', m: 512, n: 256, k: 784 },
  { name: 'square 512', m: 512, n: 512, k: 512 },
  { name: 'square 1024', m: 1024, n: 1024, k: 1024 },
];

function main(): void {
  const { blas, note } = loadNativeBlas();
  if (!blas) {
    emitResult({ skipped: note });
    return;
  }
  const rows = [];
  for (const s of SHAPES) {
    const a = new Float32Array(s.m * s.k).map(() => Math.random() - 0.5);
    const b = new Float32Array(s.k * s.n).map(() => Math.random() - 0.5);
    const c = new Float32Array(s.m * s.n);
    const macs = s.m * s.n * s.k;
    // Enough repetitions per timing for ~20 ms of work at ~20 GFLOP/s.
    const reps = Math.max(1, Math.round(2e8 / (2 * macs)));
    const time = (threads: number) => {
      blas.setThreads(threads);
      blas.gemm(a, b, c, 1, s.m, s.n, s.k, false, false, 0, 0, null, false);
      const t0 = performance.now();
      for (let r = 0; r < reps; r++) blas.gemm(a, b, c, 1, s.m, s.n, s.k, false, false, 0, 0, null, false);
      return ((performance.now() - t0) / reps) * 1000;
    };
    const one: number[] = [];
    const two: number[] = [];
    for (let r = 0; r < rounds; r++) {
      one.push(time(1));
      two.push(time(2));
    }
    const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
    const us1 = median(one);
    const us2 = median(two);
    const row = { shape: s.name, macs, us1Thread: round(us1), us2Threads: round(us2), speedup2: round(us1 / us2), chosen: macs >= TWO_THREADS_MIN_MACS ? 2 : 1 };
    log(`${s.name.padEnd(34)} ${(macs / 1e6).toFixed(1).padStart(7)} M MAC  1 thread ${us1.toFixed(0).padStart(7)} µs  2 threads ${us2.toFixed(0).padStart(7)} µs  ×${(us1 / us2).toFixed(2)}  chosen ${row.chosen}`);
    rows.push(row);
  }
  blas.setThreads(1);
  emitResult({ cores: os.cpus().length, loadAverage: os.loadavg().map((x) => round(x)), twoThreadsMinMacs: TWO_THREADS_MIN_MACS, info: blas.info(), rows });
}

main();
