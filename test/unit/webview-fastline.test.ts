// FastLineController's per-frame arithmetic (webview/fastLine.ts) outside a browser: the y limits of a
// decimated line come from its contiguous coordinates (chart.js's rule, float64 closed form, without
// touching the scattered point objects), and the traced path's pixels equal chart.js's linear and
// logarithmic value → pixel mapping, 16-bit clamp, gaps and step corners.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Scale } from 'chart.js';
import { FastLineController, traceLine, type PathSink } from '../../webview/fastLine';
import { mulberry32 } from '../support/prng';

/** Points whose coordinate reads are counted (a read of a stored point object is what the coordinates avoid). */
function countedPoints(xs: number[], ys: number[]): { points: { x: number; y: number }[]; reads: () => number } {
  let reads = 0;
  const points = xs.map((x, i) => ({
    get x() {
      reads++;
      return x;
    },
    get y() {
      reads++;
      return ys[i];
    },
  }));
  return { points, reads: () => reads };
}

function axis(id: 'x' | 'y', bounds: { min?: number; max?: number } = {}): Scale {
  return { axis: id, getUserBounds: () => ({ min: bounds.min ?? 0, max: bounds.max ?? 0, minDefined: bounds.min !== undefined, maxDefined: bounds.max !== undefined }) } as unknown as Scale;
}

/** chart.js's rule for a value axis's limits, in float64: finite values whose x lies inside the x axis's user bounds. */
function closedFormExtent(xs: number[], ys: number[], xMin: number, xMax: number): { min: number; max: number } {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < ys.length; i++) {
    if (!Number.isFinite(ys[i]) || xs[i] < xMin || xs[i] > xMax) continue;
    min = Math.min(min, ys[i]);
    max = Math.max(max, ys[i]);
  }
  return { min, max };
}

test('getMinMax: a decimated line\'s y limits come from its contiguous coordinates (chart.js\'s rule), not from its point objects', () => {
  const random = mulberry32(3);
  for (const window of [{}, { min: 40, max: 160 }, { min: 1000, max: 2000 }, { min: 75.5, max: 75.5 }]) {
    const n = 200;
    const xs = Array.from({ length: n }, (_, i) => i);
    const ys = xs.map(() => (random() - 0.5) * 100);
    ys[17] = NaN;
    ys[51] = Infinity;
    ys[52] = -Infinity;
    ys[120] = 1e9; // a spike inside the window
    ys[170] = -1e9; // and one outside it
    const { points, reads } = countedPoints(xs, ys);
    const xScale = axis('x', window);
    const yScale = axis('y');
    const coordinates = { xs: Float64Array.from([...xs, 9, 9]), ys: Float64Array.from([...ys, -5e9, 5e9]) }; // capacity beyond the points: ignored
    const controller = Object.create(FastLineController.prototype) as FastLineController;
    const dataset = { _decimated: points, plCoordinates: coordinates };
    Object.assign(controller, { _cachedMeta: { _parsed: points, iScale: xScale, vScale: yScale, _stacked: false, _dataset: dataset } });
    const got = controller.getMinMax(yScale, true);
    const want = closedFormExtent(xs, ys, window.min ?? -Infinity, window.max ?? Infinity);
    assert.deepEqual(got, want, JSON.stringify(window));
    assert.equal(reads(), 0, 'no point object read');
    // An undecimated line (the stored array itself, no coordinates): the same rule over the objects.
    dataset._decimated = undefined as never;
    assert.deepEqual(controller.getMinMax(yScale, true), want, `${JSON.stringify(window)}, undecimated`);
    assert.ok(reads() > 0);
  }
});

interface Recorded {
  op: 'M' | 'L';
  x: number;
  y: number;
}
function recorder(): PathSink & { ops: Recorded[] } {
  const ops: Recorded[] = [];
  return { ops, moveTo: (x, y) => ops.push({ op: 'M', x, y }), lineTo: (x, y) => ops.push({ op: 'L', x, y }) };
}

