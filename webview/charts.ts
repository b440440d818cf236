// chart.js line charts tuned for long, live runs: data in chart.js's internal {x, y} format
// (`parsing: false`, `normalized: true`), no animation, min/max decimation at draw time from each
// series' MinMaxPyramid (O(width) per line and frame, however long the run), redraws with
// `update('none')` (the caller batches them per animation frame), each line drawn as one path by
// FastLineController (fastLine.ts) with no per-point work per frame. Every chart zooms on its x
// axis (chartjs-plugin-zoom): drag a range, or ctrl + wheel; the zoomed range is kept in the x scale's
// options, so live updates append points without the view jumping back.
import {
  Chart,
  Legend,
  LinearScale,
  LineElement,
  LogarithmicScale,
  PointElement,
  Tooltip,
  type ChartDataset,
  type LegendItem,
  type Plugin,
  type Scale,
  type TooltipItem,
} from 'chart.js';
import zoomPlugin from 'chartjs-plugin-zoom';
import type { MinMaxPyramid } from './decimate';
import { FastLineController, positionElementsForEvents } from './fastLine';
import { formatNumber } from '../src/protocol';
import type { Point, Series } from './series';
import { rgba, type ChartTheme, type Rgb } from './theme';

Chart.register(FastLineController, LineElement, PointElement, LinearScale, LogarithmicScale, Legend, Tooltip, zoomPlugin);

/** One quantity drawn in a chart. */
export interface ChartLine {
  /** Series key (`loss`, `kappa:2`): identifies the line for hiding and in tests. */
  key: string;
  label: string;
  color: Rgb;
  series: Series;
  /** Draw the EMA with the raw line faint behind it when smoothing is on. */
  smoothable: boolean;
  /** Piecewise-constant quantities (α) are drawn as steps. */
  stepped?: boolean;
  /** A line of the compared (recorded) run: dashed and fainter, and only its smoothed form when smoothing is on. */
  overlay?: boolean;
  /** Drawn against a second y axis on the right (a quantity another line would flatten). */
  rightAxis?: boolean;
}

/** Dash pattern of compared-run lines (px on, px off). */
export const OVERLAY_DASH = [6, 4];

export interface LineChartView {
  smoothing: number;
  hidden: ReadonlySet<string>;
  logScale: boolean;
  /** Fixed y range (the mask chart's lanes); otherwise the axis fits the data. */
  yRange?: { min: number; max: number };
  /** A linear axis that includes 0 (α). */
  beginAtZero?: boolean;
}

type Role = 'raw' | 'smoothed' | 'plain' | 'compare';
type LineDataset = ChartDataset<'line', Point[]> & { seriesKey: string; role: Role; minMax: MinMaxPyramid };
/** While decimated (chart.js's own convention, which the tests read): `_data` holds every point and `data` reads `_decimated`. */
type Decimatable = LineDataset & { _data?: Point[]; _decimated?: Point[]; plCoordinates?: { xs: Float64Array; ys: Float64Array } };

function undecimate(dataset: Decimatable): void {
  if (!dataset._data) return;
  const data = dataset._data;
  delete dataset._data;
  delete dataset._decimated;
  delete dataset.plCoordinates;
  Object.defineProperty(dataset, 'data', { configurable: true, enumerable: true, writable: true, value: data });
}

/**
 * Draw-time min/max decimation from the series' pyramids, in place of chart.js's decimation plugin,
 * which rescans every stored point of every line on every frame: with 16 lines × 50,000 points that
 * alone took hundreds of milliseconds per redraw. Only the visible x range is decimated, at the
 * plot's width in pixels; a visible range with at most 2 points per pixel is drawn whole.
 */
