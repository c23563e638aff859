/**
 * The fleet page (every host at a glance: agent, group, running job with live progress,
 * last good backup and its age against the RPO, AT RISK, next run, last drill and verify;
 * filter by group, sort, search), the audit log, and the sign-in page.
 * Data comes from the route table (GetStatus, ListAudit) under the signed-in token.
 */
import type { wire } from '@boxback/common';
import { humanAge, humanDate, humanDuration } from '../../cli/format.js';
import { actionButton, can, html, layout, raw, type Html, type PageCtx } from '../html.js';
import { actionsColumn, dataTable } from '../fragments.js';

type Row = wire.HostStatus & { host: wire.Host };

/** "running backup SYNC_ARTIFACTS 42%": the cell the page script updates from /events. */
export function runningCell(j: wire.Job | null): Html {
  if (!j || !j.id) return html`<span class="idle">idle</span>`;
  const p = j.progress;
  const pct = p && p.bytesTotal ? Math.floor((100 * p.bytesDone) / p.bytesTotal) : undefined;
  return html`<a href="/jobs/${encodeURIComponent(j.id)}">${j.kind} ${j.phase || 'queued'}</a>
    <progress max="100" ${pct === undefined ? '' : html`value="${pct}"`} aria-label="progress of ${j.id}"></progress>`;
}

function lastGood(h: Row, rpo: number): Html {
  const b = h.lastGoodBackup;
  if (!b || !b.id) return html`<span class="none">none</span>`;
  return html`<a href="/backups/${encodeURIComponent(b.id)}">${humanAge(b.createdAtMs)}</a>
    <span class="sub">RPO ${humanDuration(rpo * 1000)}</span>`;
}

function row(h: Row, p: PageCtx): Html {
  const name = h.host.name;
  const rpo = h.host.rpoSeconds || p.defaultRpoSeconds;
  const age = h.lastGoodAgeSeconds;
  const verified = h.lastGoodBackup?.verifiedAtMs ?? 0;
  return html`<tr
    data-host="${name}"
    data-group="${h.host.group}"
    data-risk="${h.atRisk ? 1 : 0}"
    data-age="${age < 0 ? 1e12 : age}"
    data-next="${h.nextRunMs || 9e15}"
    class="${h.atRisk ? 'at-risk' : ''}"
  >
    <th scope="row" class="host"><a href="/hosts/${encodeURIComponent(name)}">${name}</a></th>
    <td>
      ${
        h.reachable
          ? html`<span class="up" title="${h.host.lastSeenMs ? `answered ${humanAge(h.host.lastSeenMs)}` : ''}">up</span>
              ${h.host.agentVersion}`
          : html`<span class="down" title="${h.unreachableReason}">DOWN</span>`
      }
    </td>
    <td class="group">${h.host.group || '-'}</td>
    <td class="running" data-running="${name}">${runningCell(h.runningJob)}</td>
    <td>${lastGood(h, rpo)}</td>
    <td>${h.atRisk ? html`<strong class="risk">AT RISK</strong>` : html`<span class="ok">ok</span>`}</td>
    <td>${h.nextRunMs ? humanDate(h.nextRunMs) : '-'}</td>
    <td>${h.lastDrillAtMs ? html`passed ${humanAge(h.lastDrillAtMs)}` : '-'}</td>
    <td>${verified ? humanAge(verified) : '-'}</td>
    <td>${can(p.session, 'operator') ? actionButton('Back up now', 'CreateBackup', { hosts: [name] }, { then: 'job' }) : ''}</td>
  </tr>`;
}

const sortHeader = (key: string, label: string) =>
  html`<th scope="col"><button type="button" class="sort" data-sort="${key}">${label}</button></th>`;

/**
 * The rows of one status answer, per kind of viewer (with or without the operator's buttons).
 * While jobs run, GetStatus hands every caller the same answer for STATUS_REUSE_MS
 * (status.ts): the 1000 rows are rendered once per answer and role, not once per request,
 * ROWS_PER_SLICE at a time with a turn of the event loop between slices (a status call
 * arriving meanwhile is answered, not kept waiting for the whole page).
 */
const rowCache = new WeakMap<object, Map<boolean, Promise<Html>>>();
const ROWS_PER_SLICE = 100;

function fleetRows(s: wire.StatusResponse, p: PageCtx): Promise<Html> {
  const operator = can(p.session, 'operator');
  let byRole = rowCache.get(s);
  if (!byRole) rowCache.set(s, (byRole = new Map()));
  let out = byRole.get(operator);
  if (!out) {
    out = renderRows(
      s.hosts.filter((h): h is Row => h.host !== null),
      p,
    );
    byRole.set(operator, out);
  }
  return out;
}

