// Generates schemas/pltrain.schema.json (contributed through `jsonValidation`) from the same zod schema
// the trainer and the extension validate with. It is an IntelliSense schema: descriptions (hovers),
// defaults and allowed values (completion), but no constraints. The extension's own diagnostic is the
// one place a config problem is reported (on its line, with "did you mean" and a quick fix, in the
// words Start uses); constraints here would make VS Code's JSON service report each problem again.
// Run: node --import tsx scripts/gen-schema.ts   (a unit test fails if the committed file is stale)
import * as fs from 'node:fs';
import * as path from 'node:path';
import { zodToJsonSchema } from 'zod-to-json-schema';
import { TrainingConfigSchema } from '../src/protocol/config';

/** Keywords that only validate: the JSON language service would report a violation of any of them. */
export const VALIDATION_KEYWORDS = ['type', 'additionalProperties', 'required', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'minLength', 'maxLength', 'pattern', 'minItems', 'maxItems', 'multipleOf', 'enum', 'const'] as const;

type Json = { [key: string]: unknown };

/** One schema node without its constraints; allowed values become completion `examples`. */
export function completionOnly(node: Json): Json {
  const out: Json = {};
  const examples: unknown[] = [];
  if (Array.isArray(node.enum)) examples.push(...node.enum);
  if (node.const !== undefined) examples.push(node.const);
  if (node.type === 'boolean') examples.push(true, false);
  for (const [key, value] of Object.entries(node)) {
    if ((VALIDATION_KEYWORDS as readonly string[]).includes(key)) continue;
    if (key === 'properties' && value && typeof value === 'object') {
      out.properties = Object.fromEntries(Object.entries(value as Record<string, Json>).map(([k, v]) => [k, completionOnly(v)]));
    } else if (key === 'items' && value && typeof value === 'object') {
      out.items = completionOnly(value as Json);
    } else if (key === 'definitions' && value && typeof value === 'object') {
      out.definitions = Object.fromEntries(Object.entries(value as Record<string, Json>).map(([k, v]) => [k, completionOnly(v)]));
    } else {
      out[key] = value;
    }
  }
  // The descriptions use `code` spans: hovers render them as Markdown.
  if (typeof node.description === 'string') out.markdownDescription = node.description;
  if (examples.length) out.examples = [...new Set(examples)];
  return out;
}

export function generateConfigJsonSchema(): string {
  const schema = zodToJsonSchema(TrainingConfigSchema, { name: 'PlTrainConfig', $refStrategy: 'none', target: 'jsonSchema7' }) as Json;
  return JSON.stringify({ title: 'PL Trainer config (*.pltrain.json)', ...completionOnly(schema) }, null, 2) + '\n';
}

export const SCHEMA_FILE = path.join(__dirname, '..', 'schemas', 'pltrain.schema.json');

if (require.main === module) {
  fs.writeFileSync(SCHEMA_FILE, generateConfigJsonSchema());
  console.log(`wrote ${SCHEMA_FILE}`);
}
