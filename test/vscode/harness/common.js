// Shared by the code-server drivers: workbench URL with the dev-extension payload, Chromium launch,
// and relaying the extension host's console (mocha's reporter) to our stdout.
const util = require('util');
const { chromium } = require('playwright-core');

const BASE = process.env.CS_BASE || 'http://127.0.0.1:18090';
const AUTHORITY = new URL(BASE).host; // the "remote authority" the browser sees

function workbenchUrl({ folder, devPath, testsPath, env }) {
  const payload = [];
  if (devPath) payload.push(['extensionDevelopmentPath', `vscode-remote://${AUTHORITY}${devPath}`]);
  if (testsPath) payload.push(['extensionTestsPath', `vscode-remote://${AUTHORITY}${testsPath}`]);
  if (env) payload.push(['extensionEnvironment', JSON.stringify(env)]);
  let url = `${BASE}/?folder=${encodeURIComponent(folder)}`;
  if (payload.length) url += `&payload=${encodeURIComponent(JSON.stringify(payload))}`;
  return url;
}

function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // PLTRAIN_UI_SLOWMO (ms per action) reproduces a slow CI machine: the trainer runs on while the UI lags.
    slowMo: Number(process.env.PLTRAIN_UI_SLOWMO) || 0,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

const NOISE = /open-vsx|ChatModelSelection|AgentHost|AccountPolicyGate|connection token|Creating a socket|Failed to load resource|same-origin iframe|^Canceled|grace time|Service Worker|sandbox attribute|additional builtin|copilot|vsda|punycode|ExperimentalWarning|DEP0040|authentication provider/i;

function pipeConsole(page, filter = () => true) {
  page.on('console', async (m) => {
    let args;
    try {
      args = await Promise.all(m.args().map((a) => a.jsonValue()));
    } catch {
      args = [m.text()];
    }
    if (typeof args[0] === 'string' && args[0].startsWith('%c')) {
      const rest = args[0].replace(/^%c\s*\S*\s*/, '');
      args = rest ? [rest, ...args.slice(2)] : args.slice(2);
    }
    let line = util.format(...args).replace(/\s+$/, '');
    if (m.type() === 'error') line = line.split('\n    at ')[0];
    if (line && !NOISE.test(line) && filter(line, m)) console.log(line);
  });
}

/**
 * Runs a command from the palette by its title. Entries appear once the extension host has registered
 * them, and a loaded machine can drop the palette's first keystrokes, so it retries (up to 40 times).
 */
async function paletteCommand(page, title) {
  const input = page.locator('.quick-input-widget input');
  const row = page.locator('.quick-input-list .monaco-list-row', { hasText: title }).first();
  for (let i = 0; i < 40; i++) {
    await page.keyboard.press('F1');
    try {
      await input.waitFor({ state: 'visible', timeout: 5000 });
    } catch {
      continue;
    }
    await input.fill('>' + title);
    try {
      await row.waitFor({ timeout: 2000 });
      await page.keyboard.press('Enter');
      return true;
    } catch {
      await page.keyboard.press('Escape');
    }
  }
  return false;
}

module.exports = { BASE, workbenchUrl, launch, pipeConsole, paletteCommand };
