#!/usr/bin/env node
// Where a CPU profile's time went: self time by function and by file, and the wall time the
// process spent idle (waiting on I/O, child processes or timers).
//   node bench/prof-summary.mjs FILE.cpuprofile [--top N]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' } } });
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
