// Decimation in the panel (webview/decimate.ts, webview/series.ts). Thinning of the stored history:
// bounded size, extremes kept, x order kept, a density that stays uniform over a run many times the
// capacity. Drawing through the min/max pyramid: bounded output for any range, every extreme at
// pixel scale kept (checked by brute force), incremental indexing equal to a rebuild.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MinMaxPyramid, decimationShift, lowerBoundX, minMaxThinByX, upperBoundX } from '../../webview/decimate';
import { Series, type Point } from '../../webview/series';
import { mulberry32 } from '../support/prng';

function randomWalk(n: number, seed: number, xOf: (i: number) => number = (i) => i): Point[] {
  const random = mulberry32(seed);
  let y = 0;
  return Array.from({ length: n }, (_, i) => ({ x: xOf(i), y: (y += random() - 0.5) }));
}

test('minMaxThinByX: at most maxPoints, ends kept, indices increasing, every x bucket keeps its min and max', () => {
  // Uneven x spacing (dense at the end, like a history thinned before), so x buckets ≠ index buckets.
  const pts = randomWalk(20_001, 11, (i) => (i < 10_000 ? 4 * i : 40_000 + (i - 10_000)));
  pts[123].y = 1e9;
  pts[17_000].y = -1e9;
  for (const maxPoints of [4, 5, 101, 1000, 4096]) {
    const keep = minMaxThinByX(pts, maxPoints);
    assert.ok(keep.length <= maxPoints, `${keep.length} > ${maxPoints}`);
    assert.equal(keep[0], 0);
    assert.equal(keep.at(-1), pts.length - 1);
    assert.ok(keep.every((k, i) => i === 0 || k > keep[i - 1]), 'strictly increasing indices, so x stays in order');
    assert.ok(keep.includes(123) && keep.includes(17_000), 'the global extremes survive');
    // Brute force: each bucket of equal x width (interior points only) keeps exactly its min and max.
    const buckets = Math.floor((maxPoints - 2) / 2);
    const x0 = pts[0].x;
    const span = pts.at(-1)!.x - x0;
    const inBucket = new Map<number, number[]>();
    for (let i = 1; i < pts.length - 1; i++) {
      const b = Math.min(buckets - 1, Math.floor(((pts[i].x - x0) / span) * buckets));
      inBucket.set(b, [...(inBucket.get(b) ?? []), i]);
    }
    for (const [b, members] of inBucket) {
      const ys = members.map((i) => pts[i].y);
      const kept = keep.filter((k) => members.includes(k)).map((k) => pts[k].y);
      assert.ok(kept.length >= 1 && kept.length <= 2, `bucket ${b} kept ${kept.length}`);
      assert.equal(Math.min(...kept), Math.min(...ys), `bucket ${b} min`);
      assert.equal(Math.max(...kept), Math.max(...ys), `bucket ${b} max`);
    }
  }
  assert.deepEqual(minMaxThinByX(pts.slice(0, 6), 6), [0, 1, 2, 3, 4, 5], 'short series untouched');
  assert.throws(() => minMaxThinByX(pts, 3), RangeError);
});

test('minMaxThinByX: without an x extent it buckets by position and stays bounded', () => {
  const flat = randomWalk(1000, 5, () => 7);
  flat[500].y = 99;
  const keep = minMaxThinByX(flat, 50);
  assert.ok(keep.length <= 50 && keep.length >= 40, `kept ${keep.length}`);
  assert.ok(keep.includes(500));
  assert.ok(keep.every((k, i) => i === 0 || k > keep[i - 1]));
});

