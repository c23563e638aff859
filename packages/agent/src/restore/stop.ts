/**
 * Step STOP: stop the plan's services and make sure they are dead before any target is
 * swapped. stopServices waits for the processes (pid file, process pattern, unit state)
 * and throws BOXBACK_ERR_SERVICES_RUNNING if any survives, after restarting the ones it
 * had stopped; here we check once more, so the swap never runs beside a live process.
 */
import { BoxbackError } from '@boxback/common';
import type { JobContext } from '../job.js';
import { isRunning, livePids, stopServices } from '../services.js';

export async function stopAndConfirm(ctx: JobContext): Promise<void> {
  const services = ctx.config.plan.services;
  ctx.emit({ phase: 'STOP', state: 'started', filesTotal: services.length, message: services.map((s) => s.name).join(', ') });
  await stopServices(services, ctx.log);
  for (const svc of services) {
    if (await isRunning(svc)) {
      const pids = await livePids(svc);
      throw new BoxbackError(
        'BOXBACK_ERR_SERVICES_RUNNING',
        `${svc.name} is still running after stop${pids.length ? ` (pid ${pids.join(', ')})` : ''}`,
      );
    }
  }
  ctx.emit({ phase: 'STOP', state: 'done', filesDone: services.length, filesTotal: services.length });
}
