/**
 * One job at a time per host, with a lock that cannot go stale: an abstract-namespace
 * Unix socket bound by the holder. The kernel drops it when the holder's process dies,
 * however it dies, so there is no lock file to clean up after a crash.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import { BoxbackError } from '@boxback/common';

export interface HostLock {
  release(): Promise<void>;
}

/** The lock is per host name and agent state dir, so two test agents of the same name on one machine do not collide. */
export async function acquireHostLock(hostName: string, stateDir: string): Promise<HostLock> {
  const key = createHash('sha256').update(stateDir).digest('hex').slice(0, 16);
  const server = net.createServer();
  server.unref();
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') {
        reject(
          new BoxbackError(
            'BOXBACK_ERR_BUSY',
            `${hostName} is busy with another backup or restore; wait for it to finish (boxback status shows it)`,
          ),
        );
      } else reject(err);
    });
    server.listen({ path: `\0boxback-host-lock-${hostName}-${key}` }, () => resolve());
  });
  return {
    release: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
