/**
 * One job at a time per host, with a lock that cannot go stale: an abstract-namespace
 * Unix socket bound by the holder. The kernel drops it when the holder's process dies,
 * however it dies, so there is no lock file to clean up after a crash.
 */
import net from 'node:net';
import { BoxbackError } from '@boxback/common';

export interface HostLock {
  release(): Promise<void>;
}

export async function acquireHostLock(hostName: string, what: string): Promise<HostLock> {
  const server = net.createServer();
  server.unref();
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') {
        reject(new BoxbackError('BOXBACK_ERR_BUSY', `${hostName} is busy with another backup or restore; wait for it to finish (boxback status shows it)`));
      } else reject(err);
    });
    server.listen({ path: `\0boxback-host-lock-${hostName}` }, () => resolve());
  });
  void what;
  return {
    release: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
