/**
 * The backup page (datasets and trees with files and bytes, the phase timeline with the
 * quiesce window marked, consistency, product version, source host and addresses; verify,
 * restore with a dry-run preview first and the target host typed to confirm, delete) and
 * the job page (live phases and progress, warnings, the error with its code and what to do).
 */
import { ERROR_CODES, isErrorCode, type Manifest, type wire } from '@boxback/common';
import { humanAge, humanBytes, humanDate, humanDuration } from '../../cli/format.js';
import { actionButton, can, html, layout, type Html, type PageCtx } from '../html.js';
import { capture, consistency, dataTable, probe } from '../fragments.js';

function parseManifest(json: string): Partial<Manifest> {
  try {
    return json ? (JSON.parse(json) as Partial<Manifest>) : {};
  } catch {
    return {};
  }
}

/** Phases as bars on one time axis; the quiesce window (QUIESCE start .. RESUME end) shaded. */
function timeline(m: Partial<Manifest>): Html {
  const phases = (m.phases ?? []).filter((ph) => ph.startedAt && ph.endedAt);
  if (!phases.length) return html`<p>No phase timeline recorded.</p>`;
  const t = (s: string) => Date.parse(s);
  const t0 = Math.min(...phases.map((ph) => t(ph.startedAt)));
  const t1 = Math.max(...phases.map((ph) => t(ph.endedAt)), t0 + 1);
  const pct = (x: number) => ((100 * (x - t0)) / (t1 - t0)).toFixed(2);
  const q = phases.find((ph) => ph.name === 'QUIESCE');
  const r = phases.find((ph) => ph.name === 'RESUME');
  const window =
    q && r
      ? html`<div
          class="quiesce"
          style="left:${pct(t(q.startedAt))}%;width:${(Number(pct(t(r.endedAt))) - Number(pct(t(q.startedAt)))).toFixed(2)}%"
          title="quiesce window"
        ></div>`
      : '';
  return html`<p>Quiesce window: <strong>${humanDuration(m.quiesce?.windowMs ?? 0)}</strong> (${m.quiesce?.mode ?? '-'}), shaded below.</p>
    <div class="timeline" aria-hidden="true">
      ${window}${phases.map(
        (ph) =>
          html`<div
            class="bar ${ph.state}"
            style="margin-left:${pct(t(ph.startedAt))}%;width:max(2px,${(Number(pct(t(ph.endedAt))) - Number(pct(t(ph.startedAt)))).toFixed(2)}%)"
            title="${ph.name} ${humanDuration(ph.durationMs)}"
          >
            <span>${ph.name}</span>
          </div>`,
      )}
    </div>
    ${dataTable({
      className: 'phases',
      caption: 'Phases',
      columns: ['Phase', 'State', 'Start', 'End', 'Took', 'Bytes', 'Files'],
      rows: phases.map(
        (ph) =>
          html`<tr class="${q && r && t(ph.startedAt) >= t(q.startedAt) && t(ph.endedAt) <= t(r.endedAt) ? 'in-quiesce' : ''}">
            <th scope="row">${ph.name}</th>
            <td>${ph.state}</td>
            <td>${ph.startedAt}</td>
            <td>${ph.endedAt}</td>
            <td class="num">${humanDuration(ph.durationMs)}</td>
            <td class="num">${humanBytes(ph.bytes)}</td>
            <td class="num">${ph.files}</td>
          </tr>`,
      ),
    })}`;
}

function restoreForm(b: wire.Backup, hosts: string[]): Html {
  return html`<section aria-labelledby="restore-h" id="restore" data-backup="${b.id}">
    <h2 id="restore-h">Restore</h2>
    <p>A dry run comes first: it shows the steps and host-file changes and changes nothing.</p>
    <label
      >Onto host
      <select id="restore-target">
        ${hosts.map((h) => html`<option${h === b.host ? html` selected` : ''}>${h}</option>`)}
      </select></label
    >
    <button type="button" id="restore-preview">Preview (dry run)</button>
    <div id="restore-report" hidden>
      <h3>Dry run</h3>
      <pre id="restore-report-text"></pre>
      <label
        >Type the host name <strong id="restore-confirm-name"></strong> to confirm <input id="restore-confirm" autocomplete="off"
      /></label>
      <button type="button" id="restore-go" class="danger" disabled>Restore</button>
    </div>
  </section>`;
}

