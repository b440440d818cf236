// Finding and checking the interpreter of the PyTorch engine (python/pltrain). Node-only: the CLI
// (src/trainer/cli.ts) and the extension host both ask it; the webview never imports it (it is not
// re-exported from the protocol index).
import { execFile, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Environment variable naming the interpreter of the PyTorch engine (the CLI's first choice). */
export const PYTHON_ENV = 'PLTRAIN_PYTHON';
/** Debian's interpreter, which sees python3-torch; the `python3` first on PATH may not. */
export const SYSTEM_PYTHON = '/usr/bin/python3';

/** The folder holding the `pltrain` Python package (put on PYTHONPATH), under the package root. */
export function pythonPackageDir(packageRoot: string): string {
  return path.join(packageRoot, 'python');
}

/** What an interpreter lacks for the PyTorch engine. */
export type PythonProblem = { kind: 'no-python' | 'no-torch' | 'no-websockets' | 'too-old'; message: string };

export interface PythonCheck {
  python: string;
  ok: boolean;
  problem?: PythonProblem;
  /** `torch 2.4.0, cuda:0 NVIDIA H200` or `torch 1.13.0, cpu` when ok. */
  detail?: string;
}

// Prints one JSON line; never raises (an ImportError is what we are asking about).
const PROBE = `
import json, sys
out = {"version": list(sys.version_info[:2])}
try:
    import torch
    out["torch"] = torch.__version__
    out["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
except Exception as e:
    out["torchError"] = str(e)
try:
    import websockets
    out["websockets"] = websockets.__version__
except Exception as e:
    out["websocketsError"] = str(e)
print(json.dumps(out))
`;

/** Runs the interpreter once and says whether it can run the engine, and if not, what to install. */
export function checkPython(python: string, timeoutMs = 60_000): PythonCheck {
  return judgeProbe(python, spawnSync(python, ['-c', PROBE], { encoding: 'utf8', timeout: timeoutMs }));
}

/** checkPython without blocking (the extension host must not stall while torch imports). */
export function checkPythonAsync(python: string, timeoutMs = 60_000): Promise<PythonCheck> {
  return new Promise((resolve) => {
    execFile(python, ['-c', PROBE], { encoding: 'utf8', timeout: timeoutMs }, (error, stdout, stderr) => {
      const code = error && typeof (error as { code?: unknown }).code === 'number' ? ((error as { code: number }).code) : error ? null : 0;
      const spawnError = error && typeof (error as { code?: unknown }).code === 'string' ? error : undefined;
      resolve(judgeProbe(python, { error: spawnError, status: code, stdout, stderr }));
    });
  });
}

/** findPython without blocking. */
export async function findPythonAsync(env: NodeJS.ProcessEnv = process.env): Promise<PythonCheck> {
  if (env[PYTHON_ENV]) return checkPythonAsync(env[PYTHON_ENV]!);
  const candidates = fs.existsSync(SYSTEM_PYTHON) ? [SYSTEM_PYTHON, 'python3'] : ['python3'];
  let last: PythonCheck | undefined;
  for (const c of candidates) {
    last = await checkPythonAsync(c);
    if (last.ok) return last;
  }
  return last!;
}

function judgeProbe(python: string, r: { error?: Error; status: number | null; stdout: string; stderr: string }): PythonCheck {
  if (r.error || r.status !== 0) {
    const why = r.error ? (r.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : r.error.message : `exited ${r.status}: ${r.stderr.trim().split('\n').at(-1) ?? ''}`;
    return { python, ok: false, problem: { kind: 'no-python', message: `the PyTorch engine needs Python 3, and "${python}" could not run (${why}); install Python 3 or name one (PLTRAIN_PYTHON, or the setting plTrainer.pythonPath)` } };
  }
  let info: { version: [number, number]; torch?: string; cuda?: string | null; torchError?: string; websocketsError?: string; websockets?: string };
  try {
    info = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '');
  } catch {
    return { python, ok: false, problem: { kind: 'no-python', message: `"${python}" did not answer like a Python 3 interpreter` } };
  }
  if (info.version[0] < 3 || (info.version[0] === 3 && info.version[1] < 8)) {
    return { python, ok: false, problem: { kind: 'too-old', message: `"${python}" is Python ${info.version.join('.')}; the PyTorch engine needs Python 3.8 or later` } };
  }
  if (info.torch === undefined) {
    return { python, ok: false, problem: { kind: 'no-torch', message: `"${python}" cannot import torch (${info.torchError ?? 'not installed'}): run "${python} -m pip install torch websockets", or name another interpreter` } };
  }
  if (info.websockets === undefined) {
    return { python, ok: false, problem: { kind: 'no-websockets', message: `"${python}" has torch but cannot import websockets: run "${python} -m pip install websockets"` } };
  }
  return { python, ok: true, detail: `torch ${info.torch}, ${info.cuda ? `cuda:0 ${info.cuda}` : 'cpu'}` };
}

/**
 * The interpreter for the CLI: PLTRAIN_PYTHON when set; else /usr/bin/python3 when it imports torch;
 * else `python3` from PATH. Returns the first that passes checkPython, or the last check made (with
 * the problem to report).
 */
export function findPython(env: NodeJS.ProcessEnv = process.env): PythonCheck {
  if (env[PYTHON_ENV]) return checkPython(env[PYTHON_ENV]!);
  const candidates = fs.existsSync(SYSTEM_PYTHON) ? [SYSTEM_PYTHON, 'python3'] : ['python3'];
  let last: PythonCheck | undefined;
  for (const c of candidates) {
    last = checkPython(c);
    if (last.ok) return last;
  }
  return last!;
}
