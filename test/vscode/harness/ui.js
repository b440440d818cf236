// UI end-to-end in the real VS Code: run "Start PL training" from the command palette, read a κ value
// inside the webview, pause from the panel and see the acknowledged step, then stop.
// usage: node ui.js <extensionDir> <workspaceFolder> <screenshot.png>
const fs = require('fs');
const path = require('path');
const { workbenchUrl, launch, paletteCommand } = require('./common');
const { checklist } = require('./checklist');
// An empty extensionDir: the extension installed in code-server (a packaged VSIX) is the one tested.
const [devPath, folder, shot] = process.argv.slice(2);
const TITLE = 'PL Training: Start PL training';

(async () => {
  const { lap, check, finish } = checklist('ui');
  const browser = await launch();
  const page = await browser.newPage({ viewport: { width: 1500, height: 950 } });
  let failed = false;
  const runCommand = (title) => paletteCommand(page, title);
  /** On a failure: what the panel and the trainer said, so a red CI run explains itself. */
  async function dumpState() {
    const frame = page.frameLocator('iframe.webview.ready').frameLocator('iframe#active-frame');
    const text = async (sel) => ((await frame.locator(sel).first().textContent({ timeout: 2000 }).catch(() => null)) ?? '?').replace(/\s+/g, ' ').trim();
    console.error(`  panel: state "${await text('[data-testid="run-state"]')}", step "${await text('[data-testid="step"]')}", connection "${await text('[data-testid="connection"]')}"`);
    console.error(`  panel experts: ${await text('[data-testid="expert-rows"]')}`);
    console.error(`  panel command log: ${(await text('[data-testid="command-log"]')).slice(0, 1500)}`);
    const notes = await page.locator('.notifications-toasts .notification-list-item-message').allTextContents().catch(() => []);
    if (notes.length) console.error(`  notifications: ${notes.join(' | ')}`);
    const runsDir = path.join(folder, '.pltrain', 'runs');
    for (const run of fs.existsSync(runsDir) ? fs.readdirSync(runsDir) : []) {
      const log = path.join(runsDir, run, 'trainer.log');
      if (fs.existsSync(log)) console.error(`  ${run}/trainer.log (tail):\n${fs.readFileSync(log, 'utf8').trim().split('\n').slice(-15).map((l) => `    ${l}`).join('\n')}`);
    }
  }
  try {
    await page.goto(workbenchUrl({ folder, devPath }));
    await page.locator('.monaco-workbench .part.statusbar').waitFor({ timeout: 90000 });
    lap('workbench rendered');
    // Before any run the status bar says where the extension is; its entry opens the first-run walkthrough.
    const entry = page.locator('.part.statusbar .statusbar-item', { hasText: 'PL Trainer' }).first();
    await entry.waitFor({ timeout: 60000 });
    await entry.click();
    const walkthrough = page.locator('.gettingStartedContainer', { hasText: 'Get to a first PL training run' }).first();
    await walkthrough.waitFor({ timeout: 30000 });
    const steps = await walkthrough.locator('.getting-started-step .step-title').allTextContents();
    check('the status-bar entry opens the walkthrough: config, start, steer, compare', ['Create a training config', 'Start training', 'Steer it live', 'Compare runs'].every((t) => steps.some((x) => x.includes(t))), steps.join(' | '));
    // The step's Markdown renders in its own frame, after the list.
    await page.waitForTimeout(2500);
    await page.screenshot({ path: shot.replace(/panel\.png$/, 'walkthrough.png') });
    check('"View: Close All Editors" runs', await runCommand('View: Close All Editors'));
    // New training config asks the family first, each with its speed on a CPU.
    check('"PL Training: New training config" is in the command palette', await runCommand('PL Training: New training config'));
    const familyRows = page.locator('.quick-input-widget .quick-input-list .monaco-list-row');
    await familyRows.first().waitFor({ timeout: 15000 });
    let families = [];
    for (let i = 0; i < 50 && families.length < 4; i++) {
      families = await familyRows.evaluateAll((rows) => rows.map((r) => r.getAttribute('aria-label') ?? r.textContent));
      if (families.length < 4) await page.waitForTimeout(100);
    }
    families.sort((a, b) => ['moe-mlp', 'switch-transformer', 'bert-encoder', 'vgg'].findIndex((f) => a.startsWith(f)) - ['moe-mlp', 'switch-transformer', 'bert-encoder', 'vgg'].findIndex((f) => b.startsWith(f)));
    check('the family picker offers every family with its speed on a CPU', families.length === 4 && ['moe-mlp', 'switch-transformer', 'bert-encoder', 'vgg'].every((f, i) => families[i].includes(f)) && families.every((f) => /steps\/s on a CPU/.test(f)), families.join(' | '));
    await page.keyboard.press('Escape');
    const found = await runCommand('Start PL training');
    check(`"${TITLE}" is in the command palette`, found);
    lap('command run');
    const panel = page.frameLocator('iframe.webview.ready').frameLocator('iframe#active-frame');
    const kappaCell = panel.locator('[data-testid="kappa-0"]');
    let kappa = NaN;
    for (let i = 0; i < 240 && !(kappa > 0); i++) {
      const text = await kappaCell.textContent({ timeout: 1000 }).catch(() => null);
      kappa = text ? Number(text.trim()) : NaN;
      if (!(kappa > 0)) await page.waitForTimeout(500);
    }
    check('a κ value shows in the webview', Number.isFinite(kappa) && kappa >= 1, `κ₀ = ${kappa}`);
    // The sidebar open while it trains, as a user has it (and so restored open by the reload below).
    await page.locator('.activitybar .action-item a[aria-label^="PL Trainer"]').first().click();
    await page.locator('.pane-body .monaco-list-row', { hasText: 'Backend' }).first().waitFor({ timeout: 30000 });
    const backend = (await panel.locator('[data-testid="backend"]').textContent()).trim();
    check('the backend is shown', /wasm|cpu|tensorflow/i.test(backend), backend);
    await panel.locator('[data-testid="btn-pause"]:not([disabled])').click();
    const log = panel.locator('[data-testid="command-log"]');
    await log.getByText(/applied at step \d+/).first().waitFor({ timeout: 30000 });
    const applied = (await log.textContent()).match(/applied at step (\d+)/);
    check('pause is acknowledged with its step', !!applied, applied && applied[0]);
    await panel.locator('[data-testid="run-state"]').getByText(/paused/i).waitFor({ timeout: 15000 });
    check('the run state shows paused', true);
    // Compare from the sidebar's Runs list: the row's inline button overlays that run, asking nothing
    // (here the run itself: the workspace has no other), and the overlay survives the reload below.
    const runsRow = page.locator('.pane-body .monaco-list-row', { hasText: /^Runs$/ }).first();
    await runsRow.click();
    const runRow = page.locator('.pane-body .monaco-list-row', { hasText: /^ui · \d\d:\d\d/ }).first();
    await runRow.waitFor({ timeout: 15000 });
    await runRow.hover();
    await runRow.locator('.action-label[aria-label^="Compare with run"]').click();
    await panel.locator('[data-testid="compare"]').waitFor({ state: 'visible', timeout: 15000 });
    const comparedId = (await panel.locator('[data-testid="compare-label"]').textContent()).trim();
    const quickInputOpen = await page.locator('.quick-input-widget').isVisible();
    check('the Runs row\'s Compare button overlays that run without asking', /^ui-\d{8}-\d{6}/.test(comparedId) && !quickInputOpen, comparedId);
    await page.waitForTimeout(600); // let the charts draw the last points
    await page.screenshot({ path: shot });
    lap(`screenshot ${shot}`);
    const pausedAt = Number(applied[1]);

    // Reload the window: a new extension host starts; the trainer (detached) keeps its state, the
    // extension re-attaches from the run directory and the serializer restores the panel.
    await page.evaluate(() => (window.__beforeReload = true));
    const reloaded = page.waitForEvent('load', { timeout: 90000 });
    check('"Developer: Reload Window" runs', await runCommand('Developer: Reload Window'));
    await reloaded;
    await page.locator('.monaco-workbench .part.statusbar').waitFor({ timeout: 90000 });
    check('the page really reloaded', await page.evaluate(() => window.__beforeReload === undefined));
    lap('window reloaded');
    const restored = page.frameLocator('iframe.webview.ready').frameLocator('iframe#active-frame');
    await restored.locator('[data-testid="run-state"]').getByText(/paused/i).waitFor({ timeout: 60000 });
    const stepText = (await restored.locator('[data-testid="step"]').textContent()).trim();
    check('after a reload the panel is back, re-attached, still paused at the same step', stepText.startsWith(`${pausedAt} `) || stepText.startsWith(`${pausedAt}/`), stepText);
    const kappaAgain = Number((await restored.locator('[data-testid="kappa-0"]').textContent()).trim());
    check('the restored panel has the history (κ)', kappaAgain > 0, `κ₀ = ${kappaAgain}`);
    await restored.locator('[data-testid="compare"]').waitFor({ state: 'visible', timeout: 15000 });
    check('the comparison is still there after the reload', (await restored.locator('[data-testid="compare-label"]').textContent()).trim() === comparedId);
    await restored.locator('[data-testid="compare-clear"]').click();
    // The sidebar: the PL Trainer view container in the activity bar, with its Metrics view.
    // The view was open before the reload: VS Code restores it and asks for its rows while the extension
    // activates and the trainer replays. Open it only if it is not showing (a click would close it).
    const metricsView = page.locator('.pane-body .monaco-list-row', { hasText: 'Backend' });
    if (!(await metricsView.first().isVisible())) await page.locator('.activitybar .action-item a[aria-label^="PL Trainer"]').first().click();
    await metricsView.first().waitFor({ timeout: 30000 });
    await page.locator('.pane-body .monaco-list-row', { hasText: /κ/ }).first().waitFor({ timeout: 30000 });
    check('the sidebar Metrics view shows the run, its backend and per-expert κ', true);
    const status = page.locator('.part.statusbar .statusbar-item', { hasText: /PL \d+\/200000 · loss [\d.]+/ }).first();
    await status.waitFor({ timeout: 15000 });
    check('the status bar shows the step and loss', true, (await status.textContent()).trim());
    await page.screenshot({ path: shot.replace(/panel\.png$/, 'sidebar.png') });
    // The palette's Freeze prompt names the unit as the run's hello does, and offers the trainable ones (all four:
    // nothing is frozen yet). Asked while the run is paused: a busy panel redrawing at full speed can starve the
    // workbench's quick input on a loaded machine.
    // Read from the workbench's DOM directly: the quick input's title and its rows' accessible names.
    const readPrompt = () =>
      page.evaluate(() => ({
        title: [...document.querySelectorAll('.quick-input-widget .quick-input-title')].map((e) => e.textContent.trim()).find((t) => t) ?? '',
        rows: [...document.querySelectorAll('.quick-input-widget .quick-input-list .monaco-list-row')].map((r) => r.getAttribute('aria-label') ?? r.textContent),
      }));
    // On a loaded machine the palette can drop the Enter that runs the command (it is still filtering):
    // then the palette is still open, with no title; close it and run the command again, three times at most.
    let prompt = { title: '', rows: [] };
    for (let attempt = 0; attempt < 3 && !prompt.title; attempt++) {
      if (attempt) await page.keyboard.press('Escape');
      check(`"PL Training: Freeze unit…" is in the command palette${attempt ? ` (run again, ${attempt + 1})` : ''}`, await runCommand('PL Training: Freeze unit…'));
      prompt = await readPrompt();
      for (let i = 0; i < 50 && !(prompt.title && prompt.rows.length); i++) {
        await page.waitForTimeout(100);
        prompt = await readPrompt();
      }
    }
    const offered = prompt.rows.map((r) => (r.match(/expert \d+/) || [r])[0]);
    check('the Freeze prompt asks which expert, and lists the trainable ones', prompt.title === 'Freeze which expert?' && offered.join(',') === 'expert 0,expert 1,expert 2,expert 3', `"${prompt.title}": ${prompt.rows.join(' | ')}`);
    await page.keyboard.press('Escape');
    await restored.locator('[data-testid="btn-resume"]:not([disabled])').click();
    await restored.locator('[data-testid="run-state"]').getByText(/running/i).waitFor({ timeout: 30000 });
    check('resume from the restored panel is acknowledged', true);
    // After the reload the sidebar keeps moving: its Step row advances while the run trains.
    const stepRow = page.locator('.pane-body .monaco-list-row', { hasText: 'Step' }).first();
    const readStep = async () => Number(((await stepRow.textContent()) ?? '').match(/Step\s*(\d+)/)?.[1] ?? NaN);
    const firstStep = await readStep();
    let laterStep = firstStep;
    for (let i = 0; i < 40 && !(laterStep > firstStep); i++) {
      await page.waitForTimeout(250);
      laterStep = await readStep();
    }
    check('after the reload the sidebar\'s Step row advances', laterStep > firstStep, `${firstStep} → ${laterStep}`);
    const logs = process.env.PLTRAIN_UI_LOGS;
    if (logs) {
      const refused = [];
      const read = [];
      const walkAll = (dir) => {
        for (const e of fs.readdirSync(dir, { withFileTypes: true })) (e.isDirectory() ? walkAll : (f) => read.push(f))(path.join(dir, e.name));
      };
      if (fs.existsSync(logs)) walkAll(logs);
      for (const f of read) if (/Unable to refresh tree view plTrainer\.metrics/.test(fs.readFileSync(f, 'utf8'))) refused.push(f);
      check('VS Code never refused to refresh the Metrics view', read.some((f) => /exthost/i.test(f)) && refused.length === 0, `${read.filter((f) => /exthost/i.test(f)).length} extension-host logs read; refused in: ${refused.join(', ') || 'none'}`);
    }
    const panel2 = restored;

    // Steer α and an expert from the panel; the panel shows the acknowledged values only.
    await panel2.locator('[data-testid="alpha-input"]').fill('0.05');
    await panel2.locator('[data-testid="btn-set-alpha"]:not([disabled])').click();
    await panel2.locator('[data-testid="command-log"] [data-testid^="command-"]', { hasText: /0\.05/ }).getByText(/applied at step \d+/).waitFor({ timeout: 30000 });
    await panel2.locator('[data-testid="alpha"]').getByText('0.05').waitFor({ timeout: 10000 });
    check('α set from the panel is applied and shown as acknowledged', true);
    // The toggle is enabled only while the run is steerable and nothing is pending for expert 1;
    // a click on a disabled toggle does nothing, so wait for it like a user would.
    await panel2.locator('[data-testid="freeze-1"]:not([disabled])', { hasText: 'Freeze' }).click({ timeout: 30000 });
    const freezeEntry = panel2.locator('[data-testid="command-log"] [data-testid^="command-"]', { hasText: 'Freeze expert 1' });
    await freezeEntry.waitFor({ timeout: 10000 });
    await freezeEntry.getByText(/applied at step \d+/).waitFor({ timeout: 30000 });
    await panel2.locator('[data-testid="frozen-1"]').getByText('yes').waitFor({ timeout: 10000 });
    check('freezing expert 1 from the panel shows it frozen once acknowledged', true, (await freezeEntry.locator('.command-status').textContent()).trim());
    await panel2.locator('[data-testid="btn-stop"]:not([disabled])').click();
    await panel2.locator('[data-testid="run-state"]').getByText(/stopped/i).waitFor({ timeout: 30000 });
    check('stop ends the run', true);

    // Export from the panel through VS Code's save dialog; the file must hold metrics.jsonl's numbers.
    const runsDir = path.join(folder, '.pltrain', 'runs');
    const runDir = path.join(runsDir, fs.readdirSync(runsDir)[0]);
    // The host proposes <workspace folder>/<runId>-metrics.json (not the hidden run directory); accept it with the dialog's OK.
    const target = path.join(folder, `${path.basename(runDir)}-metrics.json`);
    await page.waitForTimeout(500); // the stop's final events reach the panel
    await panel2.locator('[data-testid="btn-export-json"]').click();
    const ok = page.locator('.quick-input-widget .monaco-button', { hasText: 'OK' }).first();
    await ok.waitFor({ state: 'visible', timeout: 15000 });
    await ok.click();
    // The file can exist before VS Code has finished writing it: wait until it parses.
    let exported;
    for (let i = 0; i < 150 && exported === undefined; i++) {
      try {
        exported = JSON.parse(fs.readFileSync(target, 'utf8'));
      } catch {
        await page.waitForTimeout(100);
      }
    }
    if (exported === undefined) throw new Error(`no complete export at ${target} after 15 s`);
    // Confirmed where the user looks, with the next steps as buttons.
    // A toast, or (hidden by then, or never shown while the webview held focus) the notification center.
    let toast = page.locator('.notifications-toasts .notification-list-item', { hasText: `Exported ${path.basename(target)}` }).first();
    try {
      await toast.waitFor({ timeout: 5000 });
    } catch {
      check('"Notifications: Show Notifications" runs', await runCommand('Notifications: Show Notifications'));
      toast = page.locator('.notifications-center .notification-list-item', { hasText: `Exported ${path.basename(target)}` }).first();
      await toast.waitFor({ timeout: 10000 });
    }
    const buttons = (await toast.locator('.monaco-button').allTextContents()).map((t) => t.trim());
    check('the export is confirmed with Open and Reveal', buttons.includes('Open') && buttons.includes('Reveal'), buttons.join(', '));
    fs.rmSync(target);
    const recorded = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
    check('the exported loss series equals metrics.jsonl, step for step', same(exported.series.loss, recorded.map((m) => [m.step, m.loss])), `${recorded.length} steps`);
    const kappa0 = recorded.filter((m) => m.units).map((m) => [m.step, m.units[0].kappa]);
    check('the exported κ of expert 0 equals metrics.jsonl', same(exported.units['0'].kappa, kappa0), `${kappa0.length} measurements`);

    // The dark theme, wide and at 900 px: screenshots for the README, and the unit table still fits.
    await page.keyboard.press('Escape');
    check('"Preferences: Toggle between Light/Dark Themes" runs', await runCommand('Preferences: Toggle between Light/Dark Themes'));
    await page.locator('.monaco-workbench.vs-dark').waitFor({ timeout: 15000 });
    await page.waitForTimeout(1500); // the webview rereads the theme variables and redraws
    await page.screenshot({ path: shot.replace(/panel\.png$/, 'panel-dark.png') });
    await page.setViewportSize({ width: 900, height: 950 });
    await page.waitForTimeout(1500);
    const fit = await panel2.locator('.table-wrap').evaluate((w) => ({ overflow: w.scrollWidth - w.clientWidth, right: w.getBoundingClientRect().right, buttons: [...w.querySelectorAll('[data-testid^="freeze-"]')].map((b) => b.getBoundingClientRect().right) }));
    check('at 900 px the unit table needs no sideways scrolling and every Freeze button is inside it', fit.overflow <= 0 && fit.buttons.length === 4 && fit.buttons.every((r) => r <= fit.right + 0.5), JSON.stringify(fit));
    await page.screenshot({ path: shot.replace(/panel\.png$/, 'panel-dark-900.png') });
  } catch (e) {
    failed = true;
    console.error(`UI test failed: ${e.message.split('\n')[0]}`);
    await dumpState().catch((err) => console.error(`  (could not read the panel's state: ${err.message.split('\n')[0]})`));
    await page.screenshot({ path: shot.replace(/\.png$/, '') + '-fail.png' }).catch(() => {});
  } finally {
    await browser.close();
  }
  finish(failed);
})();
