/**
 * Page pieces shared by the dashboard's pages: a semantic data table (caption, column
 * headers, rows), the consistency of a backup (`live-unverified` marked, see
 * docs/design/dataset-drivers.md), and a dataset's capture and probe.
 */
import type { ManifestDataset } from '@boxback/common';
import { html, type Html } from './html.js';

/** A column header: its label, or [label, markup for the header cell] for a custom one. */
export type Column = string | Html;

/** `<table>` with a caption, a header row of `scope="col"` cells and the given rows. */
export function dataTable(o: {
  className?: string;
  id?: string;
  caption: string | Html;
  columns: Column[];
  rows: Html[] | Html;
  bodyId?: string;
}): Html {
  const head = o.columns.map((c) => (typeof c === 'string' ? html`<th scope="col">${c}</th>` : c));
  return html`<table ${o.className ? html`class="${o.className}"` : ''} ${o.id ? html`id="${o.id}"` : ''}>
    <caption>
      ${o.caption}
    </caption>
    <thead>
      <tr>
        ${head}
      </tr>
    </thead>
    <tbody ${o.bodyId ? html`id="${o.bodyId}"` : ''}>
      ${o.rows}
    </tbody>
  </table>`;
}

/** A header cell that names a column for screen readers only (action buttons). */
export const actionsColumn = html`<th scope="col"><span class="sr">Actions</span></th>`;

const LIVE_UNVERIFIED_TITLE =
  'a database file was copied while its service ran: nothing proves it opens (a --live backup of a zip dataset)';

/** A backup's consistency; `live-unverified` stands out and says what it means. */
export function consistency(value: string): Html {
  if (value === 'live-unverified') return html`<strong class="live-unverified" title="${LIVE_UNVERIFIED_TITLE}">LIVE-UNVERIFIED</strong>`;
  return html`${value || '-'}`;
}

/** How a dataset was copied ("the engine's online copy", LIVE-UNVERIFIED, ...). */
export function capture(d: Pick<ManifestDataset, 'capture'>): Html {
  switch (d.capture) {
    case 'quiesced':
      return html`copied quiesced`;
    case 'engine':
      return html`the engine's online copy`;
    case 'live':
      return html`copied live`;
    case 'live-unverified':
      return html`<strong class="live-unverified" title="${LIVE_UNVERIFIED_TITLE}">LIVE-UNVERIFIED</strong> copied live, nothing proves it
        opens`;
    default:
      return html`-`;
  }
}

/** A dataset's probe: result, method, time, the engine's message. */
export function probe(d: Pick<ManifestDataset, 'probe'>): Html {
  const p = d.probe;
  if (!p) return html`-`;
  return html`${p.result} <span class="sub">${p.method}, ${(p.durationMs / 1000).toFixed(1)} s${p.message ? `: ${p.message}` : ''}</span>`;
}
