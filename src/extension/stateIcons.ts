// One codicon per run state, for the sidebar's run row and the status bar.
import type { RunState } from '../protocol';

export const STATE_ICONS: Record<RunState, string> = {
  starting: 'loading~spin',
  running: 'pulse',
  paused: 'debug-pause',
  completed: 'pass',
  stopped: 'debug-stop',
  failed: 'error',
};