const pyramidDecimation: Plugin<'line'> = {
  id: 'plMinMaxPyramid',
  beforeElementsUpdate(chart) {
    const { min, max, minDefined, maxDefined } = chart.scales.x.getUserBounds();
    // The plot area's width (the canvas's, before the first layout).
    const columns = Math.max(1, Math.round(chart.chartArea?.width || chart.width));
    for (const dataset of chart.data.datasets as Decimatable[]) {
      const all = dataset._data ?? dataset.data;
      // One point beyond each end of the visible range, so lines run to the edges (searched in the
      // pyramid's contiguous x values: a search over the point objects missed the cache at each probe).
      const start = minDefined ? Math.max(0, dataset.minMax.lowerBound(min) - 1) : 0;
      const end = maxDefined ? Math.min(all.length, dataset.minMax.upperBound(max) + 1) : all.length;
      // With few points in view, still only those: chart.js walks every point it is given on each update.
      const decimated = dataset.minMax.decimate(start, end, columns);
      if (!decimated) {
        undecimate(dataset);
        continue;
      }
      if (!dataset._data) {
        dataset._data = all;
        Object.defineProperty(dataset, 'data', {
          configurable: true,
          enumerable: true,
          get(this: Decimatable) {
            return this._decimated;
          },
          set(this: Decimatable, d: Point[]) {
            this._data = d;
          },
        });
      }
      dataset._decimated = decimated;
      dataset.plCoordinates = dataset.minMax.outputCoordinates;
    }
  },
};

type TickFontScale = Scale & { _resolveTickFontOptions(index: number): unknown; plTickFont?: { font: unknown } };

/**
 * chart.js resolves each tick's font through a fresh scriptable-option context per tick, on every
 * update, to measure and draw the labels; no font here depends on the tick, so each scale resolves
 * it once per layout (again after any option change, which always comes with a new layout).
 */
const tickFontOncePerLayout: Plugin<'line'> = {
  id: 'plTickFontOncePerLayout',
  beforeLayout(chart) {
    for (const scale of Object.values(chart.scales) as TickFontScale[]) {
      if (!scale.plTickFont) {
        const resolve = scale._resolveTickFontOptions;
        const memo: { font: unknown } = { font: undefined };
        scale.plTickFont = memo;
        scale._resolveTickFontOptions = function (this: TickFontScale, index: number) {
          return (memo.font ??= resolve.call(this, index));
        };
      }
      scale.plTickFont.font = undefined;
    }
  },
};

/** Tick labels on a log axis: only 1, 2 and 5 × 10ⁿ, in compact form (`1e+4`, `0.02`). */
function logTick(value: number): string {
  const significand = value / Math.pow(10, Math.floor(Math.log10(value)));
  const rounded = Math.round(significand * 1e6) / 1e6;
  if (rounded !== 1 && rounded !== 2 && rounded !== 5) return '';
  const abs = Math.abs(value);
  return abs >= 1e4 || abs < 1e-3 ? value.toExponential() : String(Number(value.toPrecision(3)));
}

/** chart.js's Config internals: `update()` re-merges every option and drops the resolved-option caches (`clearCache`). */
interface ConfigInternals {
  update(): void;
  clearCache(): void;
}

/**
 * Runs chart.js's option merge (`config.update()`, called first by every `chart.update`) only when
 * `changed()` says an option or the datasets changed since the last one; otherwise only its caches are
 * dropped (`clearCache`), as before. chart.js re-merges on each update because it cannot know; here
 * every change goes through `setLines`, `applyTheme` or `resetZoom` (which say so), and the zoom plugin
 * writes a zoomed range through the options' own proxies. The caches still go every update: chart.js
 * keys some resolvers by scope arrays it builds afresh on each one (~50 a frame for a 16-line chart),
 * so keeping them grew the heap (111 → 187 MiB after the 16 × 1M redraws) and bounding them paid
 * nothing measurable over dropping them.
 */
function mergeOptionsOnlyWhenChanged(chart: Chart, changed: () => boolean): void {
  const config = chart.config as unknown as ConfigInternals;
  const merge = config.update.bind(config);
  config.update = () => {
    if (changed()) merge();
    else config.clearCache();
  };
}

