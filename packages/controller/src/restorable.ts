/**
 * The one refusal of a restore from a backup that is not Restorable (BOXBACK_ERR_NOT_RESTORABLE,
 * exit 8: not possible in this state). The controller's RestoreBackup throws it; the CLI
 * throws the same before it asks for a confirmation, so that a script without a terminal
 * learns the real reason (not "needs confirmation", a usage error).
 */
import { BoxbackError } from '@boxback/common';

export interface RestorableFacts {
  id: string;
  host: string;
  restorable: boolean;
  verifyFailed: boolean;
  errorMessage: string;
  status: string;
}

/** Throws BOXBACK_ERR_NOT_RESTORABLE naming why, unless `b` is Restorable. */
export function mustBeRestorable(b: RestorableFacts): void {
  if (b.restorable) return;
  const why = b.verifyFailed ? `its last verification failed: ${b.errorMessage}` : `its status is ${b.status}`;
  throw new BoxbackError(
    'BOXBACK_ERR_NOT_RESTORABLE',
    `backup ${b.id} is not Restorable (${why}); pick a Restorable one from \`boxback backups --host ${b.host}\``,
  );
}
