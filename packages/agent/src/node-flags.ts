/**
 * The V8 flags the agent daemon runs with (its shebang, deploy/install.sh's wrapper, and the
 * tests and benches that start it): a 4 MiB young-generation semi-space instead of V8's 16 MiB.
 * A backup makes short-lived garbage in bulk (a 100k-line manifest read back, a tree walked);
 * with the default the young generation alone holds up to ~48 MiB of it between scavenges.
 * Measured on a 120k-file tree: peak RSS of reading the previous manifest 117 -> 101 MiB.
 */
export const AGENT_NODE_FLAGS = ['--max-semi-space-size=4'];
