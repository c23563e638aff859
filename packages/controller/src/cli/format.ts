/**
 * Human output for the CLI: sizes (1.2 GiB), ages (3h ago), durations (1m05s), dates, and
 * tables. A table never loses a column silently:
 *   - stdout a terminal, no option: it fits the terminal (low-priority columns are dropped,
 *     then the widest column is cut with an ellipsis), and one note on stderr names the
 *     dropped columns and how to see them;
 *   - stdout not a terminal (a pipe, a file), or `-o wide`: every column, nothing cut;
 *   - `--columns a,b,c`: those columns in that order, never dropped (a usage error names the
 *     columns there are when one is unknown).
 * The view is set once per command (cli/context.ts tableOptions) before its action runs.
 */
import { BoxbackError } from '@boxback/common';

export function humanBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function humanDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '-';
  const s = Math.round(ms / 1000);
  if (s < 60) return ms < 10_000 ? `${(ms / 1000).toFixed(1)}s` : `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, '0')}h`;
}

export function humanAge(ms: number, now = Date.now()): string {
  if (!ms) return 'never';
  const d = Math.max(0, now - ms);
  if (d < 60_000) return `${Math.round(d / 1000)}s ago`;
  if (d < 3600_000) return `${Math.round(d / 60_000)}m ago`;
  if (d < 48 * 3600_000) return `${Math.round(d / 3600_000)}h ago`;
  return `${Math.round(d / 86_400_000)}d ago`;
}

/** "2026-11-21 20:10" in local time. */
export function humanDate(ms: number): string {
  if (!ms) return '-';
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

export interface Column<T> {
  header: string;
  get: (row: T) => string;
  align?: 'left' | 'right';
  /** Lower is dropped first when the table must fit a terminal (default 10; 10 and above never). */
  priority?: number;
}

export interface TableView {
  /** Fit `width` (a terminal): drop low-priority columns, then cut cells. False: every column, whole. */
  fit: boolean;
  width: number;
  /** Only these columns, in this order (`--columns`), matched by name without case or punctuation. */
  columns?: string[];
  /** Told which columns were dropped to fit (default: a note on stderr, once per process). */
  onDropped?: (headers: string[], width: number) => void;
}

let currentView: TableView | undefined;

/** Set how the tables of this command are rendered (undefined: from whether stdout is a terminal). */
export function setTableView(v: TableView | undefined): void {
  currentView = v;
}

export function defaultTableView(): TableView {
  return { fit: Boolean(process.stdout.isTTY), width: process.stdout.columns || 120 };
}

let noted = false;
function noteDropped(headers: string[], width: number): void {
  if (noted) return;
  noted = true;
  const names = headers.map(columnKey).join(', ');
  process.stderr.write(
    `boxback: note: ${headers.length === 1 ? 'column' : 'columns'} ${names} left out to fit ${width} characters; -o wide shows every column, --columns picks them\n`,
  );
}

/** "Backup ID" -> "backup-id": how a column is named in `--columns` and in messages. */
export function columnKey(header: string): string {
  return header
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-|-$/g, '');
}

const squash = (s: string) => s.toLowerCase().replace(/[^a-z0-9]/g, '');

function chooseColumns<T>(columns: Column<T>[], wanted: string[]): Column<T>[] {
  return wanted.map((w) => {
    const c = columns.find((x) => squash(x.header) === squash(w));
    if (!c)
      throw new BoxbackError(
        'BOXBACK_ERR_USAGE',
        `--columns: no column "${w}" here; there are ${columns.map((x) => columnKey(x.header)).join(', ')}`,
      );
    return c;
  });
}

function cut(s: string, w: number): string {
  return s.length <= w ? s : w <= 1 ? s.slice(0, w) : `${s.slice(0, w - 1)}…`;
}

/** Render rows as a table, as `view` says (default: the command's view, see the module header). */
export function table<T>(rows: T[], columns: Column<T>[], view: TableView = currentView ?? defaultTableView()): string {
  const chosen = view.columns?.length ? chooseColumns(columns, view.columns) : columns;
  let cols = chosen.map((c) => ({ ...c, cells: rows.map(c.get) }));
  const widthOf = (c: (typeof cols)[number]) => Math.max(c.header.length, ...c.cells.map((s) => s.length));
  const total = () => cols.reduce((n, c) => n + widthOf(c), 0) + 2 * (cols.length - 1);
  const width = view.fit ? view.width : Infinity;
  const dropped: string[] = [];
  while (!view.columns?.length && total() > width && cols.length > 2) {
    const lowest = cols.reduce((a, b) => ((b.priority ?? 10) < (a.priority ?? 10) ? b : a));
    if ((lowest.priority ?? 10) >= 10) break;
    cols = cols.filter((c) => c !== lowest);
    dropped.push(lowest.header);
  }
  if (dropped.length)
    (view.onDropped ?? noteDropped)(
      chosen.map((c) => c.header).filter((h) => dropped.includes(h)),
      width,
    );
  const widths = cols.map(widthOf);
  while (widths.reduce((a, b) => a + b, 0) + 2 * (cols.length - 1) > width) {
    const i = widths.indexOf(Math.max(...widths));
    if (widths[i] <= 8) break;
    widths[i]--;
  }
  const line = (cells: string[]) =>
    cells
      .map((s, i) => {
        const v = cut(s, widths[i]);
        return cols[i].align === 'right' ? v.padStart(widths[i]) : v.padEnd(widths[i]);
      })
      .join('  ')
      .trimEnd();
  return [line(cols.map((c) => c.header)), ...rows.map((_r, ri) => line(cols.map((c) => c.cells[ri])))].join('\n');
}
