// Regenerate docs/errors.md from the error registry (packages/common/src/errors.ts).
// Run after adding an error code: `npm run build && node scripts/gen-error-docs.mjs`;
// test/unit/errors.test.ts fails while docs/errors.md is out of date.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ERROR_CODES, ExitCode } from '@boxback/common';
import { status } from '@grpc/grpc-js';

/** The text of docs/errors.md for this error table. */
export function renderErrorDocs(codes = ERROR_CODES, exitCodes = ExitCode) {
  const exitName = Object.fromEntries(Object.entries(exitCodes).map(([k, v]) => [v, k]));
  const grpcName = Object.fromEntries(
    Object.entries(status)
      .filter(([, v]) => typeof v === 'number')
      .map(([k, v]) => [v, k]),
  );
  let out = `# Error codes

Every error boxback reports carries one of these codes. They are stable: a code is never
reused for another meaning. The CLI prints \`boxback: <CODE>: <message>\` on one line (a job that ended Failed or RolledBack too) and exits with
the code shown; over gRPC the error travels with the status shown and the code in the
\`boxback-error-code\` trailer; the dashboard's HTTPS API answers with the HTTP status shown
and \`{"code": ..., "message": ...}\`. Generated from \`packages/common/src/errors.ts\` by
\`scripts/gen-error-docs.mjs\`.

| code | exit | gRPC status | HTTP | meaning |
| --- | --- | --- | --- | --- |
`;
  for (const [code, s] of Object.entries(codes)) {
    out += `| \`${code}\` | ${s.exit} (${exitName[s.exit]}) | ${grpcName[s.grpc]} | ${s.http} | ${s.doc} |\n`;
  }
  out += `
## CLI exit codes

| exit | meaning |
| --- | --- |
${Object.entries(exitCodes)
  .map(([k, v]) => `| ${v} | ${k} |`)
  .join('\n')}
`;
  return out;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  writeFileSync(new URL('../docs/errors.md', import.meta.url), renderErrorDocs());
  console.log('wrote docs/errors.md');
}