test('Series: a run 40× the capacity stays bounded, uniform over the steps, with early spikes kept', () => {
  const capacity = 1000;
  const s = new Series(0.5, capacity);
  const random = mulberry32(3);
  const steps = 40_000;
  let longest = 0;
  for (let step = 1; step <= steps; step++) {
    const y = step === 777 ? 1e6 : step === 30_001 ? -1e6 : Math.sin(step / 50) + random();
    s.append(step, y);
    longest = Math.max(longest, s.raw.length);
  }
  assert.ok(longest <= capacity, `held ${longest} points`);
  assert.ok(s.raw.length >= capacity / 2 - 2, `only ${s.raw.length} points left`);
  assert.equal(s.raw[0].x, 1);
  assert.equal(s.last!.x, steps);
  assert.ok(s.raw.every((p, i) => i === 0 || p.x > s.raw[i - 1].x), 'x strictly increasing');
  assert.deepEqual(s.smoothed.map((p) => p.x), s.raw.map((p) => p.x), 'smoothed twin stays index-aligned');
  assert.ok(s.raw.some((p) => p.x === 777 && p.y === 1e6) && s.raw.some((p) => p.x === 30_001 && p.y === -1e6), 'spikes survive every thinning');
  // The thinned history is uniform over the steps: the first nine tenths of the run hold about equal
  // shares (the last tenth also holds the newest points, at full resolution until the next thinning).
  // Thinning by equal point counts would leave the first tenth with almost nothing: each pass halves
  // the already thinned old history once more.
  const tenths = Array.from({ length: 10 }, (_, d) => s.raw.filter((p) => p.x > (d * steps) / 10 && p.x <= ((d + 1) * steps) / 10).length / s.raw.length);
  const old = tenths.slice(0, 9);
  const shares = tenths.map((t) => t.toFixed(3)).join(' ');
  assert.ok(Math.min(...old) > 0.04, `a tenth of the run holds almost no points: ${shares}`);
  assert.ok(Math.max(...old) / Math.min(...old) < 1.5, `uneven density over the run: ${shares}`);
});

/** Brute force: the min and max y of each block (of 2^shift points, cut to [start, end)). */
/** Each block's min and max among points[from, to) (blocks that hold none of them left out). */
function blockExtremes(points: readonly Point[], from: number, to: number, shift: number): { min: number; max: number }[] {
  const out: { min: number; max: number }[] = [];
  for (let b = from >> shift; b <= (to - 1) >> shift; b++) {
    const ys = points.slice(Math.max(from, b << shift), Math.min(to, (b + 1) << shift)).map((p) => p.y);
    if (ys.length) out.push({ min: Math.min(...ys), max: Math.max(...ys) });
  }
  return out;
}

test('MinMaxPyramid: any range decimates to ≤ 2 points per column, ends and every block extreme kept, x in order', () => {
  const random = mulberry32(21);
  const pts = randomWalk(30_000, 8);
  pts[4321].y = 1e6;
  const pyramid = new MinMaxPyramid(pts);
  for (let trial = 0; trial < 60; trial++) {
    const columns = [37, 300, 648, 1920][trial % 4];
    const start = trial === 0 ? 0 : Math.floor(random() * 20_000);
    const end = trial === 0 ? pts.length : Math.min(pts.length, start + 1 + Math.floor(random() * 10_000));
    const out = pyramid.decimate(start, end, columns);
    if (end - start <= 2 * columns) {
      assert.deepEqual(out, pts.slice(start, end), 'few points in view: every one of them');
      continue;
    }
    assert.ok(out, `range ${start}..${end}`);
    const shift = decimationShift(end - start, columns);
    assert.ok(2 ** shift <= (2 * (end - start)) / columns, 'a block spans at most two columns');
    assert.ok(out.length <= 2 * columns + 6, `${out.length} points for ${columns} columns`);
    const index = out.map((p) => pts.indexOf(p));
    assert.ok(index.every((k, i) => k >= start && k < end && (i === 0 || k > index[i - 1])), 'stored points of the range, in x order');
    assert.equal(index[0], start);
    assert.equal(index.at(-1), end - 1);
    // Each block's min and max between the range's ends are drawn (the flat-stretch rule never applies to a
    // random walk). Between, not from start to end: the panel's range has one point beyond each edge of a
    // zoomed window, drawn anyway and clipped, so an end that is its block's extreme must not stand in for
    // the extreme inside the window (the y axis, fitted to the window, would miss it).
    const drawn = new Set(out.map((p) => p.y));
    for (const { min, max } of blockExtremes(pts, start + 1, end - 1, shift)) assert.ok(drawn.has(min) && drawn.has(max), `a block extreme is missing (range ${start}..${end})`);
    if (start <= 4321 && 4321 < end) assert.ok(drawn.has(1e6), 'the spike is drawn');
  }
});

