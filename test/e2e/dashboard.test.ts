// The dashboard in a real browser (Debian's Chromium driven by playwright-core) against a real
// controller and a real agent on a GoCD-like box: sign in, see the fleet, start a backup and
// watch it reach Completed, open the backup, run a dry-run restore (the real restore stays
// locked until the host name is typed); a viewer sees no restore button and a forged POST is
// refused (403) and audited; markup in a name renders as text; sign-out; an expired session
// goes back to sign-in. A screenshot of each page goes to the test's temp dir (screens/).
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, startCluster } from '../../scripts/lib/cluster.mjs';
import { createSampleBox } from '../../scripts/lib/sample-box.mjs';

type Box = Awaited<ReturnType<typeof createSampleBox>>;
type Cluster = Awaited<ReturnType<typeof startCluster>>;

const HOST = 'gocd-dash-a-very-long-host-name-of-sixty-three-characters-xyz12';
let dir: string;
let screens: string;
let cluster: Cluster;
let box: Box;
let browser: Browser;
let viewerToken = '';
let backupId = '';

async function signIn(token: string, url = cluster.dashboardUrl): Promise<{ ctx: BrowserContext; page: Page }> {
  const ctx = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1440, height: 900 } });
  const page = await ctx.newPage();
  await page.goto(url);
  expect(page.url()).toMatch(/\/login$/);
  await page.fill('input[name="token"]', token);
  await Promise.all([page.waitForURL((u) => u.pathname === '/'), page.click('button[type="submit"]')]);
  return { ctx, page };
}

// A page that is still loading or about to reload (the job page reloads itself 300 ms after
// its result comes) can keep Chromium's capture waiting for a frame that never comes: take the
// picture of a loaded page, with nothing moving, and fail in 20 s rather than hang.
async function shot(page: Page, name: string): Promise<void> {
  await page.waitForLoadState('load');
  await page.screenshot({
    path: path.join(screens, `${name}.png`),
    fullPage: true,
    animations: 'disabled',
    caret: 'hide',
    timeout: 20_000,
  });
}

/** The quiesced backup the first test makes; made here when that test failed before it read it. */
async function quiescedBackup(): Promise<string> {
  if (backupId) return backupId;
  const listed = await cluster.cli(['backups', '--json']);
  expect(listed.code, listed.stderr).toBe(0);
  const parsed = JSON.parse(listed.stdout);
  const done = (
    (Array.isArray(parsed) ? parsed : parsed.backups) as Array<{ id: string; host: string; consistency: string; restorable: boolean }>
  ).find((b) => b.host === HOST && b.consistency === 'quiesced' && b.restorable);
  if (done) return (backupId = done.id);
  const made = await cluster.cli(['backup', 'create', '--host', HOST, '--yes', '--json']);
  expect(made.code, made.stderr).toBe(0);
  return (backupId = JSON.parse(made.stdout).jobs[0].result.backupId as string);
}

beforeAll(async () => {
  expect(HOST.length).toBe(63);
  dir = mkdtempSync(path.join(os.tmpdir(), 'bb-dash-'));
  screens = path.join(dir, 'screens');
  mkdirSync(screens);
  box = await createSampleBox({ root: path.join(dir, 'box'), port: await freePort(), seed: 5, hostname: HOST, artifacts: 6 });
  await box.start();
  cluster = await startCluster({ dir: path.join(dir, 'cluster'), dashboard: true });
  await cluster.addAgent({ name: HOST, box });
  const r = await cluster.cli(['hosts', 'add', HOST, '--address', cluster.agents[HOST].address, '--group', 'ci']);
  expect(r.code, r.stderr).toBe(0);
  const v = await cluster.cli(['tokens', 'create', '--name', 'vic', '--role', 'viewer']);
  expect(v.code, v.stderr).toBe(0);
  viewerToken = v.stdout.trim().split('\n').pop()!.trim();
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
}, 180_000); // a box, a controller, an agent and Chromium: slow on a loaded machine

afterAll(async () => {
  await browser?.close();
  await cluster?.stop();
  await box?.stop().catch(() => undefined);
  if (dir && !process.env.BOXBACK_KEEP_SCREENS) rmSync(dir, { recursive: true, force: true });
});