/** chart.js's Legend internals that its layout (`fit`) fills and `adjustHitBoxes` then offsets in place. */
interface LegendHitBox {
  left: number;
  top: number;
  row?: number;
  col?: number;
  width: number;
  height: number;
}
interface LegendInternals {
  fit(): void;
  legendItems?: LegendItem[];
  maxWidth: number;
  maxHeight: number;
  width: number;
  height: number;
  legendHitBoxes: LegendHitBox[];
  lineWidths?: number[];
  columnSizes?: unknown[];
}

/**
 * Lays the legend out again only when its entries (the same item objects, see generateLabels), the
 * room it is given or an option (`generation`) changed: chart.js re-fits it on every update,
 * resolving its options and measuring each entry's text, though a zoom, a pan or a live point changes
 * none of them. On a repeat the last fit's sizes and hit boxes come back (the boxes copied:
 * `adjustHitBoxes` offsets them in place after each layout). The font the fit leaves set on the
 * context is not put back: everything chart.js measures or draws sets its own font first, and setting
 * one mid-frame cost ~50 µs (the page's style is resolved for it).
 */
function fitLegendOnlyWhenChanged(legend: LegendInternals, generation: () => number): void {
  const fit = legend.fit;
  let last:
    | { generation: number; items: LegendItem[]; maxWidth: number; maxHeight: number; width: number; height: number; hitBoxes: LegendHitBox[]; lineWidths?: number[]; columnSizes?: unknown[] }
    | undefined;
  legend.fit = function (this: LegendInternals) {
    const items = this.legendItems ?? [];
    if (last && last.generation === generation() && last.maxWidth === this.maxWidth && last.maxHeight === this.maxHeight && last.items.length === items.length && last.items.every((item, i) => item === items[i])) {
      this.width = last.width;
      this.height = last.height;
      this.legendHitBoxes = last.hitBoxes.map((box) => ({ ...box }));
      this.lineWidths = last.lineWidths;
      this.columnSizes = last.columnSizes;
      return;
    }
    fit.call(this);
    last = {
      generation: generation(),
      items,
      maxWidth: this.maxWidth,
      maxHeight: this.maxHeight,
      width: this.width,
      height: this.height,
      hitBoxes: (this.legendHitBoxes ?? []).map((box) => ({ ...box })),
      lineWidths: this.lineWidths,
      columnSizes: this.columnSizes,
    };
  };
}

export interface MetricChartOptions {
  /** Formats y values in ticks and tooltips (defaults to `formatNumber`). */
  formatY?: (y: number) => string;
  /** Formats y values in tooltips (defaults to `formatY`). */
  formatTooltipY?: (y: number) => string;
  /** Fixed tick positions on the y axis (the mask chart's lane centres); otherwise chart.js picks them. */
  yTicks?: () => number[];
  /** The user clicked a legend entry. */
  onToggleSeries: (key: string) => void;
  /** The legend text of a compared run's lines (one entry for all of them). */
  overlayLegend?: () => string;
  /** The x axis was zoomed or reset (by the user or through `resetZoom`). */
  onZoomChange?: (zoomed: boolean) => void;
  /**
   * The chart may draw lines against a second y axis on the right (`ChartLine.rightAxis`). Only then
   * does it have one: chart.js builds, ticks and lays out every configured axis on each update,
   * shown or not.
   */
  rightAxis?: boolean;
}

export class MetricChart {
  readonly chart: Chart<'line', Point[]>;
  private readonly formatY: (y: number) => string;
  /** The legend items and what they were made from (see generateLabels). */
  private legendCache: { datasets: unknown; overlayText: string | undefined; items: LegendItem[] } | undefined;
  /** An option or the datasets changed since chart.js last merged the options (see mergeOptionsOnlyWhenChanged). */
  private optionsChanged = true;
  /** Counts those merges: a legend laid out before the last one is laid out again. */
  private optionsGeneration = 0;

