// deploy/install.sh into scratch roots: the files and modes an agent and a controller get,
// a second run that changes nothing, an edited config that is kept (the new default beside
// it as *.new), the installed daemons accepting their config skeletons, and clear refusals.
import { appendFileSync, chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleInto, install, modeOf, sh, tree } from './helpers.js';
import { AGENT_NODE_FLAGS } from '../../packages/agent/src/node-flags.js';
import { CONTROLLER_NODE_FLAGS } from '../../packages/controller/src/node-flags.js';

let dir: string;
let bundle: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-install-'));
  bundle = await bundleInto(path.join(dir, 'bundle'));
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function ok(r: { code: number; stdout: string; stderr: string }) {
  if (r.code !== 0) throw new Error(`install.sh exited ${r.code}:\n${r.stderr}${r.stdout}`);
  return r;
}

describe('install.sh --agent', () => {
  let root: string;
  beforeAll(() => {
    root = path.join(dir, 'agent-root');
    ok(install(root, bundle, ['--agent', '--plan', 'gocd', '--name', 'gocd1']));
  });
  const at = (p: string) => path.join(root, p);

  it('installs the bundle, the wrappers, the unit and its drop-in, the plan and a config skeleton', () => {
    for (const f of [
      'opt/boxback/boxback-agent.mjs',
      'opt/boxback/boxback-controller.mjs',
      'opt/boxback/boxback.mjs',
      'opt/boxback/lib/plan-info.mjs',
      'opt/boxback/BUILD-INFO.json',
      'opt/boxback/proto/boxback/v1/agent.proto',
      'opt/boxback/proto/boxback/v1/controller.proto',
      'opt/boxback/proto/health/v1/health.proto',
      'opt/boxback/node_modules/better-sqlite3/build/Release/better_sqlite3.node',
      'opt/boxback/node_modules/better-sqlite3/lib/index.js',
      'opt/boxback/node_modules/bindings/bindings.js',
      'opt/boxback/node_modules/file-uri-to-path/package.json',
      'opt/boxback/deploy/install.sh',
      'opt/boxback/docs/errors.md',
      'etc/systemd/system/boxback-agent.service',
      'etc/systemd/system/boxback-agent.service.d/10-plan.conf',
      'etc/boxback/plans/gocd.yaml',
    ]) {
      expect(existsSync(at(f)), f).toBe(true);
    }
    // The change journal's inotify watches: written, not applied (scratch root).
    expect(readFileSync(at('etc/sysctl.d/60-boxback-inotify.conf'), 'utf8')).toMatch(/^fs\.inotify\.max_user_watches=1048576$/m);
    expect(existsSync(at('etc/systemd/system/boxback-controller.service'))).toBe(false);
    expect(readFileSync(at('etc/boxback/plans/gocd.yaml'), 'utf8')).toBe(readFileSync(path.join(bundle, 'deploy/plans/gocd.yaml'), 'utf8'));
  });

  it('sets the modes: state 0700, store 0750, configs 0640, wrappers 0755', () => {
    expect(modeOf(at('var/lib/boxback'))).toBe('755');
    expect(modeOf(at('var/lib/boxback/agent'))).toBe('700');
    expect(modeOf(at('var/lib/boxback/store'))).toBe('750');
    expect(modeOf(at('etc/boxback/agent.yaml'))).toBe('640');
    expect(modeOf(at('etc/boxback/certs'))).toBe('750');
    expect(modeOf(at('etc/systemd/system/boxback-agent.service'))).toBe('644');
    for (const w of ['boxback', 'boxback-agent', 'boxback-controller']) expect(modeOf(at(`usr/local/bin/${w}`))).toBe('755');
  });

  it('wrappers exec the installed bundle with the Node that ran the install (the daemons with their V8 flags)', () => {
    const w = readFileSync(at('usr/local/bin/boxback-agent'), 'utf8');
    expect(w).toContain(`NODE="\${BOXBACK_NODE:-${process.execPath}}"`);
    expect(w).toContain(`exec "$NODE" ${AGENT_NODE_FLAGS.join(' ')} /opt/boxback/boxback-agent.mjs "$@"`);
    expect(readFileSync(at('usr/local/bin/boxback'), 'utf8')).toContain('exec "$NODE" /opt/boxback/boxback.mjs "$@"');
    const c = readFileSync(at('usr/local/bin/boxback-controller'), 'utf8');
    expect(c).toContain(`exec "$NODE" ${CONTROLLER_NODE_FLAGS.join(' ')} /opt/boxback/boxback-controller.mjs "$@"`);
    expect(c).toContain(`runuser -u boxback -- "$NODE" ${CONTROLLER_NODE_FLAGS.join(' ')} /opt/boxback/boxback-controller.mjs "$@"`);
  });

  it('writes a config skeleton the installed agent accepts, naming the plan and its roots', () => {
    const yaml = readFileSync(at('etc/boxback/agent.yaml'), 'utf8');
    expect(yaml).toMatch(/^name: gocd1$/m);
    expect(yaml).toMatch(/^plan: plans\/gocd\.yaml$/m);
    expect(yaml).toMatch(/^allowedRoots: \[.*"\/etc\/go".*"\/var\/lib\/go-server\/artifacts".*\]$/m);
    const r = sh([process.execPath, at('opt/boxback/boxback-agent.mjs'), '--config', at('etc/boxback/agent.yaml'), '--check-config'], {
      cwd: os.tmpdir(),
    });
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/config ok: agent gocd1, plan gocd/);
  });

  it('ships the secure agent config: only the controller certificate may call, and there is no way to say "any"', () => {
    const yaml = readFileSync(at('etc/boxback/agent.yaml'), 'utf8');
    expect(yaml).toMatch(/^allowedClients: \[controller\]$/m);
    const check = (file: string) =>
      sh([process.execPath, at('opt/boxback/boxback-agent.mjs'), '--config', file, '--check-config'], { cwd: os.tmpdir() });
    expect(check(at('etc/boxback/agent.yaml')).stdout).toMatch(/; serves only controller$/m);
    // an agent.yaml from an older install.sh (the line commented out) is just as strict
    const old = at('etc/boxback/agent-old.yaml');
    writeFileSync(old, yaml.replace(/^allowedClients: .*$/m, '# allowedClients: [controller]'));
    expect(check(old).stdout).toMatch(/; serves only controller$/m);
    writeFileSync(old, yaml.replace(/^allowedClients: .*$/m, 'allowedClients: []'));
    const r = check(old);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/allowedClients: name at least one client/);
    rmSync(old);
  });

  it('a second run changes nothing and says so', () => {
    const before = tree(root);
    const r = ok(install(root, bundle, ['--agent', '--plan', 'gocd', '--name', 'gocd1']));
    expect(tree(root)).toEqual(before);
    expect(r.stdout).not.toMatch(/^\s+(installed|updated|created|kept|chmod)\s/m);
    expect(r.stdout).toMatch(/unchanged\s+\/opt\/boxback/);
    expect(r.stdout).toMatch(/unchanged\s+\/etc\/boxback\/agent\.yaml/);
  });

  it('keeps an edited config and plan, writes the new defaults beside them as .new, and says so', () => {
    const pristine = readFileSync(at('etc/boxback/agent.yaml'), 'utf8');
    appendFileSync(at('etc/boxback/agent.yaml'), 'identity: { hostname: gocd1.example.com }\n');
    appendFileSync(at('etc/boxback/plans/gocd.yaml'), '# tuned by ops\n');
    const edited = readFileSync(at('etc/boxback/agent.yaml'), 'utf8');
    const r = ok(install(root, bundle, ['--agent', '--plan', 'gocd', '--name', 'gocd1']));
    expect(readFileSync(at('etc/boxback/agent.yaml'), 'utf8')).toBe(edited);
    expect(readFileSync(at('etc/boxback/agent.yaml.new'), 'utf8')).toBe(pristine);
    expect(readFileSync(at('etc/boxback/plans/gocd.yaml'), 'utf8')).toMatch(/# tuned by ops\n$/);
    expect(existsSync(at('etc/boxback/plans/gocd.yaml.new'))).toBe(true);
    expect(r.stdout).toMatch(/kept\s+\/etc\/boxback\/agent\.yaml \(edited; the new default is in \/etc\/boxback\/agent\.yaml\.new/);
    expect(r.stdout).toMatch(/^Kept your edited .*\/etc\/boxback\/agent\.yaml.*: the new defaults are beside them as \*\.new\.$/m);
  });

  it('upgrades the bundle in place when it changed (swapped whole, nothing left over)', () => {
    const other = path.join(dir, 'bundle-next');
    sh(['cp', '-a', bundle, other]);
    const info = JSON.parse(readFileSync(path.join(other, 'BUILD-INFO.json'), 'utf8'));
    writeFileSync(path.join(other, 'BUILD-INFO.json'), JSON.stringify({ ...info, builtAt: 'later' }));
    const r = ok(install(root, other, ['--agent', '--plan', 'gocd', '--name', 'gocd1']));
    expect(r.stdout).toMatch(/updated\s+\/opt\/boxback/);
    expect(JSON.parse(readFileSync(at('opt/boxback/BUILD-INFO.json'), 'utf8')).builtAt).toBe('later');
    expect(sh(['sh', '-c', `ls -A ${JSON.stringify(at('opt'))}`]).stdout.trim()).toBe('boxback');
  });
});

