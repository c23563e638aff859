export * from './config.js';
export * from './plan.js';
export * from './server.js';
export * from './product-version.js';