async function renderRows(rows: Row[], p: PageCtx): Promise<Html> {
  if (!rows.length)
    return html`<tr>
      <td colspan="10">no hosts yet: <code>boxback hosts add NAME --address HOST:PORT</code></td>
    </tr>`;
  const parts: string[] = [];
  for (let i = 0; i < rows.length; i += ROWS_PER_SLICE) {
    if (i > 0) await new Promise((r) => setImmediate(r));
    parts.push(html`${rows.slice(i, i + ROWS_PER_SLICE).map((h) => row(h, p))}`.text);
  }
  return raw(parts.join(''));
}

/**
 * The fleet page of one status answer for one session, encoded once: the dashboard and
 * scripts asking while it is the current answer get the same bytes (1000 hosts: ~0.8 MB, not
 * flattened and encoded again per request).
 */
const pageCache = new WeakMap<object, WeakMap<object, Promise<Buffer>>>();

export function fleetPage(p: PageCtx): Promise<Buffer> {
  return p.call('GetStatus', { refresh: false }).then((s) => {
    let bySession = pageCache.get(s);
    if (!bySession) pageCache.set(s, (bySession = new WeakMap()));
    let out = bySession.get(p.session);
    if (!out) {
      out = renderFleetPage(s, p).then((text) => Buffer.from(text));
      bySession.set(p.session, out);
    }
    return out;
  });
}

async function renderFleetPage(s: wire.StatusResponse, p: PageCtx): Promise<string> {
  const rows = s.hosts.filter((h): h is Row => h.host !== null);
  const groups = [...new Set(rows.map((h) => h.host.group).filter(Boolean))].sort();
  const operator = can(p.session, 'operator');
  const body = html`<h1>Fleet</h1>
    <p class="summary">
      ${s.totalHosts} host(s), ${s.reachableHosts} reachable, <strong>${s.atRiskHosts} at risk</strong>,
      <span id="running-count">${s.runningJobs}</span> job(s) running — controller ${s.controllerVersion}
    </p>
    <div class="controls" role="search">
      <label>Search <input type="search" id="search" placeholder="host name (press /)" autocomplete="off" /></label>
      <label
        >Group
        <select id="group-filter">
          <option value="">all groups</option>
          ${groups.map((g) => html`<option>${g}</option>`)}
        </select></label
      >
      <label><input type="checkbox" id="risk-only" /> at risk only</label>
      ${
        operator
          ? html`${actionButton('Back up all', 'CreateBackup', { all: true }, { confirm: 'Back up every host now?' })}
              <button type="button" id="backup-group" disabled>Back up group</button>`
          : ''
      }
    </div>
    ${dataTable({
      className: 'fleet',
      id: 'fleet',
      caption: 'Every registered host; AT RISK when no Restorable backup is younger than its RPO',
      columns: [
        sortHeader('host', 'Host'),
        'Agent',
        sortHeader('group', 'Group'),
        'Running',
        sortHeader('age', 'Last good backup'),
        sortHeader('risk', 'Status'),
        sortHeader('next', 'Next run'),
        'Last drill',
        'Last verify',
        actionsColumn,
      ],
      rows: await fleetRows(s, p),
    })}`;
  return layout({ title: 'Fleet', session: p.session, body, nav: 'fleet' });
}

export async function auditPage(p: PageCtx): Promise<string> {
  const r = await p.call('ListAudit', { limit: 500 });
  const body = html`<h1>Audit log</h1>
    ${dataTable({
      className: 'audit',
      caption: 'The newest 500 entries, newest first',
      columns: ['When', 'Who', 'Action', 'Target', 'Result', 'Detail'],
      rows: r.entries.map(
        (e) =>
          html`<tr class="${e.result === 'ok' ? '' : 'refused'}">
            <td>${new Date(e.atMs).toISOString()}</td>
            <td>${e.who}</td>
            <td>${e.action}</td>
            <td class="wrap">${e.target}</td>
            <td>${e.result}</td>
            <td class="wrap">${e.detail}</td>
          </tr>`,
      ),
    })}`;
  return layout({ title: 'Audit log', session: p.session, body, nav: 'audit' });
}

export function loginPage(message = ''): string {
  const body = html`<h1>Sign in</h1>
    <form method="post" action="/login" class="login">
      ${message ? html`<p class="error" role="alert">${message}</p>` : ''}
      <label>API token <input type="password" name="token" autocomplete="off" required autofocus /></label>
      <p class="hint">An admin creates one with <code>boxback tokens create --name NAME --role viewer|operator|admin</code>.</p>
      <button type="submit">Sign in</button>
    </form>`;
  return layout({ title: 'Sign in', body });
}

/** A page for a refused or failed call: the message, never a stack trace. */
export function errorPage(p: Pick<PageCtx, 'session'> | undefined, status: number, code: string, message: string): string {
  const body = html`<h1>${status === 403 ? 'Not allowed' : status === 404 ? 'Not found' : 'Something failed'}</h1>
    <p class="error" role="alert"><code>${code}</code>: ${message}</p>
    <p><a href="/">Back to the fleet</a></p>`;
  return layout({ title: 'Error', session: p?.session, body });
}