/** A chart.js linear or log scale's internals, and its getPixelForValue written out from chart.js's source (float64). */
function scaleOf(type: 'linear' | 'logarithmic', min: number, max: number, startPixel: number, length: number, reverse: boolean): Scale {
  const log = type === 'logarithmic';
  const startValue = log ? Math.log10(min) : min;
  const valueRange = log ? Math.log10(max) - Math.log10(min) : max - min;
  const decimalToPixel = (d: number) => Math.max(Math.min(startPixel + (reverse ? 1 - d : d) * length, 32767), -32768);
  const getPixelForValue = (v: number) => {
    if (log) {
      if (v === 0) v = min;
      if (v === undefined || Number.isNaN(v)) return NaN;
      return decimalToPixel(v === min ? 0 : (Math.log10(v) - startValue) / valueRange);
    }
    return decimalToPixel((v - startValue) / valueRange);
  };
  return { type, min, max, _startValue: startValue, _valueRange: valueRange, _startPixel: startPixel, _length: length, _reversePixels: reverse, _alignToPixels: false, getPixelForValue } as unknown as Scale;
}

test('traceLine: vertices at chart.js\'s own pixels on linear and log axes (reversed, clamped, 0 and gaps on log), step corners, from coordinates or objects alike', () => {
  const random = mulberry32(8);
  const xs = Array.from({ length: 300 }, (_, i) => 10 + i * 3);
  const ys = xs.map(() => Math.exp((random() - 0.5) * 12));
  ys[4] = 0; // drawn at a log axis's minimum
  ys[9] = NaN; // a gap: skipped, its neighbours joined
  ys[10] = -3; // no pixel on a log axis
  ys[200] = 1e12; // far above the axis: clamped to 16 bits
  const points = xs.map((x, i) => ({ x, y: ys[i] }));
  const coordinates = { xs: Float64Array.from(xs), ys: Float64Array.from(ys) };
  const xScale = scaleOf('linear', 10, 907, 40, 600, false);
  for (const yScale of [scaleOf('linear', -3, 50, 12, 220, true), scaleOf('logarithmic', 1e-3, 1e3, 12, 220, true)]) {
    for (const stepped of [false, true, 'before', 'after', 'middle'] as const) {
      const expected: Recorded[] = [];
      let previous: { x: number; y: number } | undefined;
      for (let i = 0; i < xs.length; i++) {
        const x = xScale.getPixelForValue(xs[i]);
        const y = yScale.getPixelForValue(ys[i]);
        if (Number.isNaN(x) || Number.isNaN(y)) continue;
        if (!previous) expected.push({ op: 'M', x, y });
        else if (stepped === 'middle') expected.push({ op: 'L', x: (previous.x + x) / 2, y: previous.y }, { op: 'L', x: (previous.x + x) / 2, y }, { op: 'L', x, y });
        else if (stepped === 'after') expected.push({ op: 'L', x: previous.x, y }, { op: 'L', x, y });
        else if (stepped) expected.push({ op: 'L', x, y: previous.y }, { op: 'L', x, y });
        else expected.push({ op: 'L', x, y });
        previous = { x, y };
      }
      const what = `${yScale.type}, stepped ${stepped}`;
      const fromCoordinates = recorder();
      traceLine(fromCoordinates, points, xScale, yScale, stepped, coordinates);
      const fromObjects = recorder();
      traceLine(fromObjects, points, xScale, yScale, stepped);
      // Equal up to float64 rounding: the inlined form multiplies once by length / range, chart.js divides then multiplies.
      const close = (got: Recorded[], how: string) => {
        assert.deepEqual(got.map((o) => o.op), expected.map((o) => o.op), `${what}, ${how}`);
        got.forEach((o, i) => assert.ok(Math.abs(o.x - expected[i].x) <= 1e-9 && Math.abs(o.y - expected[i].y) <= 1e-9, `${what}, ${how}: vertex ${i} at ${o.x},${o.y}, chart.js ${expected[i].x},${expected[i].y}`));
      };
      close(fromCoordinates.ops, 'from coordinates');
      close(fromObjects.ops, 'from objects');
      assert.deepEqual(fromCoordinates.ops, fromObjects.ops, `${what}: the same path either way`);
      if (yScale.type === 'linear') assert.ok(expected.some((o) => o.y === -32768), 'the spike is clamped');
      else assert.ok(!expected.some((o) => o.y === yScale.getPixelForValue(-3)), 'no vertex for a negative value on a log axis');
    }
  }
  // Any other scale type is asked for each pixel.
  const asked: number[] = [];
  const other = { type: 'category', getPixelForValue: (v: number) => (asked.push(v), v * 2) } as unknown as Scale;
  const sink = recorder();
  traceLine(sink, points.slice(0, 3), other, other, false);
  assert.deepEqual(sink.ops.map((o) => [o.x, o.y]), points.slice(0, 3).map((q) => [q.x * 2, q.y * 2]));
  assert.equal(asked.length, 6);
});
