// Regenerate docs/errors.md from the error registry (packages/common/src/errors.ts).
// Run after adding an error code: `npm run build && node scripts/gen-error-docs.mjs`.
import { writeFileSync } from 'node:fs';
import { ERROR_CODES, ExitCode } from '@boxback/common';
import { status } from '@grpc/grpc-js';

const exitName = Object.fromEntries(Object.entries(ExitCode).map(([k, v]) => [v, k]));
const grpcName = Object.fromEntries(
  Object.entries(status)
    .filter(([, v]) => typeof v === 'number')
    .map(([k, v]) => [v, k]),
);
let out = `# Error codes

Every error boxback reports carries one of these codes. They are stable: a code is never
reused for another meaning. The CLI prints \`boxback: <message>\` on one line and exits with
the code shown; over gRPC the error travels with the status shown and the code in the
\`boxback-error-code\` trailer. Generated from \`packages/common/src/errors.ts\` by
\`scripts/gen-error-docs.mjs\`.

| code | exit | gRPC status | meaning |
| --- | --- | --- | --- |
`;
for (const [code, s] of Object.entries(ERROR_CODES)) {
  out += `| \`${code}\` | ${s.exit} (${exitName[s.exit]}) | ${grpcName[s.grpc]} | ${s.doc} |\n`;
}
out += `
## CLI exit codes

| exit | meaning |
| --- | --- |
${Object.entries(ExitCode)
  .map(([k, v]) => `| ${v} | ${k} |`)
  .join('\n')}
`;
writeFileSync(new URL('../docs/errors.md', import.meta.url), out);
console.log('wrote docs/errors.md');
