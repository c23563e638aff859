/**
 * The dashboard's page script (bundled with uPlot by scripts/build-dashboard.mjs).
 * Pages are rendered on the server; this adds: action buttons (POST /api/v1/<rpc> with the
 * CSRF token), the fleet table's filter, search and sort, live progress from /events
 * (fleet, host) or WatchJob (job page), the host charts, and the restore flow (dry run
 * first, then the target host typed to confirm). Text from the server goes in as text.
 */
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import './app.css';

const $ = <T extends Element = HTMLElement>(sel: string, root: ParentNode = document) => root.querySelector<T>(sel as string) as T | null;
const csrf = () => $<HTMLMetaElement>('meta[name="csrf-token"]')?.content ?? '';

function flash(text: string, kind: 'error' | 'info' = 'info'): void {
  const f = $('#flash');
  if (!f) return;
  f.textContent = text;
  f.className = kind;
}

interface ApiError {
  code: string;
  message: string;
}

async function api<T = unknown>(name: string, body: unknown): Promise<T> {
  const res = await fetch(`/api/v1/${name}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-csrf-token': csrf() },
    body: JSON.stringify(body),
    credentials: 'same-origin',
  });
  const json = (await res.json().catch(() => ({}))) as T & ApiError;
  if (res.status === 401) {
    location.href = '/login?expired=1';
    throw new Error('signed out');
  }
  if (!res.ok) throw Object.assign(new Error(json.message), { code: json.code });
  return json;
}

function failed(err: unknown): void {
  const e = err as Error & { code?: string };
  flash(`${e.code ? `${e.code}: ` : ''}${e.message}`, 'error');
}

/** Buttons with data-action: one RPC each. */
function wireActions(): void {
  document.addEventListener('click', (ev) => {
    const b = (ev.target as HTMLElement).closest<HTMLButtonElement>('button.action');
    if (!b) return;
    if (b.dataset.confirm && !confirm(b.dataset.confirm)) return;
    b.disabled = true;
    api<{ id?: string; jobs?: { id: string }[]; ok?: boolean; problems?: string[] }>(b.dataset.action!, JSON.parse(b.dataset.body ?? '{}'))
      .then((r) => {
        const job = r.jobs?.[0]?.id ?? r.id;
        if (b.dataset.then === 'job' && job && (r.jobs?.length ?? 1) === 1) location.href = `/jobs/${encodeURIComponent(job)}`;
        else if (r.ok === false) flash(`verification found ${r.problems?.length ?? 0} problem(s): ${r.problems?.[0] ?? ''}`, 'error');
        else {
          flash(`${b.dataset.action} done${r.jobs ? `: ${r.jobs.length} job(s) queued` : ''}`);
          setTimeout(() => location.reload(), 800);
        }
      })
      .catch(failed)
      .finally(() => (b.disabled = false));
  });
}

/** Fleet table: search (press / to focus), group filter, at-risk only, sortable headers. */
function wireFleet(table: HTMLTableElement): void {
  const search = $<HTMLInputElement>('#search')!;
  const group = $<HTMLSelectElement>('#group-filter')!;
  const risk = $<HTMLInputElement>('#risk-only')!;
  const groupButton = $<HTMLButtonElement>('#backup-group');
  const rows = () => [...table.tBodies[0].rows];
  const apply = () => {
    const q = search.value.trim().toLowerCase();
    for (const r of rows()) {
      const show =
        (!q || (r.dataset.host ?? '').toLowerCase().includes(q)) &&
        (!group.value || r.dataset.group === group.value) &&
        (!risk.checked || r.dataset.risk === '1');
      r.hidden = !show;
    }
    if (groupButton) groupButton.disabled = !group.value;
  };
  search.addEventListener('input', apply);
  group.addEventListener('change', apply);
  risk.addEventListener('change', apply);
  document.addEventListener('keydown', (e) => {
    if (e.key === '/' && document.activeElement !== search) {
      e.preventDefault();
      search.focus();
    }
  });
  groupButton?.addEventListener('click', () => {
    if (!confirm(`Back up every host of group ${group.value}?`)) return;
    api<{ jobs: unknown[] }>('CreateBackup', { group: group.value })
      .then((r) => flash(`${r.jobs.length} backup job(s) queued for group ${group.value}`))
      .catch(failed);
  });
  let dir = 1;
  table.querySelectorAll<HTMLButtonElement>('button.sort').forEach((b) =>
    b.addEventListener('click', () => {
      const key = b.dataset.sort!;
      dir = b.getAttribute('aria-sort') === 'ascending' ? -1 : 1;
      table.querySelectorAll('button.sort').forEach((x) => x.removeAttribute('aria-sort'));
      b.setAttribute('aria-sort', dir === 1 ? 'ascending' : 'descending');
      const val = (r: HTMLTableRowElement) => {
        const v = r.dataset[key] ?? '';
        return key === 'host' || key === 'group' ? v : Number(v);
      };
      const sorted = rows().sort((a, c) => {
        const x = val(a);
        const y = val(c);
        return (x < y ? -1 : x > y ? 1 : 0) * dir * (key === 'risk' ? -1 : 1);
      });
      table.tBodies[0].append(...sorted);
    }),
  );
}

interface FeedJob {
  id: string;
  host: string;
  kind: string;
  phase: string;
  bytesDone: number;
  bytesTotal: number;
}

function runningCell(cell: Element, j: FeedJob | undefined): void {
  cell.replaceChildren();
  if (!j) {
    const s = document.createElement('span');
    s.className = 'idle';
    s.textContent = 'idle';
    cell.append(s);
    return;
  }
  const a = document.createElement('a');
  a.href = `/jobs/${encodeURIComponent(j.id)}`;
  a.textContent = `${j.kind} ${j.phase || 'queued'}`;
  const p = document.createElement('progress');
  p.max = 100;
  if (j.bytesTotal) p.value = Math.floor((100 * j.bytesDone) / j.bytesTotal);
  p.setAttribute('aria-label', `progress of ${j.id}`);
  cell.append(a, ' ', p);
}

/** Live running-job cells from /events (one stream per page, pushed by the controller). */
function wireFeed(): void {
  const cells = document.querySelectorAll('[data-running]');
  if (!cells.length) return;
  const es = new EventSource('/events');
  es.onmessage = (ev) => {
    const { jobs } = JSON.parse(ev.data as string) as { jobs: FeedJob[] };
    const byHost = new Map(jobs.map((j) => [j.host, j]));
    cells.forEach((c) => runningCell(c, byHost.get((c as HTMLElement).dataset.running!)));
    const n = $('#running-count');
    if (n) n.textContent = String(jobs.length);
  };
  es.addEventListener('expired', () => (location.href = '/login?expired=1'));
}

/** Job page: follow WatchJob; when the result comes, reload for the final state. */
function wireJob(el: HTMLElement): void {
  if (el.dataset.ended === '1') return;
  const es = new EventSource(`/api/v1/WatchJob?id=${encodeURIComponent(el.dataset.job!)}`);
  es.onmessage = (ev) => {
    const e = JSON.parse(ev.data as string) as {
      progress?: { phase: string; state: string; bytesDone: number; bytesTotal: number; message: string };
      result?: { status: string };
    };
    if (e.progress) {
      $('#job-phase')!.textContent = `${e.progress.phase} (${e.progress.state})`;
      $('#job-state')!.textContent = 'Running';
      const p = $<HTMLProgressElement>('#job-progress')!;
      if (e.progress.bytesTotal) p.value = Math.floor((100 * e.progress.bytesDone) / e.progress.bytesTotal);
      $('#job-progress-text')!.textContent = e.progress.message;
    }
    if (e.result) {
      $('#job-state')!.textContent = e.result.status;
      es.close();
      setTimeout(() => location.reload(), 300);
    }
  };
  es.addEventListener('end', () => es.close());
  es.addEventListener('error', () => es.close());
}

/** Host page: size, duration and quiesce window over time. */
function wireCharts(): void {
  const data = $('#chart-data');
  if (!data) return;
  const rows = JSON.parse(data.textContent ?? '[]') as { t: number; size: number; duration: number | null; quiesce: number }[];
  if (!rows.length) return;
  const t = rows.map((r) => r.t);
  const chart = (id: string, label: string, ys: (number | null)[], fmt: (v: number) => string) => {
    const el = $(`#${id}`);
    if (!el) return;
    const opts: uPlot.Options = {
      width: 360,
      height: 200,
      series: [{}, { label, stroke: '#2563eb', width: 2, points: { show: true, size: 6 }, value: (_u, v) => (v == null ? '-' : fmt(v)) }],
      axes: [{}, { values: (_u, vals) => vals.map(fmt), size: 70 }],
      scales: { x: { time: true, range: (_u, min, max) => (min === max ? [min - 3600, max + 3600] : [min, max]) } },
    };
    new uPlot(opts, [t, ys], el);
  };
  const mib = (v: number) => `${(v / 1048576).toFixed(1)} MiB`;
  const sec = (v: number) => `${(v / 1000).toFixed(1)} s`;
  chart(
    'chart-size',
    'size',
    rows.map((r) => r.size),
    mib,
  );
  chart(
    'chart-duration',
    'duration',
    rows.map((r) => r.duration),
    sec,
  );
  chart(
    'chart-quiesce',
    'quiesce window',
    rows.map((r) => r.quiesce),
    sec,
  );
}

