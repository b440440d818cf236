// The panel's HTML document: part of the contract between the extension host, which serves it
// (`webview.html`), and the panel's script (webview/main.ts), which fills it in. Plain string
// building, no DOM and no Node, so the host and the browser test harness serve exactly this document.
//
// The static skeleton lives here so the panel paints its layout before the script runs. Every
// `data-testid` is part of the contract with the end-to-end tests; the chart ids are also the keys of
// the panel's persisted settings, so they keep their names.

export interface PanelHtmlOptions {
  /** `webview.cspSource`: the origin the panel's own resources are served from. */
  cspSource: string;
  /** Fresh per render; only scripts/styles carrying it may run. */
  nonce: string;
  /** Webview URI of dist/webview/main.js. */
  scriptUri: string;
  /** Webview URI of dist/webview/main.css. */
  styleUri: string;
  title: string;
}

/** Escapes text for element content and double-quoted attribute values (the only quoting used here). */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c] as string);
}

/**
 * Strict policy: nothing by default, scripts only with the nonce, styles only from the extension's
 * own files (Lit's constructed stylesheets and CSSOM writes are not inline styles, so no
 * 'unsafe-inline' is needed), no connect-src because the webview never opens a socket.
 */
export function contentSecurityPolicy(cspSource: string, nonce: string): string {
  return [
    `default-src 'none'`,
    `script-src 'nonce-${nonce}'`,
    `style-src ${cspSource} 'nonce-${nonce}'`,
    `img-src ${cspSource} data:`,
    `font-src ${cspSource}`,
  ].join('; ') + ';';
}

/** Escapes `text` and keeps Greek letters lower-case inside upper-cased headings (`text-transform` would turn κ into K). */
function withSymbols(text: string): string {
  return escapeHtml(text).replace(/[\u0370-\u03ff]+/g, (g) => `<span class="sym">${g}</span>`);
}

/** The charts, in display order; ids are shared with main.ts and the persisted UI settings. */
export const CHART_CARDS = [
  { id: 'loss', title: 'Loss', hint: 'Total loss L_S + α·κ̄ and the task loss L_S alone' },
  { id: 'metric', title: 'Task metric', hint: 'Task metric reported by the trainer (accuracy for classifiers)' },
  { id: 'expert', title: 'Per unit', hint: 'Per unit (expert, head or channel group), on monitor steps: condition number κ = L_f/μ, PL constant μ (λ_min of the tangent kernel) or smoothness L_f (λ_max)' },
  { id: 'pl', title: 'Regularizer and PL* check', hint: 'κ̄ (mean κ of the trainable units, the term α multiplies) and the PL* ratio ½‖∇f‖²/(f − f*), which PL* theory keeps above μ' },
  { id: 'share', title: 'Routing share', hint: "Per unit, on monitor steps: the unit's share of the model's routing mass on the batch (the shares sum to 1). A unit whose share stays near 0 is flagged inactive, whatever its κ" },
  { id: 'participation', title: 'Participation ratio', hint: 'How many units the model effectively uses: 1/Σ share², between 1 (one unit takes everything) and the number of units (an even split)' },
  { id: 'alpha', title: 'α over steps', hint: 'Regularizer weight α as acknowledged by the trainer' },
  { id: 'mask', title: 'Pruning mask', hint: 'Per unit, on monitor steps: high = trainable, middle = frozen, floor of its lane = pruned (pruned units are frozen too)' },
  { id: 'gate', title: 'Pruning gate', hint: "Per unit, on monitor steps: the gating network's keep-probability. At each pruning decision the units with the lowest probability go, within the budget (runs with pruning enabled)" },
  { id: 'extra', title: 'Model diagnostics', hint: "Scalars the model family reports on monitor steps: under OPT each expert's hyperspherical energy and orthogonality error ‖QᵀQ − I‖; for the Switch transformer each expert's share of the tokens (load)" },
] as const;
export type ChartId = (typeof CHART_CARDS)[number]['id'];

