/** pino JSON logs to stdout (systemd's journal picks them up). One child logger per job. */
import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * `background`: lines are written to stdout by libuv's thread pool, in order, not by the event
 * loop (a daemon's choice: the controller). pino's default writes each line with writeSync,
 * which waits while whoever reads stdout (the journal, a parent process) is slow to drain the
 * pipe, and on EAGAIN sleeps 100 ms: during a fleet backup of 1000 hosts those waits were 1.5 s
 * of the controller's event loop, every status call queued behind them. What is still queued
 * at exit is written synchronously then (pino flushes its destination on process exit).
 */
/** Bytes of lines queued at most in the background (a stdout that no one drains): later lines are dropped. */
const MAX_QUEUED = 8 * 1024 * 1024;

export function createLogger(name: string, level = process.env.BOXBACK_LOG_LEVEL ?? 'info', o: { background?: boolean } = {}): Logger {
  const options = { name, level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime };
  return o.background ? pino(options, pino.destination({ dest: 1, sync: false, maxLength: MAX_QUEUED })) : pino(options);
}
