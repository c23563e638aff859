/**
 * The part of @boxback/common a gRPC client needs, and nothing else (`@boxback/common/rpc`):
 * errors, the contracts, unary and streaming calls, TLS. The controller's agents' thread
 * (controller/src/agent-worker.ts) loads only this: the whole package (the S3 store's SDK,
 * certificates, manifests, zips...) is ~15 MB more heap in a thread that never uses it.
 */
export * from './errors.js';
export * from './messages.js';
export * from './proto.js';
export * from './tls.js';