describe('install.sh --controller (DESTDIR)', () => {
  let root: string;
  beforeAll(() => {
    root = path.join(dir, 'controller-root');
    ok(install(undefined, bundle, ['--controller'], { DESTDIR: root }));
  });
  const at = (p: string) => path.join(root, p);

  it('installs the unit, a config skeleton the installed controller accepts, and its directories', () => {
    expect(existsSync(at('etc/systemd/system/boxback-controller.service'))).toBe(true);
    expect(existsSync(at('etc/systemd/system/boxback-agent.service'))).toBe(false);
    expect(modeOf(at('var/lib/boxback/controller'))).toBe('700');
    expect(modeOf(at('var/lib/boxback/store'))).toBe('2750');
    expect(modeOf(at('etc/boxback/controller.yaml'))).toBe('640');
    const w = readFileSync(at('usr/local/bin/boxback-controller'), 'utf8');
    expect(w).toContain('runuser -u boxback');
    const r = sh(
      [process.execPath, at('opt/boxback/boxback-controller.mjs'), '--config', at('etc/boxback/controller.yaml'), '--check-config'],
      { cwd: os.tmpdir() },
    );
    expect(r.code).toBe(0);
  });

  it('is idempotent, and an agent installed on the same box keeps the store readable by the controller', () => {
    const before = tree(root);
    ok(install(undefined, bundle, ['--controller'], { DESTDIR: root }));
    expect(tree(root)).toEqual(before);
    ok(install(undefined, bundle, ['--agent', '--plan', 'generic', '--name', 'app1'], { DESTDIR: root }));
    expect(modeOf(at('var/lib/boxback/store'))).toBe('2750');
    expect(modeOf(at('var/lib/boxback/agent'))).toBe('700');
  });
});