test('MinMaxPyramid: a zoomed window whose outside neighbour is its edge block\'s extreme still draws the extremes inside it', () => {
  // 4,096 points at 64 columns: blocks of 32. The window's outside neighbours (the range's ends) are the
  // highest and the lowest points of their blocks; the window's own max and min lie in those blocks.
  const pts: Point[] = Array.from({ length: 4096 }, (_, i) => ({ x: i, y: Math.sin(i / 50) }));
  const [start, end] = [1000, 3001];
  pts[start].y = 10; // outside, left: its block's max
  pts[start + 3].y = 5; // inside: the window's max
  pts[end - 1].y = -10; // outside, right: its block's min
  pts[end - 4].y = -5; // inside: the window's min
  const out = new MinMaxPyramid(pts).decimate(start, end, 64);
  assert.ok(out);
  const drawn = out.map((p) => p.y);
  assert.ok(drawn.includes(5) && drawn.includes(-5), `the window's extremes are drawn: ${drawn.slice(0, 4)} … ${drawn.slice(-4)}`);
});

test('MinMaxPyramid: indexing appends lazily equals a rebuild; invalidate after other changes; flat lines collapse', () => {
  const pts: Point[] = [];
  const live = new MinMaxPyramid(pts);
  const walk = randomWalk(20_000, 4);
  for (let i = 0; i < walk.length; i += 997) {
    pts.push(...walk.slice(i, i + 997));
    // A frame after each batch: the pyramid indexes only what was appended since the last one.
    const drawnLive = live.decimate(0, pts.length, 500);
    assert.deepEqual(drawnLive, new MinMaxPyramid(pts).decimate(0, pts.length, 500), `after ${pts.length} points`);
  }
  // A live line, one point per frame, drawn whole and from a fixed left edge (a zoom that follows the
  // newest point): each frame resumes after the last one's final blocks, through every change of block
  // size, and must equal a fresh pass. Rounded values make flat stretches, collapsed across resumptions.
  const random = mulberry32(9);
  const growing: Point[] = [];
  const whole = new MinMaxPyramid(growing);
  const followed = new MinMaxPyramid(growing);
  for (let frame = 0; frame < 2500; frame++) {
    const phase = frame % 450;
    growing.push({ x: frame * 3, y: phase < 150 ? Math.round(Math.sin(frame / 40) * 3) : phase < 300 ? Math.sin(frame / 9) * 40 : frame / 10 });
    assert.deepEqual(whole.decimate(0, growing.length, 20), new MinMaxPyramid(growing).decimate(0, growing.length, 20), `whole, frame ${frame}`);
    if (growing.length <= 300) continue;
    assert.deepEqual(followed.decimate(300, growing.length, 20), new MinMaxPyramid(growing).decimate(300, growing.length, 20), `followed, frame ${frame}`);
    // And a right edge that moves back (a zoom in), to a block boundary or anywhere: no stale blocks.
    const blockEdge = Math.floor(growing.length / 2 ** (1 + (frame % 6))) * 2 ** (1 + (frame % 6));
    const end = frame % 2 && blockEdge > 300 ? blockEdge : 301 + Math.floor(random() * (growing.length - 301));
    assert.deepEqual(followed.decimate(300, end, 20), new MinMaxPyramid(growing).decimate(300, end, 20), `followed to ${end}, frame ${frame}`);
    // The contiguous coordinates the chart draws from mirror the returned points, resumed, collapsed and zoomed alike.
    for (const [pyramid, from, to] of [[whole, 0, growing.length], [followed, 300, growing.length], [followed, 300, end]] as const) {
      const drawn = pyramid.decimate(from, to, 20) ?? growing;
      const { xs, ys } = pyramid.outputCoordinates;
      if (drawn === growing) continue;
      assert.deepEqual(drawn.map((q, i) => [xs[i], ys[i]]), drawn.map((q) => [q.x, q.y]), `coordinates of ${from}…${to}, frame ${frame}`);
    }
  }
  // Thinning rewrites the array in place: stale until invalidated, right after.
  const keep = minMaxThinByX(pts, 4000);
  const kept = keep.map((k) => pts[k]);
  pts.length = 0;
  pts.push(...kept);
  live.invalidate();
  assert.deepEqual(live.decimate(0, pts.length, 300), new MinMaxPyramid(pts).decimate(0, pts.length, 300));
  assert.equal(new MinMaxPyramid(pts).decimate(0, pts.length, pts.length), undefined, 'a short line is drawn as it is');
  // A mask lane: long flat stretches draw as their ends only, in a zoomed-in range too.
  const zoomed = new MinMaxPyramid([3, 3, 3, 3, 5, 5, 5, 3].map((y, x) => ({ x, y }))).decimate(1, 8, 100)!;
  assert.deepEqual(zoomed.map((p) => [p.x, p.y]), [[1, 3], [3, 3], [4, 5], [6, 5], [7, 3]]);
  const lane = Array.from({ length: 50_000 }, (_, i) => ({ x: i, y: i < 30_000 ? 0.8 : 0.45 }));
  const flat = new MinMaxPyramid(lane).decimate(0, lane.length, 648)!;
  assert.ok(flat.length <= 4, `${flat.length} points for two flat stretches`);
  assert.deepEqual([flat[0].x, flat.at(-1)!.x], [0, 49_999]);
  assert.ok(flat.some((p) => p.y === 0.45) && flat.some((p) => p.y === 0.8));
});