/** The per-unit chart's title for a run's unit name (`Per head`); the document says `Per unit` until the run's hello. */
export function unitChartTitle(unitName: string): string {
  return `Per ${unitName}`;
}

/** Charts shown only for runs that report their data (the rest say "No data yet" until they have some). */
export const OPTIONAL_CHARTS: readonly ChartId[] = ['gate', 'extra', 'share', 'participation'];

/** Charts whose y axis may be switched to logarithmic (the mask chart's lane levels have no scale to log). */
export function hasLogToggle(id: ChartId): boolean {
  // Lanes have no scale to log; shares (0…1) and the participation ratio (1…units) have fixed ranges.
  return id !== 'mask' && id !== 'share' && id !== 'participation';
}

function chartCard(card: (typeof CHART_CARDS)[number]): string {
  // The per-unit card gets a κ / μ / L_f switch; every card gets its own log-scale toggle.
  const metricSwitch =
    card.id === 'expert'
      ? `<div class="segmented" role="radiogroup" aria-label="Per-unit quantity" data-testid="expert-metric">
          <button type="button" role="radio" data-metric="kappa" data-testid="expert-metric-kappa">κ</button>
          <button type="button" role="radio" data-metric="mu" data-testid="expert-metric-mu">μ</button>
          <button type="button" role="radio" data-metric="lf" data-testid="expert-metric-lf">L<sub>f</sub></button>
        </div>`
      : '';
  const logToggle = hasLogToggle(card.id) ? `<vscode-checkbox data-testid="log-${card.id}" title="Logarithmic y axis">log</vscode-checkbox>` : '';
  // Shown only while the chart is zoomed (double-clicking the chart does the same).
  const zoomReset = `<button type="button" class="tool-button" data-testid="zoom-reset-${card.id}" title="Show all steps again (or double-click the chart)" hidden>Reset zoom</button>`;
  return `<section class="card" data-chart="${card.id}" aria-labelledby="title-${card.id}">
      <header class="card-head">
        <h2 id="title-${card.id}" title="${escapeHtml(card.hint)}">${withSymbols(card.title)}</h2>
        <div class="card-tools">
          ${zoomReset}
          ${metricSwitch}
          ${logToggle}
        </div>
      </header>
      <div class="chart-box">
        <canvas id="chart-${card.id}" data-testid="chart-${card.id}" role="img" aria-label="${escapeHtml(card.hint)}"></canvas>
        <p class="chart-empty" data-testid="empty-${card.id}">No data yet</p>
      </div>
    </section>`;
}

