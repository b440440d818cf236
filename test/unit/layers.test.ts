// Layers import only downward: src/protocol/ at the ground, then src/trainer/ and webview/, then the
// extension host (src/extension/). Read from the sources' import statements, so a new upward or
// sideways import fails here, naming the file and what it imports.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

const root = path.resolve(__dirname, '..', '..');
const LAYERS = { protocol: 'src/protocol', trainer: 'src/trainer', webview: 'webview', extension: 'src/extension' } as const;
type Layer = keyof typeof LAYERS;
/** What each layer may import besides itself. */
const ALLOWED: Record<Layer, Layer[]> = { protocol: [], trainer: ['protocol'], webview: ['protocol'], extension: ['protocol'] };

function sources(dir: string): string[] {
  return fs.readdirSync(path.join(root, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) return sources(rel);
    return /\.ts$/.test(e.name) ? [rel] : [];
  });
}

function layerOf(file: string): Layer | undefined {
  return (Object.keys(LAYERS) as Layer[]).find((l) => file === LAYERS[l] || file.startsWith(`${LAYERS[l]}/`));
}

test('every import of src/protocol, src/trainer, webview and src/extension points down (or within its own layer)', () => {
  const violations: string[] = [];
  let imports = 0;
  for (const layer of Object.keys(LAYERS) as Layer[]) {
    for (const file of sources(LAYERS[layer])) {
      const text = fs.readFileSync(path.join(root, file), 'utf8');
      for (const m of text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+['"](\.[^'"]+)['"]/g)) {
        imports++;
        const target = path.relative(root, path.resolve(root, path.dirname(file), m[1]));
        const to = layerOf(target);
        if (to === undefined || to === layer) continue;
        if (!ALLOWED[layer].includes(to)) violations.push(`${file} (${layer}) imports ${m[1]} (${to})`);
      }
    }
  }
  assert.ok(imports > 100, `read ${imports} imports`);
  assert.deepEqual(violations, []);
});
