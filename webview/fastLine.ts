// A chart.js line controller that draws each line straight from its (decimated) points, with one path
// and one stroke, instead of positioning a PointElement per point on every update and stroking the
// line through them. chart.js keeps the axes, scales, legend, tooltips, hover and zoom: the point
// elements it needs for those (interaction lookups, the hovered point's dot, the tooltip's caret) still
// exist, one per drawn point, but are positioned only when a pointer event or a hover needs them, not on
// every frame of a live run.
import { LineController, type Chart, type ChartArea, type Scale } from 'chart.js';

/** Where a line's path goes: a canvas context, or a recorder in tests. */
export interface PathSink {
  moveTo(x: number, y: number): void;
  lineTo(x: number, y: number): void;
}

/** The fields of a point this controller reads (chart.js's internal format: `parsing: false`). */
interface XY {
  x: number;
  y: number;
}

/** A decimated line's coordinates, index-aligned with its points (MinMaxPyramid.outputCoordinates). */
interface Coordinates {
  xs: Float64Array;
  ys: Float64Array;
}

/** chart.js internals this controller uses: not in its public typings. */
interface Meta {
  _parsed: XY[];
  data: { x: number; y: number; active?: boolean; draw(ctx: CanvasRenderingContext2D, area: ChartArea): void }[];
  dataset: { options: LineOptions };
  iScale: Scale;
  vScale: Scale;
  _stacked: boolean | string;
  _dataset: { _decimated?: unknown; plCoordinates?: Coordinates };
}
interface LineOptions {
  borderWidth: number;
  borderColor: string;
  borderDash?: number[];
  borderDashOffset?: number;
  borderJoinStyle: CanvasLineJoin;
  borderCapStyle: CanvasLineCap;
  stepped?: boolean | 'before' | 'after' | 'middle';
}
type ChartInternals = Chart & { _active: { datasetIndex: number; index: number }[]; tooltip?: { getActiveElements(): { datasetIndex: number; index: number }[] } };

/** chart.js's linear and logarithmic scale internals (see `pixelMap`). */
interface LinearInternals {
  type: string;
  _startValue: number;
  _valueRange: number;
  _startPixel: number;
  _length: number;
  _reversePixels: boolean;
  _alignToPixels: boolean;
}

/**
 * A scale's value → pixel mapping: chart.js's own `getPixelForValue` (`generic`), or for a linear or
 * logarithmic scale the same arithmetic inlined (with its clamp to the 16-bit range), so a long line
 * costs no method call and no option lookup per value. A plain record read by one function (`toPixel`),
 * not a closure per scale: the tracing loop calls one monomorphic function that V8 inlines, where a
 * closure per scale made the call site megamorphic (linear and log charts alike), each call returning
 * a boxed number (~40 % of the tracing's garbage).
 */
interface PixelMapping {
  kind: 'generic' | 'linear' | 'log';
  scale: Scale;
  /** The pixel of the axis's start value (its end's when the pixels run backwards, as on every y axis). */
  base: number;
  perValue: number;
  from: number;
  /** A log axis's minimum: 0 is drawn there, and the minimum exactly at the start. */
  min: number;
}

function pixelMapping(scale: Scale): PixelMapping {
  const s = scale as unknown as LinearInternals & { min: number };
  const log = s.type === 'logarithmic';
  if ((s.type !== 'linear' && !log) || s._alignToPixels || !(s._valueRange > 0)) return { kind: 'generic', scale, base: 0, perValue: 0, from: 0, min: 0 };
  // chart.js: decimal = (v − startValue) / valueRange (of log10 v on a log axis), flipped when the
  // pixels run backwards (every y axis), then startPixel + decimal · length, clamped to 16 bits.
  const base = s._reversePixels ? s._startPixel + s._length : s._startPixel;
  const perValue = ((s._reversePixels ? -1 : 1) * s._length) / s._valueRange;
  return { kind: log ? 'log' : 'linear', scale, base, perValue, from: s._startValue, min: s.min };
}

/** `mapping`'s pixel for `v` (LinearScale / LogarithmicScale.getPixelForValue, clamped as chart.js's `_int16Range`). */
function toPixel(m: PixelMapping, v: number): number {
  let pixel: number;
  if (m.kind === 'linear') pixel = m.base + (v - m.from) * m.perValue;
  else if (m.kind === 'log') {
    if (v === 0) v = m.min;
    if (Number.isNaN(v)) return NaN;
    pixel = v === m.min ? m.base : m.base + (Math.log10(v) - m.from) * m.perValue;
  } else return m.scale.getPixelForValue(v);
  return Math.max(-32768, Math.min(32767, pixel));
}

