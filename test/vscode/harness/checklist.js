// Shared by the code-server drivers (ui, attach, remote); no environment is read here, so remote.js can
// load it before it points common.js at its tunnel.
/**
 * A driver's checklist: `lap` logs elapsed time under the driver's name, `check` records a named
 * assertion (and throws on a failed one, ending the scenario), and `finish` prints the closing
 * "<name>: N passed, M failed" line test/vscode/run.sh counts, then exits with the verdict.
 */
function checklist(name) {
  const t0 = Date.now();
  const results = [];
  return {
    lap: (m) => console.log(`[${name} ${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`),
    check(what, ok, detail = '') {
      results.push(ok);
      console.log(`  ${ok ? '✔' : '✘'} ${what}${detail ? ` — ${detail}` : ''}`);
      if (!ok) throw new Error(`${what} ${detail}`);
    },
    finish(failed) {
      console.log(`${name}: ${results.filter(Boolean).length} passed, ${failed ? 1 : 0} failed`);
      process.exit(failed ? 1 : 0);
    },
  };
}

module.exports = { checklist };
