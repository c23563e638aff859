#!/usr/bin/env node
// Where a CPU profile's time went: self time by function and by file, and the wall time the
// process spent idle (waiting on I/O, child processes or timers).
//   node bench/prof-summary.mjs FILE.cpuprofile [--top N] [--long-turns MS]
// --long-turns: the stretches of samples with no idle between them longer than MS (the event
// loop's long turns), their count and time, and the project's functions inclusive in them.
import { readFileSync } from 'node:fs';
import { benchArgs } from './lib/cli-args.mjs';

const { values, positionals } = benchArgs(import.meta.url, {
  allowPositionals: true,
  options: { top: { type: 'string', default: '25' }, 'long-turns': { type: 'string' } },
});
const prof = JSON.parse(readFileSync(positionals[0], 'utf8'));
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const self = new Map();
for (let i = 0; i < prof.samples.length; i++) {
  const id = prof.samples[i];
  self.set(id, (self.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0));
}
const total = (prof.endTime - prof.startTime) / 1000;
const fn = new Map();
const file = new Map();
for (const [id, us] of self) {
  const cf = byId.get(id).callFrame;
  const short = cf.url.replace(/^.*\/(packages|node_modules)\//, '$1/').replace(/^node:/, 'node:');
  const k = `${cf.functionName || '(anon)'} ${short}:${cf.lineNumber + 1}`;
  fn.set(k, (fn.get(k) ?? 0) + us / 1000);
  const f = short || cf.functionName;
  file.set(f, (file.get(f) ?? 0) + us / 1000);
}
const top = (m) =>
  [...m]
    .sort((a, b) => b[1] - a[1])
    .slice(0, Number(values.top))
    .map(([k, ms]) => `${ms.toFixed(0).padStart(7)} ms  ${k}`)
    .join('\n');
console.log(
  `wall ${total.toFixed(0)} ms; idle ${(fn.get('(idle) :0') ?? 0).toFixed(0)} ms\n\nby function:\n${top(fn)}\n\nby file:\n${top(file)}`,
);

// Inclusive time of this project's functions (a function counted once per stack).
const parent = new Map();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const incl = new Map();
for (const [id, us] of self) {
  const seen = new Set();
  for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
    const cf = byId.get(cur).callFrame;
    if (!/\/packages\//.test(cf.url)) continue;
    const k = `${cf.functionName || '(anon)'} ${cf.url.replace(/^.*\/packages\//, '')}:${cf.lineNumber + 1}`;
    if (seen.has(k)) continue;
    seen.add(k);
    incl.set(k, (incl.get(k) ?? 0) + us / 1000);
  }
}
console.log(`\ninclusive, this project's functions:\n${top(incl)}`);

if (values['long-turns']) {
  // a turn: consecutive samples none of which is (idle) (GC and program samples count as busy)
  const idleIds = new Set(prof.nodes.filter((n) => n.callFrame.functionName === '(idle)').map((n) => n.id));
  const limit = Number(values['long-turns']);
  const turns = [];
  let cur = null;
  for (let i = 0; i < prof.samples.length; i++) {
    const us = prof.timeDeltas[i + 1] ?? 0;
    if (idleIds.has(prof.samples[i])) {
      if (cur) turns.push(cur);
      cur = null;
      continue;
    }
    cur ??= { ms: 0, ids: [] };
    cur.ms += us / 1000;
    cur.ids.push([prof.samples[i], us]);
  }
  if (cur) turns.push(cur);
  const long = turns.filter((t) => t.ms >= limit).sort((a, b) => b.ms - a.ms);
  const inTurns = new Map();
  for (const t of long)
    for (const [id, us] of t.ids) {
      const seen = new Set();
      for (let c = id; c !== undefined; c = parent.get(c)) {
        const cf = byId.get(c).callFrame;
        const k = /\/packages\//.test(cf.url)
          ? `${cf.functionName || '(anon)'} ${cf.url.replace(/^.*\/packages\//, '')}:${cf.lineNumber + 1}`
          : c === id
            ? `[self] ${cf.functionName || '(anon)'} ${cf.url.replace(/^.*\/node_modules\//, '')}`
            : null;
        if (!k || seen.has(k)) continue;
        seen.add(k);
        inTurns.set(k, (inTurns.get(k) ?? 0) + us / 1000);
      }
    }
  const sum = long.reduce((a, t) => a + t.ms, 0);
  console.log(
    `\nturns >= ${limit} ms: ${long.length} of ${turns.length}, ${sum.toFixed(0)} ms; longest ${long
      .slice(0, 10)
      .map((t) => t.ms.toFixed(0))
      .join(', ')} ms\nin them (inclusive):\n${top(inTurns)}`,
  );
}
