// The user's own PyTorch script in the real VS Code (issue 13 item 3): a workspace holding a copy of
// examples/attach.pltrain.json ("script": "train_attach.py") and the script; "Start PL training" from the
// command palette runs it attached; the panel shows per-unit κ and the PyTorch backend, and steers it:
// pause, α, freeze, resume, stop. commands.jsonl in the run directory must agree with the panel.
// usage: node attach.js <extensionDir> <workspaceFolder> <screenshot.png>
const fs = require('fs');
const path = require('path');
const { workbenchUrl, launch, paletteCommand } = require('./common');
const { checklist } = require('./checklist');
const [devPath, folder, shot] = process.argv.slice(2);

(async () => {
  const { lap, check, finish } = checklist('attach');
  const browser = await launch();
  const page = await browser.newPage({ viewport: { width: 1500, height: 950 } });
  let failed = false;
  const runCommand = (title) => paletteCommand(page, title);
  const runsDir = path.join(folder, '.pltrain', 'runs');
  const panel = page.frameLocator('iframe.webview.ready').frameLocator('iframe#active-frame');
  const log = panel.locator('[data-testid="command-log"]');
  /** Clicks a panel control and waits for its log entry (matched by its text) to say applied; returns the entry's command id and step. */
  async function steer(what, click) {
    const before = await log.locator('[data-testid^="command-"]').count();
    await click();
    const entry = log.locator('[data-testid^="command-"]', { hasText: what }).nth(0);
    await entry.waitFor({ timeout: 15000 });
    await entry.getByText(/applied at step \d+/).waitFor({ timeout: 30000 });
    const id = (await entry.getAttribute('data-testid')).replace(/^command-/, '');
    const step = Number((await entry.locator('.command-status').textContent()).match(/applied at step (\d+)/)[1]);
    check(`${what} from the panel is applied`, (await log.locator('[data-testid^="command-"]').count()) > before, `applied at step ${step}`);
    return { id, step };
  }
  async function dumpState() {
    const text = async (sel) => ((await panel.locator(sel).first().textContent({ timeout: 2000 }).catch(() => null)) ?? '?').replace(/\s+/g, ' ').trim();
    console.error(`  panel: state "${await text('[data-testid="run-state"]')}", step "${await text('[data-testid="step"]')}", backend "${await text('[data-testid="backend"]')}"`);
    console.error(`  panel command log: ${(await text('[data-testid="command-log"]')).slice(0, 1500)}`);
    const notes = await page.locator('.notifications-toasts .notification-list-item-message').allTextContents().catch(() => []);
    if (notes.length) console.error(`  notifications: ${notes.join(' | ')}`);
    for (const run of fs.existsSync(runsDir) ? fs.readdirSync(runsDir) : []) {
      const tl = path.join(runsDir, run, 'trainer.log');
      if (fs.existsSync(tl)) console.error(`  ${run}/trainer.log (tail):\n${fs.readFileSync(tl, 'utf8').trim().split('\n').slice(-15).map((l) => `    ${l}`).join('\n')}`);
    }
  }
  try {
    await page.goto(workbenchUrl({ folder, devPath }));
    await page.locator('.monaco-workbench .part.statusbar').waitFor({ timeout: 90000 });
    lap('workbench rendered');
    check('"PL Training: Start PL training" runs from the command palette', await runCommand('PL Training: Start PL training'));
    lap('command run');
    // κ of unit 0: a number once measured (every monitor.every steps), "—" where it is not measurable.
    const kappaCell = panel.locator('[data-testid="kappa-0"]');
    let kappaText = '';
    for (let i = 0; i < 240 && !(Number(kappaText) >= 1); i++) {
      kappaText = ((await kappaCell.textContent({ timeout: 1000 }).catch(() => null)) ?? '').trim();
      if (!(Number(kappaText) >= 1)) await page.waitForTimeout(500);
    }
    check('the panel shows per-unit κ of the script\'s model', Number(kappaText) >= 1 || kappaText === '—', `κ₀ = ${kappaText}`);
    const backend = (await panel.locator('[data-testid="backend"]').textContent()).trim();
    check('the backend reads PyTorch', /pytorch/i.test(backend), backend);

    const pause = await steer('Pause', () => panel.locator('[data-testid="btn-pause"]:not([disabled])').click({ timeout: 30000 }));
    await panel.locator('[data-testid="run-state"]').getByText(/paused/i).waitFor({ timeout: 15000 });
    check('the run state shows paused', true);
    await panel.locator('[data-testid="alpha-input"]').fill('0.05');
    const alpha = await steer('Set α = 0.05', () => panel.locator('[data-testid="btn-set-alpha"]:not([disabled])').click({ timeout: 30000 }));
    await panel.locator('[data-testid="alpha"]').getByText('0.05').waitFor({ timeout: 10000 });
    check('the panel shows the acknowledged α', true);
    const freeze = await steer('Freeze expert 1', () => panel.locator('[data-testid="freeze-1"]:not([disabled])', { hasText: 'Freeze' }).click({ timeout: 30000 }));
    await panel.locator('[data-testid="frozen-1"]').getByText('yes').waitFor({ timeout: 10000 });
    check('expert 1 shows frozen', true);
    check('α and the freeze, sent while paused, apply at the paused step', alpha.step === pause.step && freeze.step === pause.step, `pause ${pause.step}, α ${alpha.step}, freeze ${freeze.step}`);
    const resume = await steer('Resume', () => panel.locator('[data-testid="btn-resume"]:not([disabled])').click({ timeout: 30000 }));
    await panel.locator('[data-testid="run-state"]').getByText(/running/i).waitFor({ timeout: 30000 });
    // Let it train on a little before stopping, so the stop is at a later step.
    const stepNow = async () => Number(((await panel.locator('[data-testid="step"]').textContent()) ?? '').match(/^\s*(\d+)/)?.[1] ?? NaN);
    for (let i = 0; i < 60 && !(await stepNow() > resume.step + 5); i++) await page.waitForTimeout(250);
    check('after resume the run trains on', (await stepNow()) > resume.step, `step ${await stepNow()}`);
    const stop = await steer('Stop', () => panel.locator('[data-testid="btn-stop"]:not([disabled])').click({ timeout: 30000 }));
    await panel.locator('[data-testid="run-state"]').getByText(/stopped/i).waitFor({ timeout: 30000 });
    check('stop ends the run', true, (await panel.locator('[data-testid="run-state"]').textContent()).trim());
    await page.waitForTimeout(600); // the charts draw the last points
    await page.screenshot({ path: shot });
    lap(`screenshot ${shot}`);

    // The run directory's acks agree with the panel: each command applied once, at the step the panel shows.
    const runs = fs.readdirSync(runsDir);
    check('one run directory', runs.length === 1, runs.join(', '));
    const acks = fs.readFileSync(path.join(runsDir, runs[0], 'commands.jsonl'), 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
    const expected = { pause, setAlpha: alpha, freeze, resume, stop };
    const got = Object.entries(expected).map(([kind, p]) => {
      const mine = acks.filter((a) => a.commandId === p.id);
      return { kind, ok: mine.length === 1 && mine[0].status === 'applied' && mine[0].step === p.step && mine[0].command.kind === kind, disk: mine.map((a) => `${a.command.kind} ${a.status} @${a.step}`) };
    });
    check('commands.jsonl holds each command applied once, at the panel\'s step', acks.length === 5 && got.every((g) => g.ok), JSON.stringify(got.map((g) => [g.kind, g.disk])) + ` (${acks.length} acks)`);
    const alphaAck = acks.find((a) => a.commandId === alpha.id);
    const freezeAck = acks.find((a) => a.commandId === freeze.id);
    check('the acks carry the panel\'s values (α 0.05, unit 1)', alphaAck.command.alpha === 0.05 && freezeAck.command.unit === 1);
  } catch (e) {
    failed = true;
    console.error(`attach test failed: ${e.message.split('\n')[0]}`);
    await dumpState().catch((err) => console.error(`  (could not read the panel's state: ${err.message.split('\n')[0]})`));
    await page.screenshot({ path: shot.replace(/\.png$/, '') + '-fail.png' }).catch(() => {});
  } finally {
    await browser.close();
  }
  finish(failed);
})();
