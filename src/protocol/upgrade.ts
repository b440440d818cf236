// Reading protocol-1 run directories: the one place that knows what protocol 1 called things. Every
// reader of a run directory (the extension re-attaching or opening a recorded run, the trainer resuming
// one) passes each record through `upgradeRecord` before validating it against the protocol-2 schemas.
import { UNIT_NAMES, type ModelFamily } from './config';
import { PROTOCOL_VERSION } from './messages';

/** Protocol 1 named a BERT head an "attention head"; protocol 2 says what a person reads. */
const V1_UNIT_NAMES: Record<string, string> = { 'attention head': 'head' };

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Renames `from` to `to`, keeping the key order readable (a copy; the input is left alone). */
function renamed(record: Json, from: string, to: string): Json {
  if (!(from in record) || to in record) return record;
  const out: Json = {};
  for (const [k, v] of Object.entries(record)) out[k === from ? to : k] = v;
  return out;
}

/** A v1 hello that predates `unitName` gets its family's name, from the resolved config it carries. */
function unitNameOf(hello: Json): string {
  if (typeof hello.unitName === 'string') return V1_UNIT_NAMES[hello.unitName] ?? hello.unitName;
  const family = isObject(hello.config) && isObject(hello.config.model) ? hello.config.model.family : undefined;
  return (typeof family === 'string' && UNIT_NAMES[family as ModelFamily]) || 'expert';
}

/** `freeze {expert}` → `freeze {unit}` (and unfreeze). */
function upgradeCommand(command: unknown): unknown {
  if (!isObject(command) || (command.kind !== 'freeze' && command.kind !== 'unfreeze')) return command;
  return renamed(command, 'expert', 'unit');
}

/**
 * Turns one record of a run directory (a line of metrics.jsonl, commands.jsonl or events.jsonl, or
 * run.json) into its protocol-2 form; a protocol-2 record, or anything it does not recognize, comes
 * back as the very same object (so a caller can tell nothing changed). Never throws: validation is
 * the caller's next step.
 */
export function upgradeRecord(record: unknown): unknown {
  if (!isObject(record)) return record;
  switch (record.type) {
    case 'hello': {
      if (record.protocol !== 1) return record;
      return { ...renamed(record, 'experts', 'unitCount'), protocol: PROTOCOL_VERSION, unitName: unitNameOf(record) };
    }
    case 'metrics':
      return renamed(record, 'experts', 'units');
    case 'ack': {
      const command = upgradeCommand(record.command);
      return command === record.command ? record : { ...record, command };
    }
    case undefined:
      // run.json: the announcement has no `type`; its fields did not change between the versions.
      return record.protocol === 1 && 'runId' in record ? { ...record, protocol: PROTOCOL_VERSION } : record;
    default:
      return record;
  }
}

/**
 * A run directory's config.json written before the gating pruner was trained inside the objective:
 * its pruning schedule (`every`: a decision every N steps; `threshold`: the keep-probability below which
 * a unit went) has no meaning for the annealed pruner, which decides once at warmup + anneal. Those two
 * fields are dropped so the run resumes under the current pruner with its other settings (a copy; the
 * input is left alone). Anything else comes back as the very same object.
 */
export function upgradeConfigSnapshot(config: unknown): unknown {
  if (!isObject(config) || !isObject(config.pruning) || !('every' in config.pruning || 'threshold' in config.pruning)) return config;
  const { every: _every, threshold: _threshold, ...pruning } = config.pruning;
  return { ...config, pruning };
}
