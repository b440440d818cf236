// Time series storage for the charts: append-only points with an incremental EMA next to them and a
// hard cap on memory. No DOM; the arrays are handed to chart.js as they are (`parsing: false`).
import { MinMaxPyramid, minMaxThinByX } from './decimate';

/** chart.js's internal point format, so no parsing pass is needed. */
export interface Point {
  x: number;
  y: number;
}

/** Enough to see every feature of a long run; beyond it the history is thinned (see `minMaxThinByX`). */
export const MAX_POINTS_PER_SERIES = 50_000;

/** Largest smoothing weight the slider offers: at 1 the EMA would never move. */
export const MAX_SMOOTHING = 0.99;

/**
 * TensorBoard's debiased exponential moving average: `acc = w·acc + (1−w)·y`, shown as
 * `acc / (1 − wⁿ)` so the first points are not dragged towards zero.
 */
export class Ema {
  private accumulator = 0;
  private count = 0;
  constructor(readonly weight: number) {}

  next(y: number): number {
    this.accumulator = this.weight * this.accumulator + (1 - this.weight) * y;
    this.count++;
    const debias = this.weight === 0 ? 1 : 1 - Math.pow(this.weight, this.count);
    return this.accumulator / debias;
  }
}

/** Keeps only `indices` (sorted) of `arr`, in place, so references held by charts stay valid. */
function compactInPlace<T>(arr: T[], indices: readonly number[]): void {
  for (let k = 0; k < indices.length; k++) arr[k] = arr[indices[k]];
  arr.length = indices.length;
}

/**
 * One quantity over steps: the raw points and their smoothed twin, index-aligned. Steps must not go
 * backwards; a repeated step replaces the previous value (the latest report wins).
 */
export class Series {
  readonly raw: Point[] = [];
  readonly smoothed: Point[] = [];
  /** Draw-time min/max decimation over `raw` and `smoothed` (charts.ts). */
  readonly rawMinMax = new MinMaxPyramid(this.raw);
  readonly smoothedMinMax = new MinMaxPyramid(this.smoothed);
  private ema: Ema;
  /** True once old history has been thinned; exports say so. */
  thinned = false;
  /** Bumped by every change to `raw` or `smoothed`: a chart whose lines' versions are unchanged need not redraw. */
  version = 0;

  constructor(
    smoothing = 0,
    readonly capacity = MAX_POINTS_PER_SERIES,
  ) {
    this.ema = new Ema(smoothing);
  }

  get smoothing(): number {
    return this.ema.weight;
  }

  /**
   * Without smoothing the smoothed line equals the raw one: it shares the raw points instead of
   * copying them (the default view holds half the objects; nothing writes through a smoothed point).
   */
  private get unsmoothed(): boolean {
    return this.ema.weight === 0;
  }

  get last(): Point | undefined {
    return this.raw[this.raw.length - 1];
  }

  append(x: number, y: number): void {
    const last = this.last;
    if (last && x < last.x) return;
    this.version++;
    if (last && x === last.x) {
      // Replace, then rebuild the smoothed tail from scratch: rare, so simplicity wins.
      last.y = y;
      this.rawMinMax.invalidate();
      this.setSmoothing(this.ema.weight);
      return;
    }
    const point = { x, y };
    this.raw.push(point);
    this.smoothed.push(this.unsmoothed ? point : { x, y: this.ema.next(y) });
    if (this.raw.length > this.capacity) {
      // Halve (at most), so thinning (O(n)) happens at most once per capacity/2 appends: amortized O(1).
      const keep = minMaxThinByX(this.raw, Math.floor(this.capacity / 2));
      compactInPlace(this.raw, keep);
      compactInPlace(this.smoothed, keep);
      this.rawMinMax.invalidate();
      this.smoothedMinMax.invalidate();
      this.thinned = true;
    }
  }

  /** Recomputes the smoothed line (from the stored, possibly thinned, history). */
  setSmoothing(weight: number): void {
    this.version++;
    this.ema = new Ema(weight);
    // Refill the same array: charts hold a reference to it.
    this.smoothed.length = 0;
    for (const p of this.raw) this.smoothed.push(this.unsmoothed ? p : { x: p.x, y: this.ema.next(p.y) });
    this.smoothedMinMax.invalidate();
  }

  clear(): void {
    this.version++;
    this.raw.length = 0;
    this.smoothed.length = 0;
    this.rawMinMax.invalidate();
    this.smoothedMinMax.invalidate();
    this.ema = new Ema(this.ema.weight);
    this.thinned = false;
  }
}
