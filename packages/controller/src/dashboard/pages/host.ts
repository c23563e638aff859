/**
 * The host page: its status, its backups (Created, Backup ID, Size, Consistency, Restorable,
 * Verified, Drill, Via) with their actions, and charts of backup size, duration and quiesce
 * window over time (drawn by the page script with uPlot from the JSON block).
 */
import type { wire } from '@boxback/common';
import { humanAge, humanBytes, humanDate, humanDuration } from '../../cli/format.js';
import { actionButton, can, html, jsonBlock, layout, type PageCtx } from '../html.js';
import { actionsColumn, consistency, dataTable } from '../fragments.js';
import { runningCell } from './fleet.js';

const via = (v: string) => (v === 'schedule' ? 'auto' : v === 'import' ? 'import' : 'manual');

function drill(b: wire.Backup): string {
  if (b.drillPassedAtMs) return `passed ${humanAge(b.drillPassedAtMs)}${b.drillDurationMs ? ` (${humanDuration(b.drillDurationMs)})` : ''}`;
  if (b.drillAtMs) return `FAILED ${humanAge(b.drillAtMs)}`;
  return '-';
}

function backupRow(b: wire.Backup, p: PageCtx) {
  const id = encodeURIComponent(b.id);
  return html`<tr class="${b.restorable ? '' : 'not-restorable'}">
    <td>${humanDate(b.createdAtMs)} <span class="sub">${humanAge(b.createdAtMs)}</span></td>
    <th scope="row" class="wrap"><a href="/backups/${id}">${b.id}</a></th>
    <td class="num">${humanBytes(b.sizeBytes)}</td>
    <td>${consistency(b.consistency)}</td>
    <td>${b.restorable ? 'yes' : html`<strong>no</strong> (${b.damaged ? `damaged: ${b.damage}` : b.status})`}</td>
    <td>${b.verifiedAtMs ? humanAge(b.verifiedAtMs) : 'never'}</td>
    <td>${drill(b)}</td>
    <td>${via(b.initiatedVia)}</td>
    <td class="actions">
      ${can(p.session, 'operator') ? actionButton('Verify', 'VerifyBackup', { backupId: b.id }) : ''}
      ${can(p.session, 'admin') ? actionButton('Delete', 'DeleteBackup', { backupId: b.id }, { confirm: `Delete ${b.id}? This cannot be undone.` }) : ''}
    </td>
  </tr>`;
}

export async function hostPage(p: PageCtx, name: string): Promise<string> {
  const hosts = await p.call('ListHosts', {});
  const host = hosts.hosts.find((h) => h.name === name);
  if (!host) return '';
  const [status, backups, jobs] = await Promise.all([
    p.call('GetStatus', { refresh: false }),
    p.call('ListBackups', { host: name }),
    p.call('ListJobs', { host: name, kind: 'backup', limit: 500 }),
  ]);
  const st = status.hosts.find((h) => h.host?.name === name);
  const took = new Map(jobs.jobs.filter((j) => j.backupId && j.endedAtMs).map((j) => [j.backupId, j.endedAtMs - j.startedAtMs]));
  const series = [...backups.backups]
    .filter((b) => b.status === 'Completed' || b.status === 'PartiallyFailed')
    .sort((a, b) => a.createdAtMs - b.createdAtMs)
    .map((b) => ({ t: Math.round(b.createdAtMs / 1000), size: b.sizeBytes, duration: took.get(b.id) ?? null, quiesce: b.quiesceWindowMs }));
  const others = hosts.hosts.filter((h) => h.name !== name).map((h) => h.name);
  const body = html`<h1 class="wrap">Host ${name}</h1>
    <dl class="facts">
      <dt>Agent</dt>
      <dd>${st?.reachable ? `up, ${host.agentVersion}` : `DOWN${st?.unreachableReason ? `: ${st.unreachableReason}` : ''}`}</dd>
      <dt>Address</dt>
      <dd>${host.address || '(none: found in the store; set it with boxback hosts set)'}</dd>
      <dt>Group</dt>
      <dd>${host.group || '-'}</dd>
      <dt>Product</dt>
      <dd>${host.product ? `${host.product} ${host.productVersion}` : '-'}</dd>
      <dt>RPO</dt>
      <dd>
        ${humanDuration((host.rpoSeconds || p.defaultRpoSeconds) * 1000)}${st?.atRisk ? html` <strong class="risk">AT RISK</strong>` : ''}
      </dd>
      <dt>Running</dt>
      <dd data-running="${name}">${runningCell(st?.runningJob ?? null)}</dd>
    </dl>
    <div class="controls">
      ${can(p.session, 'operator') ? actionButton('Back up now', 'CreateBackup', { hosts: [name] }, { then: 'job' }) : ''}
      ${
        can(p.session, 'admin') && others.length
          ? html`<label
                >Drill onto
                <select id="drill-host">
                  ${others.map((o) => html`<option>${o}</option>`)}
                </select></label
              >
              <button type="button" id="run-drill" data-host="${name}">Run drill</button>`
          : ''
      }
    </div>
    <section aria-labelledby="charts-h">
      <h2 id="charts-h">Over time</h2>
      <div class="charts">
        <figure id="chart-size"><figcaption>Backup size</figcaption></figure>
        <figure id="chart-duration"><figcaption>Backup duration</figcaption></figure>
        <figure id="chart-quiesce"><figcaption>Quiesce window</figcaption></figure>
      </div>
      ${jsonBlock('chart-data', series)}
    </section>
    <section aria-labelledby="backups-h">
      <h2 id="backups-h">Backups</h2>
      ${dataTable({
        className: 'backups',
        caption: `${backups.backups.length} backup(s), newest first`,
        columns: ['Created', 'Backup ID', 'Size', 'Consistency', 'Restorable', 'Verified', 'Drill', 'Via', actionsColumn],
        rows: backups.backups.map((b) => backupRow(b, p)),
      })}
    </section>`;
  return layout({ title: `Host ${name}`, session: p.session, body, nav: 'fleet' });
}
