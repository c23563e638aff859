/**
 * HTML for the dashboard's pages: a tagged template that escapes every interpolated value
 * (host names, labels, messages: anything from the catalog or an agent is text, never markup),
 * and the page layout (navigation, who is signed in, sign-out, the CSRF token for the page's
 * script, the bundled assets).
 */
import { roleAllows, type ReqOf, type ResOf, type RouteRole, type RpcName } from '../api/routes.js';
import type { Session } from './sessions.js';

/** Markup that is already safe (made by `html` or `raw`). */
export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

const ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export const esc = (v: unknown): string => String(v).replace(/[&<>"']/g, (c) => ESC[c]);

/** Trusted markup, only for constants of this package. */
export const raw = (s: string): Html => new Html(s);

function part(v: unknown): string {
  if (v instanceof Html) return v.text;
  if (Array.isArray(v)) return v.map(part).join('');
  if (v === null || v === undefined || v === false) return '';
  return esc(v);
}

export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0];
  for (let i = 0; i < values.length; i++) out += part(values[i]) + strings[i + 1];
  return new Html(out);
}

/** JSON for a <script type="application/json"> block: no `<` can end the script early. */
export function jsonBlock(id: string, data: unknown): Html {
  const text = JSON.stringify(data)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
  return new Html(`<script type="application/json" id="${esc(id)}">${text}</script>`);
}

export const can = (s: Session | undefined, role: RouteRole): boolean => Boolean(s && roleAllows(s.caller.role, role));

export interface PageOptions {
  title: string;
  session?: Session;
  body: Html;
  /** "fleet", "audit": the navigation entry to mark. */
  nav?: string;
}

export function layout(o: PageOptions): string {
  const s = o.session;
  const navLink = (href: string, name: string, label: string) =>
    html`<a href="${href}" ${o.nav === name ? raw(' aria-current="page"') : ''}>${label}</a>`;
  const header = s
    ? html`<header class="top">
        <a class="brand" href="/">boxback</a>
        <nav aria-label="main">${navLink('/', 'fleet', 'Fleet')} ${can(s, 'admin') ? navLink('/audit', 'audit', 'Audit log') : ''}</nav>
        <div class="who">
          <span>signed in as <strong>${s.caller.name}</strong> (${s.caller.role})</span>
          <form method="post" action="/logout">
            <input type="hidden" name="csrf" value="${s.csrf}" />
            <button type="submit">Sign out</button>
          </form>
        </div>
      </header>`
    : html`<header class="top"><span class="brand">boxback</span></header>`;
  return `<!doctype html>${html`<html lang="en">
    <head>
      <meta charset="utf-8" />
      <meta name="viewport" content="width=device-width, initial-scale=1" />
      <meta name="csrf-token" content="${s?.csrf ?? ''}" />
      <meta name="role" content="${s?.caller.role ?? ''}" />
      <title>${o.title} — boxback</title>
      <link rel="stylesheet" href="/assets/app.css" />
      <script type="module" src="/assets/app.js"></script>
    </head>
    <body>
      ${header}
      <div id="flash" role="status" aria-live="polite"></div>
      <main>${o.body}</main>
    </body>
  </html>`}`;
}

/** What a page handler gets: its session, and the route table's calls under that session. */
export interface PageCtx {
  session: Session;
  url: URL;
  defaultRpoSeconds: number;
  call<N extends RpcName>(name: N, req: Partial<ReqOf<N>>): Promise<ResOf<N>>;
}

/** An action button: the page script POSTs `body` to /api/v1/<action> with the CSRF token. */
export function actionButton(
  label: string,
  action: RpcName,
  body: unknown,
  extra: { confirm?: string; then?: 'job' | 'reload' } = {},
): Html {
  return html`<button
    type="button"
    class="action"
    data-action="${action}"
    data-body="${JSON.stringify(body)}"
    ${extra.confirm ? html` data-confirm="${extra.confirm}"` : ''}
    data-then="${extra.then ?? 'reload'}"
  >
    ${label}
  </button>`;
}
