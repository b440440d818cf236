// Bounds on what the charts hold and draw (no DOM): `minMaxThinByX` thins the stored history, however
// long the run; `MinMaxPyramid` decimates what is drawn, per frame, in time independent of its length.
import type { Point } from './series';

/**
 * Indices to keep when thinning `points` (x non-decreasing) to at most `maxPoints`: the first and last
 * point, and the minimum and maximum y of each of `(maxPoints − 2) / 2` buckets of equal *x width*, in
 * x order. Min/max keeps every spike; equal x widths keep the density uniform over the whole run when
 * the history is thinned again and again (equal index counts would thin old, already thinned stretches
 * once more each time, until the start of a long run is a handful of points).
 */
export function minMaxThinByX(points: readonly Point[], maxPoints: number): number[] {
  const n = points.length;
  if (n <= maxPoints) return points.map((_, i) => i);
  if (maxPoints < 4) throw new RangeError('maxPoints must be at least 4');
  const buckets = Math.floor((maxPoints - 2) / 2);
  const x0 = points[0].x;
  const span = points[n - 1].x - x0;
  // Without an x extent (all x equal, or not finite) the position in the array stands in for x.
  const byIndex = !(span > 0) || !Number.isFinite(span);
  const bucketOf = byIndex ? (i: number) => Math.floor(((i - 1) * buckets) / (n - 2)) : (i: number) => Math.min(buckets - 1, Math.floor(((points[i].x - x0) / span) * buckets));
  const keep: number[] = [0];
  let i = 1;
  while (i < n - 1) {
    const bucket = bucketOf(i);
    let lo = i;
    let hi = i;
    for (i++; i < n - 1 && bucketOf(i) === bucket; i++) {
      if (points[i].y < points[lo].y) lo = i;
      if (points[i].y > points[hi].y) hi = i;
    }
    if (lo === hi) keep.push(lo);
    else keep.push(Math.min(lo, hi), Math.max(lo, hi));
  }
  keep.push(n - 1);
  return keep;
}

