// Parses a `*.pltrain.json` document and locates every problem on its exact line: JSON syntax
// errors, schema violations (from the shared protocol schema), and checks that need the file
// system (a data folder that must exist). Free of `vscode` so it is unit-tested in plain Node.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Node, ParseError, findNodeAtLocation, getNodeValue, parseTree, printParseErrorCode } from 'jsonc-parser';
import { ConfigProblem, DEFAULT_FASHION_MNIST_PATH, TrainingConfig, formatProblem, parseTrainingConfig } from '../../protocol';
import { dataFileProblem } from '../../protocol/dataFile';

export interface TextRange {
  /** 0-based offsets into the document text. */
  start: number;
  end: number;
}

export interface LocatedProblem {
  message: string;
  range: TextRange;
  /** The JSON path (empty for syntax errors). */
  path: (string | number)[];
  /** A JSON syntax error (VS Code's JSON language service marks these itself). */
  syntax?: boolean;
  /** For a misspelled field: the field name to put in its place (the range is the key). */
  suggestion?: string;
}

export interface ConfigAnalysis {
  config?: TrainingConfig;
  problems: LocatedProblem[];
  /** Offsets of interesting keys, for code lenses (undefined when absent). */
  keyOffsets: { alpha?: number; experts?: number; root?: number };
}

/**
 * The range to underline for a problem at `path`: the whole `"key": value` property when it exists
 * (or just the key, for an unknown field), else the nearest existing ancestor.
 */
export function locate(root: Node | undefined, p: (string | number)[], keyOnly = false): TextRange {
  if (!root) return { start: 0, end: 0 };
  for (let n = p.length; n >= 0; n--) {
    const node = findNodeAtLocation(root, p.slice(0, n));
    if (!node) continue;
    const property = node.parent?.type === 'property' ? node.parent : undefined;
    const keyNode = property?.children?.[0];
    if (keyOnly && n === p.length && keyNode) return { start: keyNode.offset, end: keyNode.offset + keyNode.length };
    const target = property ?? node;
    return { start: target.offset, end: target.offset + target.length };
  }
  return { start: 0, end: 0 };
}

export function analyzeConfigText(text: string, configDir: string): ConfigAnalysis {
  const errors: ParseError[] = [];
  const root = parseTree(text, errors, { allowTrailingComma: false, disallowComments: true });
  const problems: LocatedProblem[] = errors.map((e) => ({
    message: `JSON syntax error: ${printParseErrorCode(e.error)}`,
    range: { start: e.offset, end: e.offset + Math.max(1, e.length) },
    path: [],
    syntax: true,
  }));
  const keyOffsets: ConfigAnalysis['keyOffsets'] = {
    root: root?.offset,
    alpha: root ? findNodeAtLocation(root, ['alpha'])?.parent?.offset : undefined,
    experts: root ? findNodeAtLocation(root, ['model', 'experts'])?.parent?.offset : undefined,
  };
  if (errors.length || !root) return { problems, keyOffsets };

  const parsed = parseTrainingConfig(getNodeValue(root));
  if (!parsed.ok) {
    for (const pr of parsed.problems) problems.push(place(root, pr));
    return { problems, keyOffsets };
  }
  const config = parsed.config;
  for (const pr of fileSystemProblems(config, configDir)) problems.push(place(root, pr));
  return { config: problems.length ? undefined : config, problems, keyOffsets };
}

function place(root: Node, pr: ConfigProblem): LocatedProblem {
  const unknownKey = pr.message.startsWith('unknown field');
  return { message: formatProblem(pr), range: locate(root, pr.path, unknownKey), path: pr.path, ...(pr.suggestion ? { suggestion: pr.suggestion } : {}) };
}

/** Checks that need the disk: the trainer would fail on these only after starting. */
export function fileSystemProblems(config: TrainingConfig, configDir: string): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  if (config.script !== undefined) {
    const script = path.resolve(configDir, config.script);
    const st = fs.statSync(script, { throwIfNoEntry: false });
    if (!st) out.push({ path: ['script'], message: `script ${script} does not exist` });
    else if (!st.isFile()) out.push({ path: ['script'], message: `script ${script} is not a file` });
  }
  if (config.data.source === 'fashion-mnist') {
    const dir = config.data.path ? path.resolve(configDir, config.data.path) : DEFAULT_FASHION_MNIST_PATH;
    const where: (string | number)[] = config.data.path ? ['data', 'path'] : ['data', 'source'];
    if (!fs.existsSync(dir)) {
      out.push({ path: where, message: `data folder ${dir} does not exist${config.data.path ? '' : ' (install Debian\'s dataset-fashion-mnist, or set data.path)'}` });
    } else if (!fs.existsSync(path.join(dir, 'train-images-idx3-ubyte.gz')) && !fs.existsSync(path.join(dir, 'train-images-idx3-ubyte'))) {
      out.push({ path: where, message: `no Fashion-MNIST files (train-images-idx3-ubyte[.gz]) in ${dir}` });
    } else {
      // The same refusal the trainer makes (dataFile.ts), on the data.path line, before Start.
      for (const f of ['train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']) {
        const file = [path.join(dir, f), path.join(dir, `${f}.gz`)].find((c) => fs.existsSync(c));
        const bad = file && dataFileProblem(file);
        if (bad) out.push({ path: where, message: bad });
      }
    }
  } else if (config.data.source === 'text') {
    if (config.data.path) {
      const bad = dataFileProblem(path.resolve(configDir, config.data.path));
      if (bad) out.push({ path: ['data', 'path'], message: bad });
    }
  } else if (config.data.path) {
    out.push({ path: ['data', 'path'], message: 'data.path is only used with source "fashion-mnist" or "text"' });
  }
  return out;
}

/** 1-based line number of an offset, for messages that name the line. */
export function lineOf(text: string, offset: number): number {
  let line = 1;
  for (let i = 0; i < offset && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}
