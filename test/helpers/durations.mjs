// Refreshes test/helpers/durations.json (the order test/helpers/sequencer.ts runs the files in)
// from a vitest JSON report of a whole run:
//   npx vitest run --reporter=default --reporter=json --outputFile.json=/tmp/report.json
//   node test/helpers/durations.mjs /tmp/report.json
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const report = process.argv[2];
if (!report) {
  console.error('usage: node test/helpers/durations.mjs <vitest JSON report>');
  process.exit(2);
}
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const out = path.join(repo, 'test/helpers/durations.json');
const { testResults } = JSON.parse(readFileSync(report, 'utf8'));
const table = JSON.parse(readFileSync(out, 'utf8'));
for (const r of testResults) {
  const file = path.relative(repo, r.name).split(path.sep).join('/');
  table.seconds[file] = Math.round((r.endTime - r.startTime) / 1000);
}
table.seconds = Object.fromEntries(Object.entries(table.seconds).sort(([a], [b]) => (a < b ? -1 : 1)));
writeFileSync(out, `${JSON.stringify(table, null, 2)}\n`);
console.log(`${testResults.length} file(s) updated in ${path.relative(repo, out)}`);
