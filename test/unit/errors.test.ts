import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BoxbackError, ERROR_CODES, fromServiceError, toServiceError } from '@boxback/common';

describe('error codes', () => {
  it('documents every code in docs/errors.md (run scripts/gen-error-docs.mjs)', () => {
    const doc = readFileSync(new URL('../../docs/errors.md', import.meta.url), 'utf8');
    const missing = Object.keys(ERROR_CODES).filter((c) => !doc.includes(`\`${c}\``));
    expect(missing).toEqual([]);
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
