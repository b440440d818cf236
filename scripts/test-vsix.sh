#!/usr/bin/env bash
# The extension as a user gets it: package the VSIX, check what it carries (what runs, nothing else),
# install it into code-server and run the UI test against the installed extension, not the
# development folder. Ends with run.sh's line "vscode: N passed, M failed".
# Uses the devDependency @vscode/vsce (npm ci installs it).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$(mktemp -d /tmp/pltrain-vsix.XXXXXX)"
trap 'rm -rf "$OUT"' EXIT
cd "$ROOT"
[ -f dist/extension.js ] && [ -f dist/trainer.js ] || npm run -s build
VSIX="$OUT/pl-trainer.vsix"
npx vsce package --allow-missing-repository --no-rewrite-relative-links -o "$VSIX" > "$OUT/package.log" 2>&1 || { tail -30 "$OUT/package.log"; exit 1; }
python3 - "$VSIX" <<'PY'
import sys, zipfile
names = [n for n in zipfile.ZipFile(sys.argv[1]).namelist() if n.startswith('extension/')]
size = sum(i.compress_size for i in zipfile.ZipFile(sys.argv[1]).infolist())
problems = []
own = [n for n in names if not n.startswith('extension/node_modules/')]
leftovers = [n for n in own if n.endswith(('.o', '.o.d', 'Makefile', '.mk', 'config.gypi', '.map', '.ts')) or '/experiments/' in n or '/test/' in n or '/src/' in n]
if leftovers: problems.append(f'build leftovers or sources: {leftovers[:5]}')
for need in ['extension/dist/extension.js', 'extension/dist/trainer.js', 'extension/dist/webview/main.js', 'extension/examples/default.pltrain.json', 'extension/schemas/pltrain.schema.json', 'extension/node_modules/@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm']:
    if need not in names: problems.append(f'missing {need}')
if len(names) > 1000: problems.append(f'{len(names)} files (limit 1000)')
if size > 8 * 1024 * 1024: problems.append(f'{size} bytes (limit 8 MiB)')
print(f'vsix: {len(names)} files, {size / 1024 / 1024:.2f} MiB')
if problems:
    print('vsix problems: ' + '; '.join(problems))
    sys.exit(1)
PY
PLTRAIN_VSIX="$VSIX" PLTRAIN_VSCODE_SUITES=ui bash test/vscode/run.sh