/**
 * The vertices of a line's path in pixels, as drawn: every point with a finite pixel position, in order
 * (a point that has none, such as a value ≤ 0 on a log axis, is skipped and the line joins its
 * neighbours, as chart.js does with `spanGaps`); stepped lines get chart.js's step corners
 * (`_steppedLineTo`: 'before' and `true` turn at the new x, 'after' at the previous x, 'middle' halfway).
 */
export function traceLine(sink: PathSink, points: readonly XY[], xScale: Scale, yScale: Scale, stepped: LineOptions['stepped'], coordinates?: Coordinates): void {
  const xMap = pixelMapping(xScale);
  const yMap = pixelMapping(yScale);
  const step = stepped === true ? 'before' : stepped || undefined;
  // The same values, contiguous, where the decimation wrote them (no pointer chasing per point).
  const xs = coordinates && coordinates.xs.length >= points.length ? coordinates.xs : undefined;
  const ys = xs && coordinates!.ys;
  let started = false;
  let px = 0;
  let py = 0;
  for (let i = 0; i < points.length; i++) {
    const x = toPixel(xMap, xs ? xs[i] : points[i].x);
    const y = toPixel(yMap, ys ? ys[i] : points[i].y);
    if (Number.isNaN(x) || Number.isNaN(y)) continue;
    if (!started) {
      sink.moveTo(x, y);
      started = true;
    } else if (step === 'middle') {
      const mid = (px + x) / 2;
      sink.lineTo(mid, py);
      sink.lineTo(mid, y);
      sink.lineTo(x, y);
    } else if (step === 'after') {
      sink.lineTo(px, y);
      sink.lineTo(x, y);
    } else if (step) {
      sink.lineTo(x, py);
      sink.lineTo(x, y);
    } else {
      sink.lineTo(x, y);
    }
    px = x;
    py = y;
  }
}

/** The contiguous coordinates of the points a line draws now, if the decimation wrote them this frame. */
function coordinatesOf(meta: Meta): Coordinates | undefined {
  const coordinates = meta._dataset.plCoordinates;
  return coordinates && meta._dataset._decimated === meta._parsed && coordinates.xs.length >= meta._parsed.length ? coordinates : undefined;
}

export class FastLineController extends LineController {
  static override id = 'plLine';
  /** The point elements' pixel positions are out of date (set by each update, cleared by `positionElements`). */
  private elementsStale = true;

  private get meta(): Meta {
    return (this as unknown as { _cachedMeta: Meta })._cachedMeta;
  }

  /**
   * chart.js wraps each new data array's push/splice to keep its elements in step; a decimated line
   * gets a new array every frame, and the element count is reconciled by length anyway (below), so
   * only the identity is recorded: no wrapping, no stacks to clear.
   */
  _dataCheck(): void {
    const self = this as unknown as { _data?: unknown; _syncList: unknown[] };
    const data = this.getDataset().data;
    if (self._data !== data) {
      self._syncList = [];
      self._data = data;
    }
  }

  /** One element per point as before (added or removed at the end), but not positioned here. */
  _resyncElements(): void {
    (LineController.prototype as unknown as { _resyncElements(reset: boolean): void })._resyncElements.call(this, false);
    this.elementsStale = true;
  }

  /** Positions every point element (chart.js's own per-point update), if the data or scales changed since. */
  positionElements(): void {
    if (!this.elementsStale) return;
    const data = this.meta.data;
    super.updateElements(data as never, 0, data.length, 'none');
    this.elementsStale = false;
  }

  override update(mode: Parameters<LineController['update']>[0]): void {
    const meta = this.meta;
    const line = meta.dataset as unknown as { _chart: Chart; _datasetIndex: number; _decimated: boolean };
    line._chart = this.chart;
    line._datasetIndex = this.index;
    line._decimated = !!meta._dataset._decimated;
    const options = this.resolveDatasetElementOptions(mode) as Record<string, unknown>;
    options.segment = (this as unknown as { options: { segment?: unknown } }).options.segment;
    this.updateElement(meta.dataset as never, undefined, { animated: false, options } as never, mode);
    this.elementsStale = true;
    // A hovered point (its dot, the tooltip's caret) must follow the new data and scales at once.
    if (this.hasActivePoint()) this.positionElements();
  }

