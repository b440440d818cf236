// Stands in for VS Code's webview host inside a plain browser page. Loaded (with the page's nonce)
// before the panel's script, exactly where VS Code would have injected `acquireVsCodeApi`.
// - Messages the panel posts land in `window.__posted` (structured-cloned like the real API does).
// - State lives in sessionStorage, so it survives a reload like VS Code's per-webview state.
// - CSP violations are collected in `window.__cspViolations`.
(() => {
  const STATE_KEY = 'pl-trainer-harness-state';
  let acquired = false;
  window.__posted = [];
  window.__cspViolations = [];
  document.addEventListener('securitypolicyviolation', (e) => {
    window.__cspViolations.push({ directive: e.violatedDirective, blockedURI: e.blockedURI, sample: e.sample, source: e.sourceFile });
  });
  window.acquireVsCodeApi = () => {
    // VS Code allows one call per page load; so does this fake.
    if (acquired) throw new Error('An instance of the VS Code API has already been acquired');
    acquired = true;
    return Object.freeze({
      postMessage(message) {
        window.__posted.push(structuredClone(message));
      },
      getState() {
        const raw = sessionStorage.getItem(STATE_KEY);
        return raw === null ? undefined : JSON.parse(raw);
      },
      setState(state) {
        sessionStorage.setItem(STATE_KEY, JSON.stringify(state));
        return state;
      },
    });
  };
})();
