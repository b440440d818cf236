// Runs the extension-host mocha suite inside the real VS Code (code-server) — the equivalent of
// @vscode/test-electron's runTests — and exits with the suite's result.
// usage: node exthost.js <extensionDir> <testsIndex.js> <workspaceFolder>
const { workbenchUrl, launch, pipeConsole } = require('./common');
const [devPath, testsPath, folder] = process.argv.slice(2);

(async () => {
  const t0 = Date.now();
  const browser = await launch();
  const page = await browser.newPage();
  let counts = null;
  pipeConsole(page, (line) => {
    const m = /vscode-suite-result passed=(\d+) failed=(\d+)/.exec(line);
    if (m) counts = { passed: Number(m[1]), failed: Number(m[2]) };
    return !m;
  });
  const exited = new Promise((resolve) => page.exposeFunction('codeAutomationExit', (code) => resolve(code)));
  await page.goto(workbenchUrl({ folder, devPath, testsPath, env: { PLTRAIN_TEST_GREP: process.env.PLTRAIN_TEST_GREP || '' } }));
  const limit = Number(process.env.EXTHOST_TEST_TIMEOUT_MS || 300000);
  const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), limit))]);
  await browser.close();
  const c = counts || { passed: 0, failed: 0 };
  const ok = code === 0 && c.passed > 0;
  // A crash, a timeout or a run of zero tests is one failure even when mocha counted none.
  if (!ok && c.failed === 0) c.failed = 1;
  console.log(`extension-host tests: exit=${code}${c.passed === 0 ? ', no test ran' : ''} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
  console.log(`exthost: ${c.passed} passed, ${c.failed} failed`);
  process.exit(ok ? 0 : 1);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
