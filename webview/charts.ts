// chart.js line charts tuned for long, live runs: data in chart.js's internal {x, y} format
// (`parsing: false`, `normalized: true`), no animation, min/max decimation at draw time, redraws
// with `update('none')` (the caller batches them per animation frame).
import {
  Chart,
  Decimation,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  LogarithmicScale,
  PointElement,
  Tooltip,
  type ChartDataset,
  type LegendItem,
  type Scale,
  type TooltipItem,
} from 'chart.js';
import { formatNumber } from './format';
import type { Point, Series } from './series';
import { rgba, type ChartTheme, type Rgb } from './theme';

Chart.register(LineController, LineElement, PointElement, LinearScale, LogarithmicScale, Decimation, Legend, Tooltip);

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
}

export interface LineChartView {
  smoothing: number;
  hidden: ReadonlySet<string>;
  logScale: boolean;
}

type Role = 'raw' | 'smoothed' | 'plain';
type LineDataset = ChartDataset<'line', Point[]> & { seriesKey: string; role: Role };

/** Tick labels on a log axis: only 1, 2 and 5 × 10ⁿ, in compact form (`1e+4`, `0.02`). */
function logTick(value: number): string {
  const significand = value / Math.pow(10, Math.floor(Math.log10(value)));
  const rounded = Math.round(significand * 1e6) / 1e6;
  if (rounded !== 1 && rounded !== 2 && rounded !== 5) return '';
  const abs = Math.abs(value);
  return abs >= 1e4 || abs < 1e-3 ? value.toExponential() : String(Number(value.toPrecision(3)));
}

export interface MetricChartOptions {
  /** Formats y values in ticks and tooltips (defaults to `formatNumber`). */
  formatY?: (y: number) => string;
  /** The user clicked a legend entry. */
  onToggleSeries: (key: string) => void;
}

export class MetricChart {
  readonly chart: Chart<'line', Point[]>;
  private readonly formatY: (y: number) => string;

  constructor(
    readonly canvas: HTMLCanvasElement,
    theme: ChartTheme,
    options: MetricChartOptions,
  ) {
    this.formatY = options.formatY ?? formatNumber;
    const formatY = this.formatY;
    this.chart = new Chart<'line', Point[]>(canvas, {
      type: 'line',
      data: { datasets: [] },
      options: {
        animation: false,
        parsing: false,
        normalized: true,
        responsive: true,
        maintainAspectRatio: false,
        spanGaps: true,
        interaction: { mode: 'index', intersect: false, axis: 'x' },
        elements: { point: { radius: 0, hoverRadius: 3, hitRadius: 4 }, line: { borderWidth: 1.5, tension: 0 } },
        scales: {
          x: {
            type: 'linear',
            title: { display: true, text: 'step' },
            ticks: { precision: 0, maxRotation: 0, minRotation: 0, sampleSize: 8 },
          },
          y: {
            type: 'linear',
            ticks: {
              sampleSize: 8,
              callback(this: Scale, value) {
                const v = Number(value);
                return this.type === 'logarithmic' ? logTick(v) : formatY(v);
              },
            },
          },
        },
        plugins: {
          decimation: { enabled: true, algorithm: 'min-max' },
          legend: {
            position: 'bottom',
            align: 'start',
            labels: {
              boxWidth: 12,
              boxHeight: 2,
              // The faint raw twin of a smoothed line has no legend entry of its own.
              filter: (item: LegendItem, data) => (data.datasets[item.datasetIndex ?? 0] as LineDataset).role !== 'raw',
            },
            onClick: (_e, item) => {
              const ds = this.chart.data.datasets[item.datasetIndex ?? 0] as LineDataset | undefined;
              if (ds) options.onToggleSeries(ds.seriesKey);
            },
          },
          tooltip: {
            // Raw twins are listed too (as "… (raw)"), so the smoothed and the measured value are both visible.
            callbacks: {
              title: (items: TooltipItem<'line'>[]) => (items.length ? `step ${(items[0].raw as Point).x}` : ''),
              label: (item: TooltipItem<'line'>) => `${item.dataset.label}: ${formatY((item.raw as Point).y)}`,
            },
          },
        },
      },
    });
    this.applyTheme(theme);
  }

  /** Rebuilds the datasets (after the set of lines or a view setting changed). */
  setLines(lines: readonly ChartLine[], view: LineChartView): void {
    const datasets: LineDataset[] = [];
    for (const line of lines) {
      const hidden = view.hidden.has(line.key);
      const common = { seriesKey: line.key, hidden, stepped: line.stepped ? ('after' as const) : false, pointHoverBackgroundColor: rgba(line.color), pointBackgroundColor: rgba(line.color) };
      if (view.smoothing > 0 && line.smoothable) {
        datasets.push({ ...common, role: 'raw', label: `${line.label} (raw)`, data: line.series.raw, borderColor: rgba(line.color, 0.28), borderWidth: 1, order: 2 });
        datasets.push({ ...common, role: 'smoothed', label: line.label, data: line.series.smoothed, borderColor: rgba(line.color), backgroundColor: rgba(line.color), order: 1 });
      } else {
        datasets.push({ ...common, role: 'plain', label: line.label, data: line.series.raw, borderColor: rgba(line.color), backgroundColor: rgba(line.color), order: 1 });
      }
    }
    this.chart.data.datasets = datasets;
    const y = this.chart.options.scales?.y;
    if (y) y.type = view.logScale ? 'logarithmic' : 'linear';
  }

  /** True if any visible line has a point. */
  get hasData(): boolean {
    return this.chart.data.datasets.some((d) => ((d as LineDataset & { _data?: Point[] })._data ?? d.data).length > 0);
  }

  applyTheme(theme: ChartTheme): void {
    const o = this.chart.options;
    o.color = theme.text;
    o.font = { family: theme.fontFamily, size: Math.max(10, theme.fontSize - 2) };
    for (const axis of ['x', 'y'] as const) {
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

  /** Redraws with the current data and options; no animation. */
  draw(): void {
    this.chart.update('none');
  }

  destroy(): void {
    this.chart.destroy();
  }
}