/** Follow a job until its result; resolves the result. */
function followJob(id: string): Promise<{ status: string; dryRunReport: string; errorMessage: string }> {
  return new Promise((resolve, reject) => {
    const es = new EventSource(`/api/v1/WatchJob?id=${encodeURIComponent(id)}`);
    es.onmessage = (ev) => {
      const e = JSON.parse(ev.data as string) as { result?: { status: string; dryRunReport: string; errorMessage: string } };
      if (e.result) {
        es.close();
        resolve(e.result);
      }
    };
    es.addEventListener('error', () => {
      es.close();
      reject(new Error(`lost the job ${id}`));
    });
  });
}

/** Backup page: dry run first; the real restore only after typing the target host's name. */
function wireRestore(sec: HTMLElement): void {
  const target = $<HTMLSelectElement>('#restore-target', sec)!;
  const preview = $<HTMLButtonElement>('#restore-preview', sec)!;
  const go = $<HTMLButtonElement>('#restore-go', sec)!;
  const typed = $<HTMLInputElement>('#restore-confirm', sec)!;
  const backupId = sec.dataset.backup!;
  const reset = () => {
    $('#restore-report', sec)!.hidden = true;
    go.disabled = true;
    typed.value = '';
  };
  target.addEventListener('change', reset);
  typed.addEventListener('input', () => (go.disabled = typed.value !== target.value));
  preview.addEventListener('click', () => {
    preview.disabled = true;
    flash('dry run running…');
    api<{ id: string }>('RestoreBackup', { backupId, targetHost: target.value, dryRun: true })
      .then((job) => followJob(job.id))
      .then((r) => {
        $('#restore-report-text', sec)!.textContent = r.dryRunReport || r.errorMessage || r.status;
        $('#restore-confirm-name', sec)!.textContent = target.value;
        $('#restore-report', sec)!.hidden = false;
        flash(`dry run ${r.status}`);
        typed.focus();
      })
      .catch(failed)
      .finally(() => (preview.disabled = false));
  });
  go.addEventListener('click', () => {
    if (typed.value !== target.value) return;
    go.disabled = true;
    api<{ id: string }>('RestoreBackup', { backupId, targetHost: target.value, dryRun: false })
      .then((job) => (location.href = `/jobs/${encodeURIComponent(job.id)}`))
      .catch(failed);
  });
}

function wireDrill(): void {
  const b = $<HTMLButtonElement>('#run-drill');
  if (!b) return;
  b.addEventListener('click', () => {
    const on = $<HTMLSelectElement>('#drill-host')!.value;
    if (!confirm(`Restore the newest Restorable backup of ${b.dataset.host} onto ${on} (its data there is replaced)?`)) return;
    api<{ id: string }>('RunDrill', { host: b.dataset.host, drillHost: on })
      .then((j) => (location.href = `/jobs/${encodeURIComponent(j.id)}`))
      .catch(failed);
  });
}

document.addEventListener('DOMContentLoaded', () => {
  wireActions();
  const fleet = $<HTMLTableElement>('#fleet');
  if (fleet) wireFleet(fleet);
  wireFeed();
  const job = $('#job');
  if (job) wireJob(job);
  wireCharts();
  const restore = $('#restore');
  if (restore) wireRestore(restore);
  wireDrill();
});