describe('dashboard', () => {
  it('signs in, shows the fleet, backs a host up and follows the job to Completed, opens the backup, previews a restore', async () => {
    const { ctx, page } = await signIn(cluster.token);
    const row = page.locator(`tr[data-host="${HOST}"]`);
    await expect.poll(() => row.count()).toBe(1);
    expect(await row.locator('th').innerText()).toBe(HOST);
    expect(await row.innerText()).toMatch(/up\s+0\.1\.0/);
    expect(await row.innerText()).toContain('AT RISK'); // no backup yet
    await shot(page, 'fleet-before');

    await Promise.all([page.waitForURL(/\/jobs\//), row.locator('button.action', { hasText: 'Back up now' }).click()]);
    // the stream says Completed first; the page then reloads itself into the job's final state
    await page.locator('#job[data-ended="1"] #job-state', { hasText: 'Completed' }).waitFor({ timeout: 90_000 });
    const link = page.locator('dd a[href^="/backups/"]');
    const id = (await link.innerText()).trim();
    expect(id.startsWith(`${HOST}@`)).toBe(true);
    backupId = id;
    await shot(page, 'job');

    await page.goto(cluster.dashboardUrl);
    expect(await page.locator(`tr[data-host="${HOST}"]`).innerText()).not.toContain('AT RISK');
    await shot(page, 'fleet');

    await page.goto(`${cluster.dashboardUrl}backups/${encodeURIComponent(backupId)}`);
    expect(await page.locator('h1').innerText()).toBe(`Backup ${backupId}`);
    expect(await page.locator('table', { hasText: 'Datasets' }).innerText()).toMatch(/database/i);
    expect(await page.locator('.timeline .quiesce').count()).toBe(1);
    expect(await page.locator('table.phases').innerText()).toContain('QUIESCE');
    await page.click('#restore-preview');
    await page.locator('#restore-report').waitFor({ state: 'visible', timeout: 90_000 });
    expect(await page.locator('#restore-report-text').innerText()).not.toBe('');
    expect(await page.locator('#restore-go').isDisabled()).toBe(true);
    await page.fill('#restore-confirm', 'not-the-host');
    expect(await page.locator('#restore-go').isDisabled()).toBe(true);
    await page.fill('#restore-confirm', HOST);
    expect(await page.locator('#restore-go').isDisabled()).toBe(false);
    await shot(page, 'backup');

    await page.goto(`${cluster.dashboardUrl}hosts/${encodeURIComponent(HOST)}`);
    await page.locator('#chart-size canvas').waitFor();
    expect(await page.locator('table.backups tbody tr').count()).toBe(1);
    await shot(page, 'host');

    await page.goto(`${cluster.dashboardUrl}audit`);
    const audit = await page.locator('table.audit').innerText();
    expect(audit).toMatch(/quickstart-admin\s+CreateBackup\s+gocd-dash/);
    expect(audit).toMatch(/quickstart-admin\s+RestoreBackup\s+\S+ -> \S+ \(dry run\)\s+ok/);
    expect(audit).toMatch(/quickstart-admin\s+DashboardSignIn/);
    await shot(page, 'audit');
    await ctx.close();
  });

  it("marks a live zip of a database LIVE-UNVERIFIED on the host and backup pages, with each dataset's capture", async () => {
    // the sample box's database is a plain zip dataset: a --live backup copies the file while its service runs
    const made = await cluster.cli(['backup', 'create', '--host', HOST, '--live', '--yes', '--json']);
    expect(made.code, made.stderr).toBe(0);
    const liveId = JSON.parse(made.stdout).jobs[0].result.backupId as string;
    await quiescedBackup();
    const { ctx, page } = await signIn(cluster.token);
    await page.goto(`${cluster.dashboardUrl}hosts/${encodeURIComponent(HOST)}`);
    const rows = page.locator('table.backups tbody tr');
    await expect.poll(() => rows.count()).toBe(2);
    const liveRow = rows.filter({ hasText: liveId });
    expect(await liveRow.locator('.live-unverified').innerText()).toBe('LIVE-UNVERIFIED');
    expect(await liveRow.locator('.live-unverified').getAttribute('title')).toContain('nothing proves it opens');
    const quiesced = rows.filter({ hasText: backupId });
    expect(await quiesced.locator('.live-unverified').count()).toBe(0);
    expect(await quiesced.innerText()).not.toContain('LIVE-UNVERIFIED');
    await shot(page, 'host-live-unverified');

    await page.goto(`${cluster.dashboardUrl}backups/${encodeURIComponent(liveId)}`);
    expect(await page.locator('dd .live-unverified').innerText()).toBe('LIVE-UNVERIFIED');
    expect(await page.locator('.live-unverified-note').innerText()).toContain('nothing proves the copy opens');
    const datasets = page.locator('table', { hasText: 'Datasets' });
    expect(await datasets.locator('tr', { hasText: 'database' }).first().innerText()).toMatch(
      /LIVE-UNVERIFIED\s+copied live, nothing proves it opens/,
    );
    expect(await datasets.locator('tr', { hasText: 'plugins' }).innerText()).toContain('copied live');
    await shot(page, 'backup-live-unverified');

    await page.goto(`${cluster.dashboardUrl}backups/${encodeURIComponent(backupId)}`);
    expect(await page.locator('.live-unverified, .live-unverified-note').count()).toBe(0);
    await ctx.close();
  }, 120_000);

  it('shows a viewer no restore or backup button; a forged POST is refused with 403 and audited', async () => {
    await quiescedBackup();
    const { ctx, page } = await signIn(viewerToken);
    expect(await page.locator('button.action').count()).toBe(0);
    await page.goto(`${cluster.dashboardUrl}backups/${encodeURIComponent(backupId)}`);
    expect(await page.locator('#restore-preview').count()).toBe(0);
    expect(await page.locator('h1').innerText()).toBe(`Backup ${backupId}`);
    const forged = await page.evaluate(async (id) => {
      const csrf = document.querySelector<HTMLMetaElement>('meta[name="csrf-token"]')!.content;
      const post = (headers: Record<string, string>) =>
        fetch('/api/v1/RestoreBackup', {
          method: 'POST',
          headers: { 'content-type': 'application/json', ...headers },
          body: JSON.stringify({ backupId: id }),
        });
      const withCsrf = await post({ 'x-csrf-token': csrf });
      const without = await post({});
      return { withCsrf: withCsrf.status, body: await withCsrf.json(), without: without.status };
    }, backupId);
    expect(forged.withCsrf).toBe(403);
    expect(forged.body).toEqual({
      code: 'BOXBACK_ERR_PERMISSION_DENIED',
      message: 'role viewer may not restore backups; ask an admin for an admin token',
    });
    expect(forged.without).toBe(403);
    const r = await cluster.cli(['audit', '--json']);
    const entries = JSON.parse(r.stdout) as Array<{ who: string; action: string; result: string; detail: string }>;
    const vic = entries.filter((e) => e.who === 'vic' && e.action === 'RestoreBackup');
    expect(vic.map((e) => e.result)).toEqual(['BOXBACK_ERR_PERMISSION_DENIED', 'BOXBACK_ERR_PERMISSION_DENIED']);
    expect(vic.some((e) => /CSRF/.test(e.detail))).toBe(true);
    await page.goto(`${cluster.dashboardUrl}audit`);
    expect(await page.locator('h1').innerText()).toBe('Not allowed');
    await shot(page, 'viewer-audit-refused');
    await ctx.close();
  });

  it('renders markup in names as text', async () => {
    const evil = '<script>window.__owned=1</script><img src=x onerror="window.__owned=2">';
    const r = await cluster.cli(['hosts', 'add', evil, '--address', '127.0.0.1:1', '--skip-check']);
    expect(r.code).not.toBe(0);
    const { ctx, page } = await signIn(cluster.token);
    await page.goto(`${cluster.dashboardUrl}audit`);
    expect(await page.locator('table.audit').innerText()).toContain(evil);
    expect(await page.locator('table.audit img, table.audit script').count()).toBe(0);
    await page.goto(`${cluster.dashboardUrl}hosts/${encodeURIComponent(evil)}`);
    expect(await page.locator('h1').innerText()).toBe('Not found');
    expect(await page.evaluate(() => (window as unknown as { __owned?: number }).__owned)).toBeUndefined();
    await ctx.close();
  });

  it('signs out: the session cookie no longer opens a page', async () => {
    const { ctx, page } = await signIn(cluster.token);
    const cookie = (await ctx.cookies()).find((c) => c.name === 'boxback_session')!;
    expect(cookie).toMatchObject({ httpOnly: true, secure: true, sameSite: 'Strict' });
    expect(cookie.expires).toBeGreaterThan(Date.now() / 1000);
    await Promise.all([page.waitForURL(/\/login$/), page.click('header form button')]);
    await page.goto(cluster.dashboardUrl);
    expect(new URL(page.url()).pathname).toBe('/login');
    await ctx.close();
  });

  it('sends an expired session back to sign-in', async () => {
    const short = await startCluster({ dir: path.join(dir, 'short'), dashboard: { sessionTimeout: 2 } });
    try {
      const { ctx, page } = await signIn(short.token, short.dashboardUrl);
      expect(await page.locator('h1').innerText()).toBe('Fleet');
      await new Promise((r) => setTimeout(r, 2500));
      await page.reload();
      expect(page.url()).toMatch(/\/login\?expired=1$/);
      expect(await page.locator('.error').innerText()).toContain('Your session has expired');
      await shot(page, 'login-expired');
      await ctx.close();
    } finally {
      await short.stop();
    }
  });
});