  constructor(
    readonly canvas: HTMLCanvasElement,
    theme: ChartTheme,
    options: MetricChartOptions,
  ) {
    this.formatY = options.formatY ?? formatNumber;
    const formatY = this.formatY;
    const formatTooltipY = options.formatTooltipY ?? formatY;
    const zoomChanged = () => options.onZoomChange?.(this.zoomed);
    // Only shown when a line is drawn against it (the task loss when α·κ̄ dwarfs it).
    const rightAxisScale: Record<string, unknown> & { type: 'linear' } = {
      type: 'linear',
      position: 'right',
      display: 'auto',
      grid: { drawOnChartArea: false },
      title: { display: true, text: '' },
      ticks: {
        // Every label is measured (no sampleSize): a y axis has few labelled ticks, and a sampled
        // measurement can miss the widest one and clip it.
        callback(this: Scale, value: number | string) {
          const v = Number(value);
          return this.type === 'logarithmic' ? logTick(v) : formatY(v);
        },
      },
    };
    this.chart = new Chart<'line', Point[]>(canvas, {
      // chart.js's line chart, drawn by FastLineController (webview/fastLine.ts): one path per line, no per-point work per frame.
      type: FastLineController.id as 'line',
      data: { datasets: [] },
      plugins: [pyramidDecimation, positionElementsForEvents, tickFontOncePerLayout],
      options: {
        animation: false,
        parsing: false,
        normalized: true,
        responsive: true,
        maintainAspectRatio: false,
        spanGaps: true,
        interaction: { mode: 'index', intersect: false, axis: 'x' },
        // 1 px lines: without GPU raster, a one-device-pixel line takes Skia's hairline path, ~30×
        // cheaper than stroking a wider noisy polyline. Bevel joins: miters overshoot the extremes.
        elements: { point: { radius: 0, hoverRadius: 3, hitRadius: 4 }, line: { borderWidth: 1, tension: 0, borderJoinStyle: 'bevel' } },
        scales: {
          x: {
            type: 'linear',
            title: { display: true, text: 'step' },
            ticks: { precision: 0, maxRotation: 0, minRotation: 0, sampleSize: 8 },
          },
          ...(options.rightAxis ? { y1: rightAxisScale } : {}),
          y: {
            type: 'linear',
            afterBuildTicks: (scale) => {
              if (options.yTicks) scale.ticks = options.yTicks().map((value) => ({ value }));
            },
            ticks: {
              // Every label is measured (no sampleSize): a y axis has few labelled ticks, and a sampled
              // measurement can miss the widest one and clip it.
              callback(this: Scale, value) {
                const v = Number(value);
                return this.type === 'logarithmic' ? logTick(v) : formatY(v);
              },
            },
          },
        },
        plugins: {
          legend: {
            position: 'bottom',
            align: 'start',
            labels: {
              boxWidth: 12,
              boxHeight: 2,
              // The faint raw twin of a smoothed line has no legend entry of its own, and a compared run
              // has one entry for all its lines (their own names are in the tooltip).
              filter: (item: LegendItem, data) => {
                const ds = data.datasets[item.datasetIndex ?? 0] as LineDataset;
                if (ds.role === 'raw') return false;
                return ds.role !== 'compare' || data.datasets.findIndex((d) => (d as LineDataset).role === 'compare') === item.datasetIndex;
              },
              // chart.js rebuilds the legend twice per update, resolving every dataset's style: the items
              // only change with the lines (a new datasets array), the compared run's name or the theme.
              generateLabels: (chart) => {
                const overlayText = options.overlayLegend?.();
                const cached = this.legendCache;
                if (cached && cached.datasets === chart.data.datasets && cached.overlayText === overlayText) return cached.items;
                const items = Chart.defaults.plugins.legend.labels.generateLabels(chart);
                for (const item of items) {
                  if ((chart.data.datasets[item.datasetIndex ?? 0] as LineDataset).role !== 'compare') continue;
                  item.text = overlayText ?? item.text;
                  item.lineDash = OVERLAY_DASH;
                }
                this.legendCache = { datasets: chart.data.datasets, overlayText, items };
                return items;
              },
            },
            onClick: (_e, item) => {
              const ds = this.chart.data.datasets[item.datasetIndex ?? 0] as LineDataset | undefined;
              if (!ds) return;
              // The compared run's one entry shows or hides all of its lines.
              const keys = ds.role === 'compare' ? (this.chart.data.datasets as LineDataset[]).filter((d) => d.role === 'compare').map((d) => d.seriesKey) : [ds.seriesKey];
              for (const key of keys) options.onToggleSeries(key);
            },
          },
          tooltip: {
            // Raw twins are listed too (as "… (raw)"), so the smoothed and the measured value are both visible.
            callbacks: {
              title: (items: TooltipItem<'line'>[]) => (items.length ? `step ${(items[0].raw as Point).x}` : ''),
              label: (item: TooltipItem<'line'>) => `${item.dataset.label}: ${formatTooltipY((item.raw as Point).y)}`,
            },
          },
          zoom: {
            // x only: the y axis keeps fitting the data. No pan and no pinch, so hammer.js (bundled
            // with the plugin) registers no gesture recognizers.
            zoom: {
              mode: 'x',
              drag: { enabled: true, threshold: 5 },
              // The modifier keeps plain wheel scrolling the panel.
              wheel: { enabled: true, modifierKey: 'ctrl' },
              onZoom: zoomChanged,
              onZoomComplete: zoomChanged,
            },
          },
        },
      },
    });
    mergeOptionsOnlyWhenChanged(this.chart, () => {
      if (!this.optionsChanged) return false;
      this.optionsChanged = false;
      this.optionsGeneration++;
      return true;
    });
    const legend = (this.chart as unknown as { legend?: LegendInternals }).legend;
    if (legend) fitLegendOnlyWhenChanged(legend, () => this.optionsGeneration);
    // No cache of text metrics in front of the context's measureText: its key needed the context's font,
    // and that getter serializes the font (~4 µs with the theme's family list) where measuring a text
    // the context has measured before costs ~0.7 µs; chart.js caches tick label widths itself.
    this.applyTheme(theme);
    canvas.addEventListener('dblclick', () => this.resetZoom());
  }