export async function backupPage(p: PageCtx, id: string): Promise<string> {
  const b = await p.call('GetBackup', { id });
  const m = parseManifest(b.manifestJson);
  const hosts = can(p.session, 'admin') ? (await p.call('ListHosts', {})).hosts.map((h) => h.name) : [];
  const body = html`<h1 class="wrap">Backup ${b.id}</h1>
    <dl class="facts">
      <dt>Host</dt>
      <dd><a href="/hosts/${encodeURIComponent(b.host)}">${b.host}</a></dd>
      <dt>Created</dt>
      <dd>${humanDate(b.createdAtMs)} (${humanAge(b.createdAtMs)})</dd>
      <dt>Status</dt>
      <dd>
        ${b.status}; ${b.restorable ? 'Restorable' : html`<strong>not Restorable</strong>`}${b.damaged ? ` (damaged: ${b.damage})` : ''}
      </dd>
      <dt>Consistency</dt>
      <dd>${consistency(b.consistency)}</dd>
      <dt>Product</dt>
      <dd>${m.product?.name ?? '-'} ${b.productVersion || m.product?.version || ''}</dd>
      <dt>Source</dt>
      <dd>${m.source?.hostname ?? '-'} ${(m.source?.addresses ?? []).join(', ')}</dd>
      <dt>Size</dt>
      <dd>${humanBytes(b.sizeBytes)} in ${b.fileCount} file(s)</dd>
      <dt>Verified</dt>
      <dd>${b.verifiedAtMs ? humanAge(b.verifiedAtMs) : 'never'}</dd>
      <dt>Drill</dt>
      <dd>${b.drillResult || 'never drilled'}</dd>
      <dt>Job</dt>
      <dd>${b.jobId ? html`<a href="/jobs/${encodeURIComponent(b.jobId)}">${b.jobId}</a>` : '-'}</dd>
    </dl>
    ${
      b.consistency === 'live-unverified'
        ? html`<p class="warning live-unverified-note" role="note">
            <strong>LIVE-UNVERIFIED:</strong> a database in this backup was copied while its service ran and nothing proves the copy opens
            (see the Capture column). A restore warns before it changes anything; prefer a quiesced or engine backup.
          </p>`
        : ''
    }
    <div class="controls">
      ${can(p.session, 'operator') ? actionButton('Verify', 'VerifyBackup', { backupId: b.id }) : ''}
      ${can(p.session, 'admin') ? actionButton('Delete', 'DeleteBackup', { backupId: b.id }, { confirm: `Delete ${b.id}? This cannot be undone.` }) : ''}
    </div>
    <section aria-labelledby="data-h">
      <h2 id="data-h">Datasets and trees</h2>
      ${dataTable({
        caption: 'Datasets',
        columns: ['Name', 'Kind', 'Archive', 'Entries', 'Bytes', 'Capture', 'Probe'],
        rows: (m.datasets ?? []).map(
          (d) =>
            html`<tr>
              <th scope="row">${d.name}</th>
              <td>${d.kind}</td>
              <td class="wrap">${d.archive}</td>
              <td class="num">${d.entries}</td>
              <td class="num">${humanBytes(d.bytes)}</td>
              <td>${capture(d)}</td>
              <td>${probe(d)}</td>
            </tr>`,
        ),
      })}
      ${dataTable({
        caption: 'Trees',
        columns: ['Name', 'Directory', 'Files', 'Bytes', 'Sync'],
        rows: (m.trees ?? []).map(
          (t) =>
            html`<tr>
              <th scope="row">${t.name}</th>
              <td class="wrap">${t.dir}</td>
              <td class="num">${t.files}</td>
              <td class="num">${humanBytes(t.bytes)}</td>
              <td>${t.syncMode ?? '-'}</td>
            </tr>`,
        ),
      })}
    </section>
    <section aria-labelledby="tl-h">
      <h2 id="tl-h">Phase timeline</h2>
      ${timeline(m)}
    </section>
    ${can(p.session, 'admin') && b.restorable ? restoreForm(b, hosts) : ''}`;
  return layout({ title: `Backup ${b.id}`, session: p.session, body, nav: 'fleet' });
}

