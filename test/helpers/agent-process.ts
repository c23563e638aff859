/**
 * Run the real agent (`node packages/agent/dist/main.js --config ...`) over mutual TLS for a
 * test, and talk to it as the controller does.
 *
 *   const agent = await startAgent({ dir, name: 'gocd1', planFile, store, allowedRoots: [root] });
 *   for await (const ev of serverStream(agent.client, 'Backup', req)) ...
 *   await agent.stop();            // SIGTERM, waits for exit
 *   await agent.kill('SIGKILL');   // any signal, waits for exit
 *
 * Certificates live in `<dir>/certs` (a CA and controller cert made once by initCerts, one
 * agent cert per name): starting again with the same dir reuses them, so an agent can be
 * killed and restarted. The agent listens on 127.0.0.1:0; its port is read from its
 * "agent listening" log line. The implementation is agent-daemon.mjs, which the bench shares.
 * Needs `npm run build` first (the tests' npm script does it).
 */
import { startAgentDaemon, type AgentProcess, type StartAgentOptions } from './agent-daemon.mjs';

export { AGENT_MAIN } from './agent-daemon.mjs';
export type { AgentProcess, StartAgentOptions } from './agent-daemon.mjs';

export function startAgent(o: StartAgentOptions): Promise<AgentProcess> {
  return startAgentDaemon(o);
}
