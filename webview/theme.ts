// Chart colours and fonts from the VS Code theme. Webviews get the theme as `--vscode-*` CSS
// variables; canvas drawing cannot use `var()`, so they are resolved to concrete rgb() values here.

export interface Rgb {
  r: number;
  g: number;
  b: number;
  a: number;
}

export interface ChartTheme {
  /** Tick labels, legend text. */
  text: string;
  /** Grid lines and axis borders. */
  grid: string;
  tooltipBackground: string;
  tooltipBorder: string;
  fontFamily: string;
  fontSize: number;
  /** Series colours, in assignment order (each with at least MIN_SERIES_CONTRAST against `background`). */
  palette: Rgb[];
  /** The editor background the charts are drawn on. */
  background: Rgb;
}

/** VS Code's own chart colours, then fallbacks for themes that lack them. */
const PALETTE_VARIABLES: [string, string][] = [
  ['--vscode-charts-blue', '#3794ff'],
  ['--vscode-charts-orange', '#d18616'],
  ['--vscode-charts-green', '#89d185'],
  ['--vscode-charts-purple', '#b180d7'],
  ['--vscode-charts-red', '#f14c4c'],
  ['--vscode-charts-yellow', '#cca700'],
];

export function rgba(c: Rgb, alpha = c.a): string {
  return `rgba(${c.r}, ${c.g}, ${c.b}, ${alpha})`;
}

/** Parses the `rgb(…)`/`rgba(…)` form that getComputedStyle returns for colours. */
export function parseRgb(text: string): Rgb | undefined {
  const m = /^rgba?\(\s*([\d.]+)[\s,]+([\d.]+)[\s,]+([\d.]+)(?:[\s,/]+([\d.]+%?))?\s*\)$/.exec(text.trim());
  if (!m) return undefined;
  const alpha = m[4] === undefined ? 1 : m[4].endsWith('%') ? parseFloat(m[4]) / 100 : parseFloat(m[4]);
  return { r: Math.round(+m[1]), g: Math.round(+m[2]), b: Math.round(+m[3]), a: alpha };
}

/** WCAG relative luminance of an sRGB colour (0 black … 1 white). */
export function relativeLuminance(c: Rgb): number {
  const lin = (v: number) => {
    const x = v / 255;
    return x <= 0.04045 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * lin(c.r) + 0.7152 * lin(c.g) + 0.0722 * lin(c.b);
}

/** WCAG contrast ratio of two colours, 1 (same) … 21 (black on white). */
export function contrastRatio(a: Rgb, b: Rgb): number {
  const [hi, lo] = [relativeLuminance(a), relativeLuminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

/** The contrast a series line needs against the panel (WCAG's 3:1 for graphics). */
export const MIN_SERIES_CONTRAST = 3;

/**
 * `color`, mixed towards white on a dark background (towards black on a light one) just enough to
 * reach `minRatio` against `background`. Some themes give a chart colour that nearly vanishes on
 * their own background (a dark orange on Dark Modern read as brown on near-black); a line the user
 * cannot see is a number they cannot steer by.
 */
export function withContrast(color: Rgb, background: Rgb, minRatio = MIN_SERIES_CONTRAST): Rgb {
  if (contrastRatio(color, background) >= minRatio) return color;
  const target = relativeLuminance(background) < 0.5 ? 255 : 0;
  const mix = (t: number): Rgb => ({ r: Math.round(color.r + (target - color.r) * t), g: Math.round(color.g + (target - color.g) * t), b: Math.round(color.b + (target - color.b) * t), a: color.a });
  // Bisection on the mix fraction: contrast grows monotonically towards the far end.
  let [lo, hi] = [0, 1];
  for (let k = 0; k < 20; k++) {
    const mid = (lo + hi) / 2;
    if (contrastRatio(mix(mid), background) >= minRatio) hi = mid;
    else lo = mid;
  }
  return mix(hi);
}

/** Extra, well-separated hues for runs with more units than the theme has chart colours. */
export function extraColor(index: number): Rgb {
  const h = (index * 137.508) % 360; // golden angle
  const s = 0.55;
  const l = 0.62;
  const k = (n: number) => (n + h / 30) % 12;
  const a = s * Math.min(l, 1 - l);
  const f = (n: number) => l - a * Math.max(-1, Math.min(k(n) - 3, Math.min(9 - k(n), 1)));
  return { r: Math.round(255 * f(0)), g: Math.round(255 * f(8)), b: Math.round(255 * f(4)), a: 1 };
}

/**
 * Reads the theme from the document. A hidden probe element resolves each variable through the CSS
 * engine (`color: var(--x, fallback)`), which normalizes hex, named and rgba colours to rgb().
 */
export function readChartTheme(doc: Document = document): ChartTheme {
  const probe = doc.createElement('span');
  probe.hidden = true;
  doc.body.appendChild(probe);
  const resolve = (variable: string, fallback: string): Rgb => {
    probe.style.color = `var(${variable}, ${fallback})`;
    return parseRgb(getComputedStyle(probe).color) ?? parseRgb(fallbackRgb(fallback)) ?? { r: 128, g: 128, b: 128, a: 1 };
  };
  try {
    const fg = resolve('--vscode-foreground', '#cccccc');
    const muted = resolve('--vscode-descriptionForeground', rgba(fg, 0.75));
    const widget = resolve('--vscode-editorWidget-background', '#252526');
    const widgetBorder = resolve('--vscode-editorWidget-border', rgba(fg, 0.25));
    const background = resolve('--vscode-editor-background', '#1e1e1e');
    const palette = PALETTE_VARIABLES.map(([v, fb]) => withContrast(resolve(v, fb), background));
    const rootStyle = getComputedStyle(doc.documentElement);
    const fontFamily = rootStyle.getPropertyValue('--vscode-font-family').trim() || getComputedStyle(doc.body).fontFamily || 'sans-serif';
    const fontSize = parseFloat(rootStyle.getPropertyValue('--vscode-font-size')) || 13;
    return {
      text: rgba(muted),
      grid: rgba(fg, 0.12),
      tooltipBackground: rgba(widget, 1),
      tooltipBorder: rgba(widgetBorder),
      fontFamily,
      fontSize,
      palette,
      background,
    };
  } finally {
    probe.remove();
  }
}

function fallbackRgb(hex: string): string {
  const m = /^#([0-9a-f]{6})$/i.exec(hex);
  if (!m) return hex;
  const n = parseInt(m[1], 16);
  return `rgb(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255})`;
}

/** Colour of the i-th series (units keep their colour across charts and reloads). */
export function seriesColor(theme: ChartTheme, index: number): Rgb {
  return index < theme.palette.length ? theme.palette[index] : withContrast(extraColor(index), theme.background);
}
