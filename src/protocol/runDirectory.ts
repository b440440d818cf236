// Node-only facts about a run directory that the trainer and the extension host both ask (the
// webview never imports this; it is not re-exported from the protocol index).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CHECKPOINT_DIRS, CHECKPOINT_MANIFEST } from './runFiles';

/** True when the run directory holds a complete checkpoint to resume from. */
export function hasCheckpoint(runDir: string): boolean {
  return CHECKPOINT_DIRS.some((d) => fs.existsSync(path.join(runDir, d, CHECKPOINT_MANIFEST)));
}
