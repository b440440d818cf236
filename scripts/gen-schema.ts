// Generates schemas/pltrain.schema.json (contributed through `jsonValidation` for IntelliSense and
// hovers in *.pltrain.json) from the same zod schema the trainer and the extension validate with.
// Run: node --import tsx scripts/gen-schema.ts   (a unit test fails if the committed file is stale)
import * as fs from 'node:fs';
import * as path from 'node:path';
import { zodToJsonSchema } from 'zod-to-json-schema';
import { TrainingConfigSchema } from '../src/protocol/config';

export function generateConfigJsonSchema(): string {
  const schema = zodToJsonSchema(TrainingConfigSchema, { name: 'PlTrainConfig', $refStrategy: 'none', target: 'jsonSchema7' });
  return JSON.stringify({ title: 'PL Trainer config (*.pltrain.json)', ...schema }, null, 2) + '\n';
}

export const SCHEMA_FILE = path.join(__dirname, '..', 'schemas', 'pltrain.schema.json');

if (require.main === module) {
  fs.writeFileSync(SCHEMA_FILE, generateConfigJsonSchema());
  console.log(`wrote ${SCHEMA_FILE}`);
}
