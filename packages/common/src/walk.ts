// The tree walker and the exclude-pattern compiler live in @boxback/common (walk.ts): the S3
// store walks trees with the same rules. Re-exported here for the agent's existing imports.
export { excludeMatcher, walkTree, type Matcher, type WalkEntry } from '@boxback/common';