  private hasActivePoint(): boolean {
    const chart = this.chart as ChartInternals;
    const mine = (a: { datasetIndex: number }) => a.datasetIndex === this.index;
    return chart._active.some(mine) || (chart.tooltip?.getActiveElements().some(mine) ?? false);
  }

  /** Hover styles are set on elements, which must be where the point is. */
  override setHoverStyle(element: never, datasetIndex: number, index: number): void {
    this.positionElements();
    super.setHoverStyle(element, datasetIndex, index);
  }

  /** Scale limits from the points, in one tight pass (x: the first and last point, the points being sorted by x). */
  override getMinMax(scale: Scale, canStack?: boolean): { min: number; max: number } {
    const meta = this.meta;
    if (canStack && meta._stacked) return super.getMinMax(scale, canStack);
    const points = meta._parsed;
    const coordinates = coordinatesOf(meta);
    const other = scale === meta.iScale ? meta.vScale : meta.iScale;
    const axis = scale.axis as 'x' | 'y';
    const otherAxis = other.axis as 'x' | 'y';
    const bounds = other.getUserBounds();
    const otherMin = bounds.minDefined ? bounds.min : -Infinity;
    const otherMax = bounds.maxDefined ? bounds.max : Infinity;
    let min = Infinity;
    let max = -Infinity;
    // chart.js's rule: a point counts if its value is finite and the other coordinate is not outside that axis's user bounds.
    const counts = (p: XY) => Number.isFinite(p[axis]) && !(otherMin > p[otherAxis] || otherMax < p[otherAxis]);
    if (scale === meta.iScale) {
      for (let i = 0; i < points.length; i++) {
        if (!counts(points[i])) continue;
        min = Math.min(min, points[i][axis]);
        max = Math.max(max, points[i][axis]);
        break;
      }
      for (let i = points.length - 1; i >= 0; i--) {
        if (!counts(points[i])) continue;
        min = Math.min(min, points[i][axis]);
        max = Math.max(max, points[i][axis]);
        break;
      }
    } else if (coordinates) {
      // The decimated line's contiguous copy: a typed-array scan instead of a keyed read of each scattered point.
      const values = axis === 'x' ? coordinates.xs : coordinates.ys;
      const others = otherAxis === 'x' ? coordinates.xs : coordinates.ys;
      for (let i = 0; i < points.length; i++) {
        const v = values[i];
        if (!(v < min || v > max)) continue;
        const o = others[i];
        if (!Number.isFinite(v) || otherMin > o || otherMax < o) continue;
        if (v < min) min = v;
        if (v > max) max = v;
      }
    } else {
      for (let i = 0; i < points.length; i++) {
        const v = points[i][axis];
        if (!(v < min || v > max) || !counts(points[i])) continue;
        if (v < min) min = v;
        if (v > max) max = v;
      }
    }
    return { min, max };
  }

  /** The line as one path and one stroke, then the hovered point's dot on top. */
  override draw(): void {
    const meta = this.meta;
    const chart = this.chart as ChartInternals;
    const ctx = chart.ctx;
    const options = meta.dataset.options;
    if (options.borderWidth && meta._parsed.length) {
      ctx.save();
      ctx.lineCap = options.borderCapStyle;
      ctx.setLineDash(options.borderDash ?? []);
      ctx.lineDashOffset = options.borderDashOffset ?? 0;
      ctx.lineJoin = options.borderJoinStyle;
      ctx.lineWidth = options.borderWidth;
      ctx.strokeStyle = options.borderColor;
      ctx.beginPath();
      traceLine(ctx, meta._parsed, meta.iScale, meta.vScale, options.stepped, coordinatesOf(meta));
      ctx.stroke();
      ctx.restore();
    }
    for (const active of chart._active) {
      if (active.datasetIndex !== this.index) continue;
      this.positionElements();
      meta.data[active.index]?.draw(ctx, chart.chartArea);
    }
  }
}

/**
 * Positions the point elements of every fast line before chart.js looks them up for a pointer event
 * (hover, tooltip, click; also the replay of the last event after each update).
 */
export const positionElementsForEvents = {
  id: 'plPositionElements',
  beforeEvent(chart: Chart): void {
    for (let i = 0; i < chart.data.datasets.length; i++) {
      const controller = chart.getDatasetMeta(i).controller;
      if (controller instanceof FastLineController) controller.positionElements();
    }
  },
};
