import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BoxbackError, ERROR_CODES, fromServiceError, toServiceError } from '@boxback/common';
// @ts-expect-error -- a plain .mjs script without types
import { renderErrorDocs } from '../../scripts/gen-error-docs.mjs';

describe('error codes', () => {
  it('documents every code in docs/errors.md (run scripts/gen-error-docs.mjs)', () => {
    const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
    const missing = Object.keys(ERROR_CODES).filter((c) => !doc.includes(`\`${c}\``));
    expect(missing).toEqual([]);
  });

  it('keeps docs/errors.md as the table generates it, HTTP column included (run scripts/gen-error-docs.mjs)', () => {
    const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
    expect(doc).toBe(renderErrorDocs());
    expect(doc).toContain('| `BOXBACK_ERR_PERMISSION_DENIED` | 4 (PERMISSION_DENIED) | PERMISSION_DENIED | 403 |');
  });

  it('gives every code an HTTP status of the same class as its gRPC status', () => {
    for (const [code, s] of Object.entries(ERROR_CODES)) {
      const e = new BoxbackError(code as keyof typeof ERROR_CODES, 'x');
      expect(e.httpStatus, code).toBe(s.http);
      expect(s.http >= 400 && s.http < 600, code).toBe(true);
    }
    expect(new BoxbackError('BOXBACK_ERR_UNAUTHENTICATED', 'x').httpStatus).toBe(401);
    expect(new BoxbackError('BOXBACK_ERR_NOT_FOUND', 'x').httpStatus).toBe(404);
  });

  it('gives every code a sentence of documentation', () => {
    for (const [code, s] of Object.entries(ERROR_CODES)) {
      expect(s.doc.length, code).toBeGreaterThan(15);
      expect(code).toMatch(/^BOXBACK_ERR_[A-Z_]+$/);
    }
  });

  it('survives a trip through gRPC status and metadata', () => {
    const sent = toServiceError(new BoxbackError('BOXBACK_ERR_BUSY', 'gocd1 is busy'));
    const back = fromServiceError(sent);
    expect(back.code).toBe('BOXBACK_ERR_BUSY');
    expect(back.message).toBe('gocd1 is busy');
    expect(back.exitCode).toBe(7);
  });
});