  /** True while the x axis shows a user-chosen range instead of every step. */
  get zoomed(): boolean {
    const x = this.chart.scales.x?.options;
    return x !== undefined && (x.min !== undefined || x.max !== undefined);
  }

  /** Back to the full range (and to following new points). */
  resetZoom(): void {
    this.optionsChanged = true;
    this.chart.resetZoom('none');
  }

  /** Rebuilds the datasets (after the set of lines or a view setting changed). */
  setLines(lines: readonly ChartLine[], view: LineChartView): void {
    this.lineSeries = lines.map((l) => l.series);
    this.drawnVersions = undefined;
    this.optionsChanged = true;
    const datasets: LineDataset[] = [];
    for (const line of lines) {
      const hidden = view.hidden.has(line.key);
      const common = { seriesKey: line.key, hidden, yAxisID: line.rightAxis && this.chart.options.scales?.y1 ? 'y1' : 'y', stepped: line.stepped ? ('after' as const) : false, pointHoverBackgroundColor: rgba(line.color), pointBackgroundColor: rgba(line.color) };
      if (line.overlay) {
        // Behind the current run's lines, same hue so the pairs read together.
        const smoothed = view.smoothing > 0 && line.smoothable;
        const data = smoothed ? line.series.smoothed : line.series.raw;
        const minMax = smoothed ? line.series.smoothedMinMax : line.series.rawMinMax;
        datasets.push({ ...common, role: 'compare', label: line.label, data, minMax, borderColor: rgba(line.color, 0.55), backgroundColor: rgba(line.color, 0.55), borderDash: OVERLAY_DASH, borderWidth: 1.25, order: 3 });
      } else if (view.smoothing > 0 && line.smoothable) {
        datasets.push({ ...common, role: 'raw', label: `${line.label} (raw)`, data: line.series.raw, minMax: line.series.rawMinMax, borderColor: rgba(line.color, 0.28), borderWidth: 1, order: 2 });
        datasets.push({ ...common, role: 'smoothed', label: line.label, data: line.series.smoothed, minMax: line.series.smoothedMinMax, borderColor: rgba(line.color), backgroundColor: rgba(line.color), borderWidth: 1.5, order: 1 });
      } else {
        datasets.push({ ...common, role: 'plain', label: line.label, data: line.series.raw, minMax: line.series.rawMinMax, borderColor: rgba(line.color), backgroundColor: rgba(line.color), order: 1 });
      }
    }
    this.chart.data.datasets = datasets;
    const y = this.chart.options.scales?.y;
    if (y) {
      y.type = view.logScale ? 'logarithmic' : 'linear';
      y.min = view.yRange?.min;
      y.max = view.yRange?.max;
      (y as { beginAtZero?: boolean }).beginAtZero = !view.logScale && view.beginAtZero === true;
    }
    const y1 = this.chart.options.scales?.y1;
    if (y1) {
      y1.type = view.logScale ? 'logarithmic' : 'linear';
      const right = lines.find((l) => l.rightAxis && !l.overlay);
      // Set in place: the options are chart.js's resolver proxies, which a spread copy breaks.
      const title = (y1 as { title?: { display: boolean; text: string } }).title;
      if (title) {
        title.display = right !== undefined;
        title.text = right ? `${right.label} →` : '';
      }
    }
  }

