// "Install the GPU backend": puts @tensorflow/tfjs-node-gpu next to the trainer on the machine where
// it runs (the remote, under Remote-SSH). That package links libtensorflow 2.9.1, which needs
// CUDA 11.2 and cuDNN 8.1 at run time and downloads its binary at install time; say so plainly
// before the user waits on an install that cannot work.
import { execFile, spawn } from 'node:child_process';
import * as vscode from 'vscode';
import { TFJS_NODE_GPU, checkCudaLibraries } from './gpu/cudaCheck';
import { confirm, notify, progress } from './vscode/ui';

function run(cmd: string, args: string[]): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => execFile(cmd, args, { timeout: 10_000 }, (err, stdout, stderr) => resolve({ ok: !err, out: `${stdout}${stderr}` })));
}

export async function installGpuBackend(extensionDir: string, log: vscode.LogOutputChannel): Promise<boolean> {
  const [ld, smi] = await Promise.all([run('ldconfig', ['-p']), run('nvidia-smi', ['-L'])]);
  const cuda = checkCudaLibraries(ld.out, smi.ok);
  log.info(`GPU backend check: ${cuda.explanation}`);
  if (!cuda.ok) {
    const detail = `${cuda.explanation}\n\n${TFJS_NODE_GPU} needs an NVIDIA driver, CUDA 11.2 and cuDNN 8.1, and downloads libtensorflow 2.9.1 while installing (so the machine needs access to storage.googleapis.com or a TFJS_NODE_CDN_STORAGE mirror).`;
    if (!(await confirm('The GPU backend will probably not load on this machine.', 'Install anyway', detail))) return false;
  }
  const npm = vscode.workspace.getConfiguration('plTrainer').get<string>('npmPath') || 'npm';
  let child: ReturnType<typeof spawn> | undefined;
  return progress(
    `Installing ${TFJS_NODE_GPU}`,
    (report) =>
      new Promise<boolean>((resolve) => {
        const install = spawn(npm, ['install', '--no-save', '--no-audit', '--no-fund', TFJS_NODE_GPU], { cwd: extensionDir, env: process.env });
        child = install;
        let tail = '';
        const onData = (d: Buffer) => {
          const text = d.toString();
          tail = (tail + text).slice(-4000);
          for (const line of text.split('\n').filter((l) => l.trim())) {
            log.info(`[npm] ${line}`);
            report(line.slice(0, 80));
          }
        };
        install.stdout.on('data', onData);
        install.stderr.on('data', onData);
        install.on('error', (e) => {
          notify('error', `Could not run ${npm}: ${e.message}. Set plTrainer.npmPath.`);
          resolve(false);
        });
        install.on('close', (code) => {
          if (code === 0) {
            notify('info', 'GPU backend installed. New runs use tensorflow-gpu when it loads; the sidebar and the panel show the backend in use.');
            resolve(true);
          } else {
            const cause = /ENOTFOUND|EAI_AGAIN|ECONNREFUSED/.test(tail) ? 'the install could not download libtensorflow (no network access to its host)' : `npm exited with code ${code}`;
            notify('error', `Installing the GPU backend failed: ${cause}. Training keeps using the CPU backend.`, { actions: [{ title: 'Show log', run: () => log.show(true) }] });
            resolve(false);
          }
        });
      }),
    () => child?.kill(),
  );
}