function whatToDo(code: string): string {
  return isErrorCode(code) ? ERROR_CODES[code].doc : '';
}

export async function jobPage(p: PageCtx, id: string): Promise<string> {
  const [j, logs] = await Promise.all([p.call('GetJob', { id }), p.call('GetJobLogs', { id })]);
  const pr = j.progress;
  const pct = pr && pr.bytesTotal ? Math.floor((100 * pr.bytesDone) / pr.bytesTotal) : undefined;
  const body = html`<h1 class="wrap">Job ${j.id}</h1>
    <dl class="facts" id="job" data-job="${j.id}" data-ended="${j.endedAtMs ? 1 : 0}">
      <dt>Kind</dt>
      <dd>${j.kind}</dd>
      <dt>Host</dt>
      <dd><a href="/hosts/${encodeURIComponent(j.host)}">${j.host}</a></dd>
      <dt>State</dt>
      <dd><strong id="job-state" class="state-${j.state}">${j.state}</strong></dd>
      <dt>Phase</dt>
      <dd id="job-phase">${j.phase || '-'}</dd>
      <dt>Progress</dt>
      <dd>
        <progress id="job-progress" max="100" ${pct === undefined ? '' : html`value="${pct}"`}></progress>
        <span id="job-progress-text">${pr?.message ?? ''}</span>
      </dd>
      <dt>Requested by</dt>
      <dd>${j.requestedBy}</dd>
      <dt>Started</dt>
      <dd>${j.startedAtMs ? humanDate(j.startedAtMs) : '-'}</dd>
      <dt>Ended</dt>
      <dd>${j.endedAtMs ? `${humanDate(j.endedAtMs)} (took ${humanDuration(j.endedAtMs - j.startedAtMs)})` : '-'}</dd>
      <dt>Warnings</dt>
      <dd>${j.warningCount}</dd>
      <dt>Backup</dt>
      <dd>${j.backupId ? html`<a href="/backups/${encodeURIComponent(j.backupId)}">${j.backupId}</a>` : '-'}</dd>
    </dl>
    ${
      j.errorCode || j.errorMessage
        ? html`<section class="error" role="alert">
            <h2>Error</h2>
            <p><code>${j.errorCode}</code>: ${j.errorMessage}</p>
            ${whatToDo(j.errorCode) ? html`<p>What it means: ${whatToDo(j.errorCode)} See docs/errors.md.</p>` : ''}
          </section>`
        : ''
    }
    ${
      j.dryRunReport
        ? html`<section>
            <h2>Dry-run report</h2>
            <pre id="dry-run-report">${j.dryRunReport}</pre>
          </section>`
        : ''
    }
    <section aria-labelledby="log-h">
      <h2 id="log-h">Log</h2>
      ${dataTable({
        className: 'log',
        caption: 'Phases and events',
        columns: ['When', 'Phase', 'State', 'Message'],
        bodyId: 'job-log',
        rows: logs.entries.map(
          (e) =>
            html`<tr>
              <td>${new Date(e.atMs).toISOString()}</td>
              <td>${e.phase}</td>
              <td>${e.state}</td>
              <td class="wrap">${e.message}</td>
            </tr>`,
        ),
      })}
    </section>`;
  return layout({ title: `Job ${j.id}`, session: p.session, body, nav: 'fleet' });
}
