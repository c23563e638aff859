// Longest test files first, so the workers finish together: with the files in any other order
// a 100 s file started last keeps one worker busy while the others are idle. The seconds come
// from test/helpers/durations.json (a CI run's per-file times: a clean clone has no vitest
// cache to sort by); a file not in it goes first, the larger before the smaller, since nothing
// says it is short. Ties keep vitest's own order.
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

const table = JSON.parse(readFileSync(new URL('./durations.json', import.meta.url), 'utf8')) as { seconds: Record<string, number> };

export default class LongestFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const base = await super.sort(files);
    const root = this.ctx.config.root;
    const known = (f: TestSpecification) => table.seconds[path.relative(root, f.moduleId).split(path.sep).join('/')];
    const size = (f: TestSpecification) => statSync(f.moduleId).size;
    const rank = new Map(base.map((f, i) => [f, i]));
    return [...base].sort((a, b) => {
      const x = known(a);
      const y = known(b);
      if (x === undefined || y === undefined) {
        if (x === undefined && y === undefined) return size(b) - size(a) || rank.get(a)! - rank.get(b)!;
        return x === undefined ? -1 : 1;
      }
      return y - x || rank.get(a)! - rank.get(b)!;
    });
  }
}
