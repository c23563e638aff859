// Command-line options of a bench script: node's parseArgs, plus --help (the script's header
// comment, which says its usage) and one line with exit status 2 for an option it does not know
// or a value it cannot take (never a stack trace).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/** The leading `//` comment of a script, without the slashes. */
export function headerComment(file) {
  const lines = readFileSync(file, 'utf8').split('\n');
  const out = [];
  for (const line of lines.slice(lines[0]?.startsWith('#!') ? 1 : 0)) {
    if (!line.startsWith('//')) break;
    out.push(line.replace(/^\/\/ ?/, ''));
  }
  return out.join('\n');
}

/** parseArgs(config) for the script at `url` (import.meta.url); --help prints its header and exits 0. */
export function benchArgs(url, config) {
  const file = fileURLToPath(url);
  const name = path.basename(file);
  let parsed;
  try {
    parsed = parseArgs({ ...config, options: { ...config.options, help: { type: 'boolean', short: 'h' } } });
  } catch (err) {
    process.stderr.write(`${name}: ${err.message.split('\n')[0]} (see ${name} --help)\n`);
    process.exit(2);
  }
  if (parsed.values.help) {
    process.stdout.write(`${headerComment(file)}\n`);
    process.exit(0);
  }
  return parsed;
}