  /** True if any visible line has a point. */
  get hasData(): boolean {
    return this.chart.data.datasets.some((d) => ((d as LineDataset & { _data?: Point[] })._data ?? d.data).length > 0);
  }

  applyTheme(theme: ChartTheme): void {
    this.drawnVersions = undefined;
    this.legendCache = undefined;
    this.optionsChanged = true;
    const o = this.chart.options;
    o.color = theme.text;
    o.font = { family: theme.fontFamily, size: Math.max(10, theme.fontSize - 2) };
    for (const axis of ['x', 'y', 'y1'] as const) {
      const scale = o.scales?.[axis];
      if (!scale) continue;
      scale.grid = { ...scale.grid, color: theme.grid };
      scale.border = { ...scale.border, color: theme.grid };
      scale.ticks = { ...scale.ticks, color: theme.text };
      if ('title' in scale && scale.title) scale.title = { ...scale.title, color: theme.text };
    }
    const tooltip = o.plugins?.tooltip;
    if (tooltip) Object.assign(tooltip, { backgroundColor: theme.tooltipBackground, borderColor: theme.tooltipBorder, borderWidth: 1, titleColor: theme.text, bodyColor: theme.text });
    const legend = o.plugins?.legend?.labels;
    if (legend) legend.color = theme.text;
  }

  /** The series behind the current lines, and their versions when last drawn (undefined: must redraw). */
  private lineSeries: Series[] = [];
  private drawnVersions: number[] | undefined;

  /**
   * Redraws with the current data and options, no animation, unless nothing it draws changed since the
   * last draw (no line got a point, same lines, theme and options): a chart fed on monitor steps only
   * costs nothing on the frames between them. Returns whether it redrew.
   */
  draw(): boolean {
    const versions = this.lineSeries.map((s) => s.version);
    const previous = this.drawnVersions;
    if (previous && previous.length === versions.length && previous.every((v, i) => v === versions[i])) return false;
    this.chart.update('none');
    this.drawnVersions = versions;
    return true;
  }

  destroy(): void {
    this.chart.destroy();
  }
}
