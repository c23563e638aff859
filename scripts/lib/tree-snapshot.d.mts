export function snapshotTree(root: string, skip?: (rel: string) => boolean): Record<string, string>;
export function diffSnapshots(a: Record<string, string>, b: Record<string, string>): string[];
export function liveParts(box: { root: string; dbFile: string; h2?: unknown; standinDb?: string }): (rel: string) => boolean;
