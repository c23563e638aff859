/**
 * The V8 flags the controller daemon runs with (its shebang, deploy/install.sh's wrapper, and
 * the quick start, tests and benches that start it). `--max-semi-space-size=8`: an 8 MiB
 * young-generation semi-space for the main thread (the agent runs with 4 MiB,
 * packages/agent/src/node-flags.ts; the agents' thread, agent-thread.ts, has its own 8 MiB
 * young generation). With 4 MiB, during a fleet backup of 1000 hosts (~600 MB allocated, much
 * of it live across a few turns) the small young generation promoted that garbage and the GC
 * took 4.2-4.7 s of the backup's 20-21 CPU-s; 16 MiB cut that to 1.6 s. Since the agents'
 * channels and job streams run in their own thread, the main thread allocates less, and a
 * second heap needs room: 8 MiB kept the main thread's GC at 1.9 s of 18.5 busy seconds
 * (loaded box) and the peak RSS at 236-247 MB (16 MiB with the thread: 275 MB; the target is
 * 250; docs/design/fleet-scale.md).
 * `--heap-growing-percent=50`: the old generation may grow by half its live size before the
 * next full GC, not V8's default (up to 4x at a small heap): in the
 * 1000-host fleet bench the controller's peak RSS went 290.9 -> 186.9 MB (the target is 250),
 * its CPU 23.3 -> 24.1 s, the same minutes. Measured at 1000 hosts (docs/design/fleet-scale.md).
 */
export const CONTROLLER_NODE_FLAGS = ['--max-semi-space-size=8', '--heap-growing-percent=50'];
