// How a run is named to a person: its config's name and when it started, short ("default · 15:02",
// "default · Dec 4 15:02"); the full run id goes in the tooltip. Free of `vscode` (unit-tested).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { RUN_FILES } from '../../protocol';

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** A start time as short as it can be told apart: the time today, the date this year, else the year too. */
export function shortTime(at: Date, now: Date): string {
  const hm = `${String(at.getHours()).padStart(2, '0')}:${String(at.getMinutes()).padStart(2, '0')}`;
  if (at.toDateString() === now.toDateString()) return hm;
  const day = `${MONTHS[at.getMonth()]} ${at.getDate()}`;
  return at.getFullYear() === now.getFullYear() ? `${day} ${hm}` : `${at.getFullYear()} ${day} ${hm}`;
}

/** The start time in a run directory's name (`<name>-YYYYMMDD-HHMMSS[-xxxx]`), when it has one. */
export function stampOf(dirName: string): Date | undefined {
  const m = /-(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})(?:-[0-9a-f]{4})?$/.exec(dirName);
  return m ? new Date(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) : undefined;
}

/** The config name a run directory recorded (config.json), or undefined. */
export function recordedName(runDir: string): string | undefined {
  try {
    const name = JSON.parse(fs.readFileSync(path.join(runDir, RUN_FILES.config), 'utf8')).name;
    return typeof name === 'string' && name ? name : undefined;
  } catch {
    return undefined;
  }
}

/** "name · time" for a run directory; the directory's own name when nothing better is known. */
export function runLabel(runDir: string, name: string | undefined, startedAt: number | undefined, now = new Date()): string {
  const dirName = path.basename(runDir);
  const at = startedAt !== undefined ? new Date(startedAt) : stampOf(dirName);
  if (!name) return dirName;
  return at ? `${name} · ${shortTime(at, now)}` : name;
}
