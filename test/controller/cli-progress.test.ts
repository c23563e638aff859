// The CLI's overall progress line (cli/overall.ts), with an injected clock: percent of the
// bytes a job is expected to move, a smoothed rate, an ETA that does not jump with a burst,
// phases that re-read data (VERIFY, MANIFEST) not counted twice, and counts named for what
// they count.
import { describe, expect, it } from 'vitest';
import { Overall, countUnit, overallLine } from '../../packages/controller/src/cli/overall.js';

const MiB = 1024 * 1024;

describe('overall progress', () => {
  it('percent of the expected bytes, a smoothed rate, an ETA that moves smoothly through a burst', () => {
    const o = new Overall(['j1']);
    o.expect('j1', 1000 * MiB); // the host's last backup
    let t = 0;
    o.feed('j1', { phase: 'BACKUP_DATABASE', bytesDone: 0, bytesTotal: 100 * MiB }, t);
    const etas: number[] = [];
    // 10 MiB/s steadily for 30 s, then a 1 s burst of 200 MiB (a cached file), then 10 MiB/s again
    let done = 0;
    for (let s = 1; s <= 60; s++) {
      t = s * 1000;
      done += s === 31 ? 200 * MiB : 10 * MiB;
      const db = Math.min(done, 100 * MiB);
      o.feed('j1', { phase: 'BACKUP_DATABASE', bytesDone: db, bytesTotal: 100 * MiB }, t);
      if (done > 100 * MiB) o.feed('j1', { phase: 'SYNC_ARTIFACTS', bytesDone: done - 100 * MiB, bytesTotal: 900 * MiB }, t);
      const v = o.view();
      if (v.etaSeconds !== null) etas.push(v.etaSeconds);
    }
    const v = o.view();
    expect(v.total).toBe(1000 * MiB);
    expect(v.percent).toBe(Math.floor((100 * done) / (1000 * MiB)));
    expect(v.rate! / MiB).toBeGreaterThan(8);
    expect(v.rate! / MiB).toBeLessThan(60);
    // the raw ETA after the burst drops by 20 s at once; the shown one moves a few seconds a second
    for (let i = 1; i < etas.length; i++) expect(Math.abs(etas[i] - etas[i - 1])).toBeLessThan(12);
    expect(overallLine(v)).toMatch(/^overall {2}\d+% {2}[\d.]+ MiB of 1000 MiB {2}[\d.]+ MiB\/s {2}ETA \S+$/);
  });

  it('does not count VERIFY and MANIFEST re-reads as progress; an ended job is whole; several jobs add up', () => {
    const o = new Overall(['a', 'b']);
    o.feed('a', { phase: 'EXTRACT', bytesDone: 50, bytesTotal: 100 }, 0);
    o.feed('a', { phase: 'VERIFY', bytesDone: 100, bytesTotal: 100 }, 0);
    o.feed('b', { phase: 'EXTRACT', bytesDone: 0, bytesTotal: 300 }, 0);
    expect(o.view()).toMatchObject({ done: 50, total: 400, percent: 12, jobs: 2, ended: 0 });
    o.end('a', 1000);
    expect(o.view()).toMatchObject({ done: 50, total: 350, percent: 14, ended: 1 });
    expect(overallLine(o.view())).toContain('1 of 2 jobs ended');
    o.end('b', 2000);
    expect(o.view()).toMatchObject({ etaSeconds: 0, ended: 2 });
    expect(new Overall(['x']).view().percent).toBeNull();
    expect(overallLine(new Overall(['x']).view())).toBe('overall  --%');
  });

  it('names what a count counts', () => {
    expect(countUnit('PRE_BACKUP_SCRIPT')).toBe('steps');
    expect(countUnit('STOP')).toBe('services');
    expect(countUnit('QUIESCE')).toBe('datasets');
    expect(countUnit('HEALTH_CHECK')).toBe('tries');
    expect(countUnit('SYNC_ARTIFACTS')).toBe('files');
    expect(countUnit('BACKUP_DATABASE')).toBe('files');
    expect(countUnit('SOMETHING_NEW')).toBe('items');
  });
});