/** Index of the first point with x ≥ `x` (points sorted by x). */
export function lowerBoundX(points: readonly Point[], x: number): number {
  let lo = 0;
  let hi = points.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (points[mid].x < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Index of the first point with x > `x` (points sorted by x). */
export function upperBoundX(points: readonly Point[], x: number): number {
  let lo = 0;
  let hi = points.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (points[mid].x <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * log2 of the block size that draws `count` points at `columns` pixel columns: the largest power of
 * two that still gives at least columns/2 blocks, so a block spans at most two columns (≥ 1).
 */
export function decimationShift(count: number, columns: number): number {
  return Math.max(1, Math.floor(Math.log2((2 * count) / columns)));
}

/**
 * Min/max decimation for drawing, in time independent of how many points are stored: level L holds,
 * for each block of 2^(L+1) consecutive points, the indices of its lowest and highest y. A frame
 * draws a range of n points at `columns` pixels from the level whose blocks are at most two pixels
 * wide: 1–2 points per pixel column, every extreme kept, whatever n is. Appended points are indexed lazily
 * (O(log n) each); any other change to the array (thinning, a replaced value, a refill, clearing)
 * must be reported with `invalidate()`, and the next use rebuilds (O(n), rare).
 */
export class MinMaxPyramid {
  private levels: { lo: number[]; hi: number[] }[] = [];
  private indexed = 0;
  private stale = false;
  /**
   * Where the last decimation can be resumed: with the same start and block size, its output up to
   * `block` stays valid while points are only appended, so a live line costs only its newest blocks.
   */
  private resume: { start: number; shift: number; block: number; length: number; last: number; previous: number } | undefined;
  /**
   * The indexed points' coordinates, contiguous (`px[i]`, `py[i]` = `points[i].x`, `.y`), filled as they
   * are indexed: decimating a zoomed or panned range reads these, not the scattered point objects.
   */
  private px = new Float64Array(1024);
  private py = new Float64Array(1024);
  /** Index in `points` of the output's last point. */
  private lastIndex = -1;
  /** What `decimate` returns, refilled by each call. */
  private readonly output: Point[] = [];
  /**
   * The output's coordinates, contiguous (`xs[i]`, `ys[i]` = `output[i].x`, `.y`): drawing reads these
   * instead of the point objects, which lie scattered over the heap (a cache miss per point).
   */
  private xs = new Float64Array(1024);
  private ys = new Float64Array(1024);

  /** The coordinates of the array the last `decimate` returned (valid until the next call). */
  get outputCoordinates(): { xs: Float64Array; ys: Float64Array } {
    return { xs: this.xs, ys: this.ys };
  }

  /**
   * Appends `points[i]` to the output (at `count`), dropping the previous point when it sits between two
   * of equal y: it adds nothing to the line (and stepped lines, like the mask's, are mostly flat). The
   * output array is overwritten in place and cut to `count` at the end of `decimate`, not emptied first:
   * emptying drops its backing store, and refilling a thousand points regrows it a dozen times a frame.
   */
  private put(i: number): void {
    const out = this.output;
    const n = this.count;
    const y = this.py[i];
    this.lastIndex = i;
    if (n >= 2 && this.ys[n - 1] === y && this.ys[n - 2] === y) {
      out[n - 1] = this.points[i];
      this.xs[n - 1] = this.px[i];
      return;
    }
    if (n >= this.xs.length) {
      const xs = new Float64Array(2 * this.xs.length);
      const ys = new Float64Array(2 * this.ys.length);
      xs.set(this.xs);
      ys.set(this.ys);
      this.xs = xs;
      this.ys = ys;
    }
    out[n] = this.points[i];
    this.xs[n] = this.px[i];
    this.ys[n] = y;
    this.count = n + 1;
  }

  /** The output's length so far during a `decimate` (the array itself is cut to it on return). */
  private count = 0;

  /** The output, cut to the points this call wrote. */
  private finish(): Point[] {
    const out = this.output;
    if (out.length !== this.count) out.length = this.count;
    return out;
  }

  constructor(private readonly points: readonly Point[]) {}

  invalidate(): void {
    this.stale = true;
  }

  /**
   * The points to draw for `points[start, end)` at `columns` pixel columns: its first point, the min
   * and max of each block's part inside the range in index order, and its last point (a live line
   * ends at the newest value); inside a flat stretch (equal y) only its ends. A range with at most
   * 2 points per column keeps every point (flat stretches still collapsed); undefined when that range
   * is the whole array: then the array itself is drawn. The returned array is this pyramid's own and
   * is refilled by its next call (a frame's drawing reads it before the next frame decimates): no
   * garbage per line and frame, and a live line's resumed prefix is already in place.
   */
  decimate(start: number, end: number, columns: number): Point[] | undefined {
    const count = end - start;
    const out = this.output;
    if (count <= 2 * columns || columns < 1) {
      this.count = 0;
      this.resume = undefined;
      if (start === 0 && end === this.points.length) {
        out.length = 0;
        return undefined;
      }
      this.sync();
      for (let i = start; i < end; i++) this.put(i);
      return this.finish();
    }
    this.sync();
    const shift = Math.min(this.levels.length, decimationShift(count, columns));
    const { lo, hi } = this.levels[shift - 1];
    const points = this.points;
    const py = this.py;
    const push = (i: number) => this.put(i);
    const r = this.resume;
    let first = start >> shift;
    let previous = start;
    if (r && r.start === start && r.shift === shift && r.block << shift <= end - 1) {
      // The previous pass's output is this array: keep its final blocks' prefix.
      this.count = r.length;
      // A later push of that pass may have replaced the prefix's last point (flat stretch): put it back.
      out[r.length - 1] = points[r.last];
      this.xs[r.length - 1] = this.px[r.last];
      this.ys[r.length - 1] = py[r.last];
      this.lastIndex = r.last;
      first = r.block;
      previous = r.previous;
    } else {
      this.count = 0;
      push(start);
    }
    // Blocks that end inside the range are final: the next frame resumes after the last of them.
    let resumeBlock = first;
    let resumeLength = this.count;
    let resumeLast = this.lastIndex;
    let resumePrevious = previous;
    for (let b = first; b <= (end - 1) >> shift; b++) {
      const blockFrom = b << shift;
      const blockTo = Math.min((b + 1) << shift, points.length);
      // The extremes between the range's ends: the ends are drawn anyway, and where the panel zooms they
      // are the points just outside the window (clipped), so one that is its block's extreme must not
      // stand in for the extreme inside the window.
      const from = Math.max(start + 1, blockFrom);
      const to = Math.min(end - 1, blockTo);
      if (from < to) {
        let l = lo[b];
        let h = hi[b];
        if (from !== blockFrom || to !== blockTo) {
          // A block cut by an end: its extremes may lie outside, so scan the part between.
          l = h = from;
          for (let i = from + 1; i < to; i++) {
            if (py[i] < py[l]) l = i;
            if (py[i] > py[h]) h = i;
          }
        }
        const a = Math.min(l, h);
        const z = Math.max(l, h);
        if (a > previous) push((previous = a));
        if (z > previous) push((previous = z));
      }
      // Final (the next frame may resume after it) once it ends before the last point, which is not in its scan.
      if ((b + 1) << shift <= end - 1) {
        resumeBlock = b + 1;
        resumeLength = this.count;
        resumeLast = this.lastIndex;
        resumePrevious = previous;
      }
    }
    this.resume = { start, shift, block: resumeBlock, length: resumeLength, last: resumeLast, previous: resumePrevious };
    if (end - 1 > previous) push(end - 1);
    return this.finish();
  }

  /** Index of the first point with x ≥ `x`, as `lowerBoundX`, searched in the contiguous x values (no pointer chasing per probe). */
  lowerBound(x: number): number {
    return this.firstBeyond(x, false);
  }

  /** Index of the first point with x > `x`, as `upperBoundX`, in the contiguous x values. */
  upperBound(x: number): number {
    return this.firstBeyond(x, true);
  }

  /** Bisection over the indexed x values: the first index whose x is > `x` (`strictly`) or ≥ `x`. */
  private firstBeyond(x: number, strictly: boolean): number {
    this.sync();
    const px = this.px;
    let lo = 0;
    let hi = this.indexed;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (px[mid] < x || (strictly && px[mid] === x)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Indexes what was appended since the last use (everything, after an invalidation). */
  private sync(): void {
    const n = this.points.length;
    if (this.stale || n < this.indexed) {
      this.levels = [];
      this.indexed = 0;
      this.stale = false;
      this.resume = undefined;
    }
    if (n > this.px.length) {
      let size = this.px.length;
      while (size < n) size *= 2;
      const px = new Float64Array(size);
      const py = new Float64Array(size);
      px.set(this.px.subarray(0, this.indexed));
      py.set(this.py.subarray(0, this.indexed));
      this.px = px;
      this.py = py;
    }
    for (let i = this.indexed; i < n; i++) {
      const p = this.points[i];
      this.px[i] = p.x;
      this.py[i] = p.y;
      this.add(i);
    }
    this.indexed = n;
  }

  private add(i: number): void {
    const py = this.py;
    const y = py[i];
    for (let level = 0; level < this.levels.length; level++) {
      const { lo, hi } = this.levels[level];
      const block = i >> (level + 1);
      if (block === lo.length) {
        lo.push(i);
        hi.push(i);
      } else {
        if (y < py[lo[block]]) lo[block] = i;
        if (y > py[hi[block]]) hi[block] = i;
      }
    }
    // A new level once the top one has two blocks (or, at the start, there are two points).
    while ((this.levels.length ? this.levels[this.levels.length - 1].lo.length : i + 1) >= 2) this.addLevel(i + 1);
  }

  /** Builds the next level up by merging pairs of blocks of the top level (or of points, for level 0). */
  private addLevel(n: number): void {
    const below = this.levels[this.levels.length - 1];
    const count = below ? below.lo.length : n;
    const pick = (a: number, b: number, lower: boolean) => {
      const ya = this.py[a];
      const yb = this.py[b];
      return (lower ? yb < ya : yb > ya) ? b : a;
    };
    const lo: number[] = [];
    const hi: number[] = [];
    for (let j = 0; 2 * j < count; j++) {
      const l = below ? below.lo[2 * j] : 2 * j;
      const h = below ? below.hi[2 * j] : 2 * j;
      if (2 * j + 1 < count) {
        lo.push(pick(l, below ? below.lo[2 * j + 1] : 2 * j + 1, true));
        hi.push(pick(h, below ? below.hi[2 * j + 1] : 2 * j + 1, false));
      } else {
        lo.push(l);
        hi.push(h);
      }
    }
    this.levels.push({ lo, hi });
  }
}
