/**
 * The fleet page (every host at a glance: agent, group, running job with live progress,
 * last good backup and its age against the RPO, AT RISK, next run, last drill and verify;
 * filter by group, sort, search), the audit log, and the sign-in page.
 * Data comes from the route table (GetStatus, ListAudit) under the signed-in token.
 */
import type { wire } from '@boxback/common';
import { humanAge, humanDate, humanDuration } from '../../cli/format.js';
import { actionButton, can, html, layout, raw, type Html, type PageCtx } from '../html.js';
import { utf8 } from '../../status-encoding.js';
import { actionsColumn, dataTable } from '../fragments.js';
import { TimeSlice } from '../../concurrency.js';

type Row = wire.HostStatus & { host: wire.Host };

/** "running backup SYNC_ARTIFACTS 42%": the cell the page script updates from /events. */
export function runningCell(j: wire.Job | null): Html {
  if (!j || !j.id) return html`<span class="idle">idle</span>`;
  const p = j.progress;
  const pct = p && p.bytesTotal ? Math.floor((100 * p.bytesDone) / p.bytesTotal) : undefined;
  return html`<a href="/jobs/${encodeURIComponent(j.id)}">${j.kind} ${j.phase || 'queued'}</a>
    <progress max="100" ${pct === undefined ? '' : html`value="${pct}"`} aria-label="progress of ${j.id}"></progress>`;
}

/**
 * What a row shows that moves while its host's rows do not (times relative to now, the running
 * job): at once, or as slots of a row template (rowTemplate).
 */
interface Times {
  /** "12s ago" for a time in ms since the epoch. */
  ago(ms: number): string;
  /** The host's lastGoodAgeSeconds as the row's sort key. */
  age(h: Row): string;
  /** The running job's cell. */
  running(h: Row): Html | string;
}

const NOW: Times = {
  ago: (ms) => humanAge(ms),
  age: (h) => String(h.lastGoodAgeSeconds < 0 ? 1e12 : h.lastGoodAgeSeconds),
  running: (h) => runningCell(h.runningJob),
};

function lastGood(h: Row, rpo: number, t: Times): Html {
  const b = h.lastGoodBackup;
  if (!b || !b.id) return html`<span class="none">none</span>`;
  return html`<a href="/backups/${encodeURIComponent(b.id)}">${t.ago(b.createdAtMs)}</a>
    <span class="sub">RPO ${humanDuration(rpo * 1000)}</span>`;
}

export function row(h: Row, p: PageCtx, t: Times = NOW): Html {
  const name = h.host.name;
  const rpo = h.host.rpoSeconds || p.defaultRpoSeconds;
  const verified = h.lastGoodBackup?.verifiedAtMs ?? 0;
  return html`<tr
    data-host="${name}"
    data-group="${h.host.group}"
    data-risk="${h.atRisk ? 1 : 0}"
    data-age="${t.age(h)}"
    data-next="${h.nextRunMs || 9e15}"
    class="${h.atRisk ? 'at-risk' : ''}"
  >
    <th scope="row" class="host"><a href="/hosts/${encodeURIComponent(name)}">${name}</a></th>
    <td>
      ${
        h.reachable
          ? html`<span class="up" title="${h.host.lastSeenMs ? `answered ${t.ago(h.host.lastSeenMs)}` : ''}">up</span>
              ${h.host.agentVersion}`
          : html`<span class="down" title="${h.unreachableReason}">DOWN</span>`
      }
    </td>
    <td class="group">${h.host.group || '-'}</td>
    <td class="running" data-running="${name}">${t.running(h)}</td>
    <td>${lastGood(h, rpo, t)}</td>
    <td>${h.atRisk ? html`<strong class="risk">AT RISK</strong>` : html`<span class="ok">ok</span>`}</td>
    <td>${h.nextRunMs ? humanDate(h.nextRunMs) : '-'}</td>
    <td>${h.lastDrillAtMs ? html`passed ${t.ago(h.lastDrillAtMs)}` : '-'}</td>
    <td>${verified ? t.ago(verified) : '-'}</td>
    <td>${can(p.session, 'operator') ? actionButton('Back up now', 'CreateBackup', { hosts: [name] }, { then: 'job' }) : ''}</td>
  </tr>`;
}

/**
 * A row rendered once per host and role while what it shows of the host's rows stays the same
 * (its host and last-good-backup messages are the same objects: status.ts keeps them while their
 * catalog rows do not change, and the same reachability, risk, next run and drill), its times
 * and its running job left as slots filled per answer. A fleet backup gives every host a new
 * entry (its job queued, then running, then its progress): only the running job's cell is
 * rendered again then, not the whole row (1000 rows at CreateBackup: ~7 MB of strings made in
 * the first second, all of it garbage for the young generation to copy).
 */
interface RowTemplate {
  /** The markup between the slots (one more than the slots). */
  pieces: string[];
  slots: Array<(nowMs: number, ageS: number, h: Row) => string>;
}

/** Marks a slot in a rendered row; a row whose text holds it already is not templated. */
const SLOT = '\uE000';