describe('install.sh refuses clearly', () => {
  const run = (args: string[], env: NodeJS.ProcessEnv = {}) => install(path.join(dir, 'refused'), bundle, args, env);

  it('without --agent or --controller, without a plan, or with an unknown plan: exit 2', () => {
    expect(run([])).toMatchObject({ code: 2, stderr: expect.stringMatching(/--agent or --controller/) });
    expect(run(['--agent'])).toMatchObject({ code: 2, stderr: expect.stringMatching(/--plan gocd\|circleci-services\|generic/) });
    expect(run(['--agent', '--plan', 'jenkins'])).toMatchObject({ code: 2, stderr: expect.stringMatching(/unknown plan 'jenkins'/) });
    expect(run(['--agent', '--plan', 'gocd', '--name', 'bad name'])).toMatchObject({ code: 2 });
    expect(run(['--frobnicate'])).toMatchObject({ code: 2, stderr: expect.stringMatching(/unknown argument: --frobnicate/) });
  });

  it('a Node.js older than 20.19: exit 1 naming the version', () => {
    const fake = path.join(dir, 'old-node');
    writeFileSync(fake, '#!/bin/sh\ncase "$1" in -p) echo 18.19.1 ;; -e) exit 1 ;; esac\n');
    chmodSync(fake, 0o755);
    const r = run(['--controller'], { BOXBACK_NODE: fake });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/is Node\.js 18\.19\.1; boxback needs >= 20\.19/);
    expect(existsSync(path.join(dir, 'refused/opt/boxback'))).toBe(false);
  });

  it('a bundle run by a Node.js older than 20.19 says so before anything else', () => {
    for (const b of ['boxback-agent.mjs', 'boxback-controller.mjs', 'boxback.mjs']) {
      const code = `Object.defineProperty(process.versions, 'node', { value: '20.11.0' }); await import(${JSON.stringify(path.join(bundle, b))});`;
      const r = sh([process.execPath, '--input-type=module', '-e', code, '--', '--version']);
      expect(r.code, b).toBe(2);
      expect(r.stderr).toMatch(/Node\.js >= 20\.19 is required, this is v20\.11\.0/);
    }
  });
});

