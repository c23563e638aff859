/**
 * Reading the installed product's version as the plan says (a file or a command, with an
 * optional regex whose first group is the version), and comparing versions like GoCD's
 * "23.1.0 (16079-abc)": the leading dotted numbers decide.
 */
import { promises as fsp } from 'node:fs';
import type { Plan } from './plan.js';
import { runCommand } from './run-command.js';

export async function readInstalledVersion(plan: Plan): Promise<string | null> {
  const v = plan.version;
  if (!v) return null;
  let text: string;
  if (v.file) {
    try {
      text = await fsp.readFile(v.file, 'utf8');
    } catch {
      return null;
    }
  } else {
    const r = await runCommand(v.command!, { timeoutMs: 30_000 });
    if (!r.ok) return null;
    text = r.outputTail;
  }
  if (v.regex) {
    const m = new RegExp(v.regex, 'm').exec(text);
    return m ? (m[1] ?? m[0]).trim() : null;
  }
  return text.trim() || null;
}

/** The dotted numeric prefix of a version string: "23.1.0 (16079-abc)" -> [23, 1, 0]. */
export function versionNumbers(v: string): number[] {
  const m = /\d+(?:\.\d+)*/.exec(v);
  return m ? m[0].split('.').map(Number) : [];
}

/** -1, 0 or 1 as a is older than, equal to, or newer than b (by the numeric prefix). */
export function compareVersions(a: string, b: string): number {
  const x = versionNumbers(a);
  const y = versionNumbers(b);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}