test('x lookups: lowerBoundX/upperBoundX bracket a value in sorted points', () => {
  const pts = [1, 3, 3, 3, 7, 9].map((x) => ({ x, y: 0 }));
  assert.deepEqual([lowerBoundX(pts, 3), upperBoundX(pts, 3)], [1, 4]);
  assert.deepEqual([lowerBoundX(pts, 0), upperBoundX(pts, 0)], [0, 0]);
  assert.deepEqual([lowerBoundX(pts, 8), upperBoundX(pts, 8)], [5, 5]);
  assert.deepEqual([lowerBoundX(pts, 10), upperBoundX(pts, 10)], [6, 6]);
});

test('Series: without smoothing the smoothed line shares the raw points; with it, separate EMA points', () => {
  const s = new Series(0, 100);
  for (let i = 1; i <= 250; i++) s.append(i, Math.sin(i));
  assert.ok(s.smoothed.every((p, i) => p === s.raw[i]), 'shared objects at weight 0');
  s.setSmoothing(0.6);
  assert.ok(s.smoothed.every((p, i) => p !== s.raw[i] && p.x === s.raw[i].x));
  s.append(251, 5);
  assert.notEqual(s.smoothed.at(-1), s.last);
  s.setSmoothing(0);
  assert.deepEqual(s.smoothed.map((p) => p.y), s.raw.map((p) => p.y));
  // The pyramids follow appends, thinning (the array shrinks, then grows past its old length) and refills.
  for (let i = 252; i <= 600; i++) {
    s.append(i, Math.cos(i) * (i % 7));
    if (i === 480) s.setSmoothing(0.3);
    // A frame every 60 appends: a thinning in between shrinks the array and regrows it past its old length.
    if (i % 60) continue;
    assert.deepEqual(s.rawMinMax.decimate(0, s.raw.length, 10), new MinMaxPyramid(s.raw).decimate(0, s.raw.length, 10), `raw at step ${i}`);
    assert.deepEqual(s.smoothedMinMax.decimate(0, s.smoothed.length, 10), new MinMaxPyramid(s.smoothed).decimate(0, s.smoothed.length, 10), `smoothed at step ${i}`);
  }
  assert.ok(s.thinned);
});

test('MinMaxPyramid: contiguous coordinates match the stored points after appends, resumption over flat stretches, thinning and refills', () => {
  // Stepped values (long flat stretches, then a jump) appended in batches: a resumed prefix's last point
  // is often replaced by a later flat point of the previous frame, and must be put back, object and coordinates.
  const random = mulberry32(33);
  const s = new Series(0, 3000);
  const checked = (pyramid: MinMaxPyramid, points: Point[], start: number, end: number, columns: number, what: string) => {
    const drawn = pyramid.decimate(start, end, columns);
    assert.deepEqual(drawn, new MinMaxPyramid(points).decimate(start, end, columns), what);
    if (!drawn) return;
    const { xs, ys } = pyramid.outputCoordinates;
    assert.ok(drawn.every((p) => points.includes(p)), `${what}: stored point objects`);
    assert.deepEqual(drawn.map((_, i) => [xs[i], ys[i]]), drawn.map((p) => [p.x, p.y]), `${what}: coordinates`);
  };
  let x = 0;
  let level = 0;
  for (let frame = 0; frame < 1500; frame++) {
    const batch = 1 + Math.floor(random() * 4);
    for (let k = 0; k < batch; k++) {
      if (random() < 0.08) level = Math.round((random() - 0.5) * 6);
      s.append((x += 1 + Math.floor(random() * 3)), level);
    }
    if (frame === 700) s.setSmoothing(0.5);
    if (frame === 1100) s.setSmoothing(0);
    if (frame % 97 === 0) s.append(x, level + 1); // a replaced value
    const n = s.raw.length;
    checked(s.rawMinMax, s.raw, 0, n, 8, `raw whole, frame ${frame}`);
    checked(s.smoothedMinMax, s.smoothed, 0, n, 8, `smoothed whole, frame ${frame}`);
    if (n > 40) checked(s.rawMinMax, s.raw, 20, n - Math.floor(random() * 20), 6, `raw zoomed, frame ${frame}`);
  }
  assert.ok(s.thinned, 'the history was thinned on the way');
});

