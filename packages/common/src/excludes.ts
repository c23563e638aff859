/**
 * The plan's tree `excludes` are rsync `--exclude` patterns. The journal needs the same
 * answer rsync would give in two places: the watcher does not watch (or record) excluded
 * paths, and the incremental sync drops a changed path whose ancestor directory is
 * excluded (rsync checks a `--files-from` entry's own name, not its implied parent dirs).
 *
 * Supported (rsync's "INCLUDE/EXCLUDE PATTERN RULES"): `*` (not across `/`), `**`
 * (anything), `?`, `[...]`, `\x` escapes, a leading `/` (anchored at the tree root), a
 * trailing `/` (directories only), a trailing `/***` (the directory and all inside it).
 * A pattern with no `/` (other than a trailing one) and no `**` matches the last component;
 * otherwise the path's trailing components (or, anchored, the whole path).
 * A pattern using rsync's `+ `/`- ` rule prefixes is not supported: `compileExcludes`
 * reports it and the journal then stays untrusted (every backup makes a full pass).
 */

export interface ExcludeMatcher {
  /** True when rsync would exclude `rel` (POSIX, relative to the tree root, no leading /). */
  excluded(rel: string, isDir: boolean | undefined): boolean;
  /** True when `rel` or one of its ancestor directories is excluded. */
  excludedOrUnder(rel: string, isDir: boolean | undefined): boolean;
  /** Patterns the matcher could not represent (the journal is untrusted while any exist). */
  unsupported: string[];
}

interface Rule {
  re: RegExp;
  dirOnly: boolean;
  /** For `dir/***`: the directory itself matches too. */
  alsoSelf?: RegExp;
}

function globToRegex(glob: string): string {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '\\' && i + 1 < glob.length) {
      out += escapeRe(glob[++i]);
    } else if (c === '*') {
      if (glob[i + 1] === '*') {
        out += '.*';
        i++;
        while (glob[i + 1] === '*') i++;
      } else {
        out += '[^/]*';
      }
    } else if (c === '?') {
      out += '[^/]';
    } else if (c === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end < 0) {
        out += '\\[';
      } else {
        let cls = glob.slice(i + 1, end);
        if (cls.startsWith('!')) cls = `^${cls.slice(1)}`;
        out += `[${cls.replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else {
      out += escapeRe(c);
    }
  }
  return out;
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

function compileRule(pattern: string): Rule | undefined {
  if (/^[+-] /.test(pattern) || pattern === '' || pattern === '!') return undefined;
  let p = pattern;
  let dirOnly = false;
  let tripleStar = false;
  if (p.endsWith('/***')) {
    tripleStar = true;
    p = p.slice(0, -4);
  } else if (p.endsWith('/')) {
    dirOnly = true;
    p = p.replace(/\/+$/, '');
  }
  const anchored = p.startsWith('/');
  if (anchored) p = p.replace(/^\/+/, '');
  if (p === '') return undefined;
  const fullPath = anchored || p.includes('/') || p.includes('**') || tripleStar;
  const body = globToRegex(p);
  const prefix = anchored ? '^' : fullPath ? '(?:^|/)' : '(?:^|/)';
  if (tripleStar) {
    return { re: new RegExp(`${prefix}${body}/.*$`), dirOnly: false, alsoSelf: new RegExp(`${prefix}${body}$`) };
  }
  return { re: new RegExp(`${prefix}${body}$`), dirOnly };
}

export function compileExcludes(patterns: readonly string[]): ExcludeMatcher {
  const rules: Rule[] = [];
  const unsupported: string[] = [];
  for (const p of patterns) {
    const r = compileRule(p);
    if (r) rules.push(r);
    else unsupported.push(p);
  }
  const excluded = (rel: string, isDir: boolean | undefined): boolean => {
    if (rel === '' || rel === '.') return false;
    for (const r of rules) {
      if (r.alsoSelf && isDir !== false && r.alsoSelf.test(rel)) return true;
      if (r.dirOnly && isDir !== true) continue;
      if (r.re.test(rel)) return true;
    }
    return false;
  };
  const excludedOrUnder = (rel: string, isDir: boolean | undefined): boolean => {
    if (rules.length === 0) return false;
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) if (excluded(parts.slice(0, i).join('/'), true)) return true;
    return excluded(rel, isDir);
  };
  return { excluded, excludedOrUnder, unsupported };
}
