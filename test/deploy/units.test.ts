// Both systemd units pass `systemd-analyze verify`, as installed by deploy/install.sh into a
// scratch root. What works here (systemd 252, systemd not PID 1): `verify --root=ROOT UNIT`
// with ROOT holding the installed unit, its drop-in, the wrapper ExecStart names, and a copy
// of /usr/lib/systemd/system (else "Unit sysinit.target not found"). verify exits 0 on
// unknown keys and bad values and only warns, so stderr must be empty too.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bundleInto, haveSystemdAnalyze, install, repo, sh } from './helpers.js';

let dir: string;
let root: string;

function verify(unit: string, r = root) {
  return sh(['systemd-analyze', 'verify', '--man=no', `--root=${r}`, unit]);
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-units-'));
  root = path.join(dir, 'root');
  const bundle = await bundleInto(path.join(dir, 'bundle'));
  for (const args of [['--agent', '--plan', 'gocd', '--name', 'gocd1'], ['--controller']]) {
    const r = install(root, bundle, args);
    if (r.code !== 0) throw new Error(`install.sh ${args.join(' ')} failed: ${r.stderr}${r.stdout}`);
  }
  if (haveSystemdAnalyze) cpSync('/usr/lib/systemd/system', path.join(root, 'usr/lib/systemd/system'), { recursive: true });
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!haveSystemdAnalyze)('systemd units', () => {
  it('boxback-agent.service (with its generated drop-in) passes systemd-analyze verify', () => {
    const r = verify('boxback-agent.service');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });

  it('boxback-controller.service passes systemd-analyze verify', () => {
    const r = verify('boxback-controller.service');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });

  it('the check would catch a bad unit: a typo, a bad value, a missing program', () => {
    const good = readFileSync(path.join(repo, 'deploy/systemd/boxback-agent.service'), 'utf8');
    const sys = path.join(root, 'etc/systemd/system');
    writeFileSync(path.join(sys, 'bb-typo.service'), good.replace('ProtectSystem=strict', 'ProtectSystem=bogus\nKilMode=mixed'));
    const typo = verify('bb-typo.service');
    expect(typo.stderr).toMatch(/protect system value/i);
    expect(typo.stderr).toMatch(/Unknown key 'KilMode'/);
    writeFileSync(path.join(sys, 'bb-missing.service'), good.replaceAll('/usr/local/bin/boxback-agent', '/usr/local/bin/no-such-agent'));
    const missing = verify('bb-missing.service');
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/not executable/);
  });

  it('the installed units are the checked-in ones', () => {
    for (const u of ['boxback-agent.service', 'boxback-controller.service']) {
      expect(readFileSync(path.join(root, 'etc/systemd/system', u), 'utf8')).toBe(
        readFileSync(path.join(repo, 'deploy/systemd', u), 'utf8'),
      );
    }
  });
});

describe('what the units say', () => {
  const agent = readFileSync(path.join(repo, 'deploy/systemd/boxback-agent.service'), 'utf8');
  const controller = readFileSync(path.join(repo, 'deploy/systemd/boxback-controller.service'), 'utf8');
  const settings = (text: string) => text.split('\n').filter((l) => /^[A-Z]\w+=/.test(l));

  it('both: restart on failure, SIGTERM to the main process only, config checked first, journal, hardening', () => {
    for (const u of [agent, controller]) {
      const s = settings(u);
      for (const want of [
        'Restart=on-failure',
        'KillMode=mixed',
        'ProtectSystem=strict',
        'PrivateTmp=yes',
        'NoNewPrivileges=yes',
        'ProtectHome=yes',
        'StandardOutput=journal',
      ]) {
        expect(s).toContain(want);
      }
      expect(s.find((l) => l.startsWith('ExecStartPre='))).toMatch(/--check-config$/);
      expect(s).not.toContain('MemoryDenyWriteExecute=yes'); // Node's JIT
    }
  });

  it('agent: root with a capability bounding set, long enough a stop to resume quiesced services', () => {
    const s = settings(agent);
    expect(s).toContain('User=root');
    expect(s).toContain('TimeoutStopSec=15min');
    const caps = s
      .find((l) => l.startsWith('CapabilityBoundingSet='))!
      .split('=')[1]
      .split(' ');
    expect(caps).toEqual(expect.arrayContaining(['CAP_CHOWN', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_KILL']));
    expect(caps).not.toContain('CAP_SYS_ADMIN');
    expect(s).toContain('ReadWritePaths=-/var/lib/boxback');
  });

  it('controller: its own user, its own state directory, only CAP_DAC_READ_SEARCH', () => {
    const s = settings(controller);
    expect(s).toContain('User=boxback');
    expect(s).toContain('StateDirectory=boxback/controller');
    expect(s).toContain('AmbientCapabilities=CAP_DAC_READ_SEARCH');
    expect(s).toContain('CapabilityBoundingSet=CAP_DAC_READ_SEARCH');
  });

  it("the agent's drop-in lets it write the store, its state and the parent of every GoCD target", () => {
    const dropin = readFileSync(path.join(root, 'etc/systemd/system/boxback-agent.service.d/10-plan.conf'), 'utf8');
    const rw = dropin
      .split('\n')
      .filter((l) => l.startsWith('ReadWritePaths='))
      .map((l) => l.slice('ReadWritePaths=-'.length));
    // /etc/go is replaced whole by renaming, so /etc itself must be writable (a bind-mounted
    // /etc/go could not be renamed); /etc/default/go-server is covered by it.
    expect(rw.sort()).toEqual(['/etc', '/usr/share/go-server', '/var/lib/boxback/agent', '/var/lib/boxback/store', '/var/lib/go-server']);
    expect(dropin).not.toContain(root); // the scratch root does not leak into the real paths
  });
});
