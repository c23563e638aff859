import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadPlan } from '@boxback/agent';

const plans = path.resolve(import.meta.dirname, '../../deploy/plans');

function planFile(text: string): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'bb-plan-'));
  const f = path.join(dir, 'plan.yaml');
  writeFileSync(f, text);
  return f;
}

describe('host plans', () => {
  it.each(['gocd.yaml', 'circleci-services.yaml', 'generic.yaml'])('ships a valid %s', (name) => {
    const plan = loadPlan(path.join(plans, name), ['/']);
    expect(plan.name).toBeTruthy();
    expect(plan.datasets.length).toBeGreaterThan(0);
  });

  it('the GoCD plan writes GoCD archive names and syncs what GoCD leaves out', () => {
    const plan = loadPlan(path.join(plans, 'gocd.yaml'), ['/']);
    expect(plan.datasets.map((d) => d.archive)).toEqual(
      expect.arrayContaining(['db.zip', 'config-dir.zip', 'wrapper-config-dir.zip', 'config-repo.zip']),
    );
    expect(plan.trees.map((t) => t.source)).toEqual(['/var/lib/go-server/artifacts', '/var/lib/go-server/db/shine']);
  });

  it('names the bad key', () => {
    const f = planFile('name: x\nquiesce: { mode: sleep }\ndatasets: [{ name: db, archive: db.zip, path: relative/dir }]\n');
    expect(() => loadPlan(f, ['/'])).toThrow(/quiesce\.mode: .*"stop"/);
    expect(() => loadPlan(f, ['/'])).toThrow(/datasets\.0\.path: must be an absolute path/);
  });

  it('refuses an unknown key', () => {
    const f = planFile('name: x\ndatsets: []\n');
    expect(() => loadPlan(f, ['/'])).toThrow(/datsets/);
  });

  it('refuses paths outside the allowed roots', () => {
    expect(() => loadPlan(path.join(plans, 'gocd.yaml'), ['/var/lib/go-server'])).toThrow(
      /datasets\.1\.path: \/etc\/go is outside the agent's allowedRoots/,
    );
  });
});