export function rowTemplate(h: Row, p: PageCtx): RowTemplate | undefined {
  const slots: RowTemplate['slots'] = [];
  const mark = (fill: RowTemplate['slots'][number]) => `${SLOT}${slots.push(fill) - 1}${SLOT}`;
  const text = row(h, p, {
    ago: (ms) => mark((now) => humanAge(ms, now)),
    age: () => mark((_now, age) => String(age < 0 ? 1e12 : age)),
    running: () => mark((_now, _age, cur) => runningCell(cur.runningJob).text),
  }).text;
  const split = text.split(SLOT);
  if (split.length !== 2 * slots.length + 1 || slots.some((_, i) => split[2 * i + 1] !== String(i))) return undefined;
  return { pieces: split.filter((_, i) => i % 2 === 0), slots };
}

/** A template with what it was rendered from (compared by identity and value: no key string is made). */
interface Kept {
  last: object | null;
  reachable: boolean;
  reason: string;
  atRisk: boolean;
  next: number;
  drill: number;
  t: RowTemplate | null;
}

/** Per host message (a new one when the host's row changes), per role. */
const templates = new WeakMap<object, Map<boolean, Kept>>();

const keeps = (k: Kept, h: Row) =>
  k.last === h.lastGoodBackup &&
  k.reachable === h.reachable &&
  k.reason === h.unreachableReason &&
  k.atRisk === h.atRisk &&
  k.next === h.nextRunMs &&
  k.drill === h.lastDrillAtMs;

/** The row's markup, appended to `out` in pieces: from its host's template (times and job filled in now), else rendered whole. */
export function templatedRow(out: string[], h: Row, p: PageCtx, nowMs: number): void {
  const operator = can(p.session, 'operator');
  let byRole = templates.get(h.host);
  if (!byRole) templates.set(h.host, (byRole = new Map()));
  let k = byRole.get(operator);
  if (!k || !keeps(k, h)) {
    k = {
      last: h.lastGoodBackup,
      reachable: h.reachable,
      reason: h.unreachableReason,
      atRisk: h.atRisk,
      next: h.nextRunMs,
      drill: h.lastDrillAtMs,
      t: rowTemplate(h, p) ?? null,
    };
    byRole.set(operator, k);
  }
  const t = k.t;
  if (!t) {
    out.push(row(h, p).text);
    return;
  }
  out.push(t.pieces[0]);
  for (let i = 0; i < t.slots.length; i++) out.push(t.slots[i](nowMs, h.lastGoodAgeSeconds, h), t.pieces[i + 1]);
}

const sortHeader = (key: string, label: string) =>
  html`<th scope="col"><button type="button" class="sort" data-sort="${key}">${label}</button></th>`;

/**
 * The rows of one status answer, per kind of viewer (with or without the operator's buttons).
 * While jobs run, GetStatus hands every caller the same answer for STATUS_REUSE_MS
 * (status.ts): the 1000 rows are rendered once per answer and role, not once per request,
 * with a turn of the event loop whenever a slice of time is used up (TimeSlice: a status call
 * arriving meanwhile is answered, not kept waiting for the whole page).
 */
const rowCache = new WeakMap<object, Map<boolean, Promise<string[]>>>();

function fleetRows(s: wire.StatusResponse, p: PageCtx): Promise<string[]> {
  const operator = can(p.session, 'operator');
  let byRole = rowCache.get(s);
  if (!byRole) rowCache.set(s, (byRole = new Map()));
  let out = byRole.get(operator);
  if (!out) {
    out = renderRows(s, p);
    byRole.set(operator, out);
  }
  return out;
}

/** The rows' markup in pieces (most of them kept per entry): the 1000 rows are never joined into one string. */
async function renderRows(s: wire.StatusResponse, p: PageCtx): Promise<string[]> {
  if (!s.hosts.some((h) => h.host !== null))
    return [
      html`<tr>
        <td colspan="10">no hosts yet: <code>boxback hosts add NAME --address HOST:PORT</code></td>
      </tr>`.text,
    ];
  const nowMs = Date.now();
  const out: string[] = [];
  const slice = new TimeSlice();
  for (let i = 0; i < s.hosts.length; i++) {
    if (slice.over()) await slice.turn();
    const h = s.hosts[i];
    if (h.host !== null) templatedRow(out, h as Row, p, nowMs);
  }
  return out;
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
      out = renderFleetPage(s, p);
      bySession.set(p.session, out);
    }
    return out;
  });
}

/** Where the rows go in the page's markup (the page around them is rendered as text, the rows are bytes). */
const ROWS_AT = '\uE000rows\uE000';

async function renderFleetPage(s: wire.StatusResponse, p: PageCtx): Promise<Buffer> {
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
      rows: raw(ROWS_AT),
    })}`;
  const rowParts = await fleetRows(s, p);
  const page = layout({ title: 'Fleet', session: p.session, body, nav: 'fleet' });
  // the last mark: nothing from the catalog (a group name holding the mark) comes after the table's body
  const at = page.lastIndexOf(ROWS_AT);
  return utf8([page.slice(0, at), ...rowParts, page.slice(at + ROWS_AT.length)]);
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