describe("plan-info (install.sh's helper in the bundle)", () => {
  it('raises TimeoutStopSec when the plan needs longer than 15 min to resume, and opens /home read-only when named', () => {
    const d = path.join(dir, 'slow');
    const q = JSON.stringify;
    sh(['mkdir', '-p', path.join(d, 'data')]);
    writeFileSync(
      path.join(d, 'plan.yaml'),
      `name: slow
services:
  - { name: a, systemd: a.service, startTimeoutSeconds: 900 }
  - { name: b, systemd: b.service, startTimeoutSeconds: 300 }
datasets:
  - { name: database, archive: db.zip, path: /home/app/db }
  - { name: env, archive: env.zip, files: [/etc/default/app] }
`,
    );
    writeFileSync(
      path.join(d, 'agent.yaml'),
      `name: slow1
listen: 127.0.0.1:7443
tls: { ca: ca.crt, cert: a.crt, key: a.key }
store: /srv/backups
stateDir: ${q(path.join(d, 'state'))}
plan: plan.yaml
allowedRoots: [/home/app, /etc/default]
`,
    );
    const r = sh([process.execPath, path.join(bundle, 'lib/plan-info.mjs'), 'dropin', '--config', path.join(d, 'agent.yaml')]);
    expect(r.stderr).toBe('');
    const lines = r.stdout.split('\n');
    expect(lines.filter((l) => l.startsWith('ReadWritePaths='))).toEqual(
      [
        'ReadWritePaths=-/etc/default',
        `ReadWritePaths=-/home/app`,
        'ReadWritePaths=-/srv/backups',
        `ReadWritePaths=-${path.join(d, 'state')}`,
      ].sort(),
    );
    expect(lines).toContain('ProtectHome=read-only');
    expect(lines).toContain(`TimeoutStopSec=${900 + 300 + 95}`);
    const roots = sh([process.execPath, path.join(bundle, 'lib/plan-info.mjs'), 'roots', '--plan', path.join(d, 'plan.yaml')]);
    expect(roots.stdout.trim()).toBe('["/etc/default", "/home/app/db"]');
    const bad = sh([process.execPath, path.join(bundle, 'lib/plan-info.mjs'), 'roots', '--plan', path.join(d, 'nope.yaml')]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^plan-info: cannot read .*nope\.yaml: no such file\n$/);
  });
});
