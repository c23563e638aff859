/**
 * grpc-js explains a failed connection at length ("No connection established. Last error:
 * Error: connect ECONNREFUSED 10.0.0.5:7444. Resolution note: "). This keeps the part a
 * person can act on and adds a hint.
 */
import { BoxbackError } from '@boxback/common/rpc';

export function tidyMessage(msg: string): string {
  let m = msg.replace(/No connection established\. Last error: (Error: )?/, '').replace(/\.?\s*Resolution note:.*$/s, '');
  if (/ECONNREFUSED/.test(m))
    m = `${m.replace(/connect ECONNREFUSED\s*/, 'connection refused at ')} (is the daemon running and listening there?)`;
  else if (/ETIMEDOUT|EHOSTUNREACH|ENETUNREACH/.test(m)) m = `${m} (check the address and the firewall)`;
  else if (/ENOTFOUND|EAI_AGAIN/.test(m)) m = `${m} (the host name does not resolve)`;
  return m.trim();
}

/** The same error with a tidier message (other errors pass through). */
export function tidyError(err: unknown): unknown {
  if (err instanceof BoxbackError && (err.code === 'BOXBACK_ERR_UNREACHABLE' || err.code === 'BOXBACK_ERR_TLS')) {
    const tidy = tidyMessage(err.message);
    if (tidy !== err.message) return new BoxbackError(err.code, tidy, err.details, { cause: err });
  }
  return err;
}