test('MinMaxPyramid: x lookups in its contiguous values equal lowerBoundX/upperBoundX, through appends, repeated steps and thinning', () => {
  const random = mulberry32(41);
  const s = new Series(0, 2000);
  let x = 0;
  for (let round = 0; round < 40; round++) {
    for (let k = 0, n = 1 + Math.floor(random() * 300); k < n; k++) s.append((x += Math.floor(random() * 3)), random());
    const pts = s.raw;
    // Probes at stored steps (repeated steps are replaced, so each is unique), between them and outside the range.
    const probes = [-1, 0, pts[0].x, pts.at(-1)!.x, pts.at(-1)!.x + 1, ...Array.from({ length: 20 }, () => random() * (x + 2) - 1), ...Array.from({ length: 20 }, () => pts[Math.floor(random() * pts.length)].x)];
    for (const v of probes) {
      assert.equal(s.rawMinMax.lowerBound(v), lowerBoundX(pts, v), `lowerBound(${v}), ${pts.length} points`);
      assert.equal(s.rawMinMax.upperBound(v), upperBoundX(pts, v), `upperBound(${v}), ${pts.length} points`);
    }
  }
  assert.ok(s.thinned, 'the history was thinned on the way');
  const dup = [1, 3, 3, 3, 7, 9].map((v) => ({ x: v, y: 0 }));
  const p = new MinMaxPyramid(dup);
  assert.deepEqual([p.lowerBound(3), p.upperBound(3), p.lowerBound(0), p.upperBound(10)], [1, 4, 0, 6]);
});

test('MinMaxPyramid: a panned and zoomed window refills one output array in place, never emptied first, cut to each frame\'s length', () => {
  const pts = randomWalk(40_000, 12);
  const pyramid = new MinMaxPyramid(pts);
  // Record what happens to the output array: emptying it drops its backing store (a regrowth per frame).
  const internals = pyramid as unknown as { output: Point[] };
  const lengthsSet: number[] = [];
  internals.output = new Proxy(internals.output, {
    set(target, key, value) {
      if (key === 'length') lengthsSet.push(value as number);
      return Reflect.set(target, key, value);
    },
  });
  let previous: Point[] | undefined;
  const random = mulberry32(5);
  for (let frame = 0; frame < 120; frame++) {
    // Pan a 10 % window, then zoom from everything towards the last 1 % (as the benchmark does), with odd widths.
    const width = frame < 60 ? 4000 : Math.max(50, Math.floor(40_000 * (1 - (frame - 60) / 60)) - Math.floor(random() * 300));
    const start = frame < 60 ? Math.floor((frame / 59) * 36_000) : 40_000 - width;
    const columns = 648;
    const out = pyramid.decimate(start, start + width, columns);
    const fresh = new MinMaxPyramid(pts).decimate(start, start + width, columns);
    assert.deepEqual(out, fresh, `frame ${frame}: ${start}…${start + width}`);
    if (out) {
      if (previous) assert.equal(out, previous, 'the same array every frame');
      previous = out;
      const { xs, ys } = pyramid.outputCoordinates;
      assert.deepEqual(out.map((_, i) => [xs[i], ys[i]]), out.map((q) => [q.x, q.y]), `frame ${frame}: coordinates`);
    }
  }
  assert.ok(lengthsSet.length > 0, 'the output was cut to a shorter frame at least once');
  assert.deepEqual(lengthsSet.filter((n) => n === 0), [], 'never emptied before a refill');
});