export function renderPanelHtml(o: PanelHtmlOptions): string {
  const nonce = escapeHtml(o.nonce);
  return `<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <meta http-equiv="Content-Security-Policy" content="${escapeHtml(contentSecurityPolicy(o.cspSource, o.nonce))}">
  <meta name="viewport" content="width=device-width, initial-scale=1.0">
  <link rel="stylesheet" href="${escapeHtml(o.styleUri)}" nonce="${nonce}">
  <title>${escapeHtml(o.title)}</title>
</head>
<body>
  <main class="panel">
    <header class="run-header">
      <div class="run-title">
        <h1 data-testid="run-id" class="run-id">No run</h1>
        <span class="state-pill" data-testid="run-state" data-state="none">no run</span>
        <span class="connection" data-testid="connection" data-connected="false">—</span>
        <span class="compare-tag" data-testid="compare" hidden>comparing with <span class="compare-id" data-testid="compare-label"></span><button type="button" class="tool-button" data-testid="compare-range" title="The compared run is drawn over this run's steps; show all of its steps" hidden>all steps</button><button type="button" class="compare-clear" data-testid="compare-clear" title="Stop comparing" aria-label="Stop comparing">✕</button></span>
      </div>
      <dl class="facts">
        <div class="fact"><dt>Step</dt><dd data-testid="step">—</dd></div>
        <div class="fact"><dt>Backend</dt><dd data-testid="backend">—</dd></div>
        <div class="fact"><dt><span class="sym">α</span> <span class="muted">(acknowledged)</span></dt><dd data-testid="alpha">—</dd></div>
        <div class="fact"><dt>Loss</dt><dd data-testid="latest-loss">—</dd></div>
        <div class="fact"><dt data-testid="latest-metric-label">Accuracy</dt><dd data-testid="latest-metric">—</dd></div>
        <div class="fact"><dt>Speed</dt><dd data-testid="speed">—</dd></div>
      </dl>
      <vscode-progress-bar class="progress" data-testid="progress" aria-label="Training progress" max="1" value="0"></vscode-progress-bar>
      <div class="run-message" data-testid="run-message-box" role="status" hidden>
        <p class="run-message-text" data-testid="run-message"></p>
        <button type="button" class="run-message-more" data-testid="run-message-more" aria-expanded="false" hidden>More</button>
        <vscode-button secondary data-testid="run-message-remedy" hidden></vscode-button>
      </div>
    </header>

    <section class="toolbar" aria-label="Steering">
      <div class="button-row">
        <vscode-button data-testid="btn-pause" secondary disabled aria-disabled="true">Pause</vscode-button>
        <vscode-button data-testid="btn-resume" secondary disabled aria-disabled="true">Resume</vscode-button>
        <vscode-button data-testid="btn-stop" secondary disabled aria-disabled="true">Stop</vscode-button>
      </div>
      <form class="alpha-form" data-testid="alpha-form" novalidate>
        <label for="alpha-input">α</label>
        <input id="alpha-input" data-testid="alpha-input" class="text-input" type="text" inputmode="decimal" autocomplete="off" spellcheck="false" placeholder="e.g. 0.01" aria-describedby="alpha-error" disabled>
        <vscode-button data-testid="btn-set-alpha" type="submit" disabled aria-disabled="true">Set α</vscode-button>
        <span id="alpha-error" class="field-error" data-testid="alpha-error" role="alert" hidden></span>
      </form>
      <div class="view-options">
        <label class="smoothing" for="smoothing">Smoothing
          <input id="smoothing" data-testid="smoothing" type="range" min="0" max="0.99" step="0.01" value="0">
          <output data-testid="smoothing-value" for="smoothing">0.00</output>
        </label>
        <vscode-button data-testid="btn-export-csv" secondary disabled aria-disabled="true">Export CSV</vscode-button>
        <vscode-button data-testid="btn-export-json" secondary disabled aria-disabled="true">Export JSON</vscode-button>
      </div>
    </section>

    <div class="charts">
      ${CHART_CARDS.map(chartCard).join('\n      ')}
    </div>

    <div class="lower">
      <section class="card experts" aria-labelledby="experts-title">
        <header class="card-head"><h2 id="experts-title" data-testid="units-title">Units</h2><span class="muted" data-testid="experts-measured"></span></header>
        <div class="table-wrap">
          <table class="expert-table" data-testid="expert-table">
            <thead><tr><th scope="col" data-testid="unit-column">Unit</th><th scope="col" class="num"><span class="sym">κ</span></th><th scope="col" class="num"><span class="sym">μ</span></th><th scope="col" class="num">L<sub>f</sub></th><th scope="col" class="flag">Frozen</th><th scope="col" class="flag">Pruned</th><th scope="col"><span class="visually-hidden">Action</span></th></tr></thead>
            <tbody data-testid="expert-rows"><tr class="placeholder"><td colspan="7">No units yet</td></tr></tbody>
          </table>
        </div>
      </section>
      <section class="card commands" aria-labelledby="commands-title">
        <header class="card-head"><h2 id="commands-title">Commands</h2></header>
        <ol class="command-log" data-testid="command-log" aria-live="polite"><li class="placeholder">No commands yet</li></ol>
      </section>
    </div>
  </main>
  <script nonce="${nonce}" src="${escapeHtml(o.scriptUri)}"></script>
</body>
</html>
`;
}
