/**
 * The V8 flags the controller daemon runs with (its shebang, deploy/install.sh's wrapper, and
 * the quick start, tests and benches that start it): a 4 MiB young-generation semi-space
 * instead of V8's 16 MiB, as the agent (packages/agent/src/node-flags.ts). The controller's
 * garbage is short-lived in bulk (a status answer of 1000 hosts, its protobuf and JSON, the
 * fleet page) and its live heap is small (~50 MB at 1000 hosts): the default young generation
 * alone is 32 MiB of RSS. `--heap-growing-percent=50`: the old generation may grow by half
 * its live size before the next full GC, not V8's default (up to 4x at a small heap): in the
 * 1000-host fleet bench the controller's peak RSS went 290.9 -> 186.9 MB (the target is 250),
 * its CPU 23.3 -> 24.1 s, the same minutes. Measured at 1000 hosts (docs/design/fleet-scale.md).
 */
export const CONTROLLER_NODE_FLAGS = ['--max-semi-space-size=4', '--heap-growing-percent=50'];
