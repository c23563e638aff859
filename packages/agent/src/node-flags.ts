/**
 * The V8 flags the agent daemon runs with (its shebang, deploy/install.sh's wrapper, and the
 * tests and benches that start it). docs/design/agent-memory.md has the measurements.
 *   --max-semi-space-size=4   a 4 MiB young-generation semi-space instead of V8's 16 MiB: a
 *                             backup makes short-lived garbage in bulk (a 100k-line manifest
 *                             read back, a tree walked); with the default the young generation
 *                             alone holds up to ~48 MiB of it between scavenges
 *   --expose-gc               lets the agent run one full GC when a job or a first scan ends
 *                             (memory.ts): idle, V8 may never collect that garbage itself
 */
export const AGENT_NODE_FLAGS = ['--max-semi-space-size=4', '--expose-gc'];
