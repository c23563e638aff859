/**
 * The V8 flags the controller daemon runs with (its shebang, deploy/install.sh's wrapper, and
 * the quick start, tests and benches that start it). `--max-semi-space-size=16`: V8's own
 * 64-bit maximum for a young-generation semi-space, written out (the agent runs with 4 MiB,
 * packages/agent/src/node-flags.ts). The controller ran with 4 MiB too, for 24 MB less RSS,
 * but during a fleet backup of 1000 hosts (~600 MB allocated, much of it live across a few
 * turns: streams, answers being built) the small young generation promoted that garbage and
 * the GC took 4.2-4.7 s of the backup's 20-21 CPU-s; at 16 MiB 1.6 s of 13-16 CPU-s, the
 * status p50 and p99 lower, peak RSS 192-197 -> 218-222 MB (the target is 250), two pairs
 * back to back (docs/design/fleet-scale.md).
 * `--heap-growing-percent=50`: the old generation may grow by half its live size before the
 * next full GC, not V8's default (up to 4x at a small heap): in the
 * 1000-host fleet bench the controller's peak RSS went 290.9 -> 186.9 MB (the target is 250),
 * its CPU 23.3 -> 24.1 s, the same minutes. Measured at 1000 hosts (docs/design/fleet-scale.md).
 */
export const CONTROLLER_NODE_FLAGS = ['--max-semi-space-size=16', '--heap-growing-percent=50'];
