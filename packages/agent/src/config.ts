/**
 * The agent's config file (agent.yaml): raw YAML -> defaults -> validated -> frozen.
 * Relative paths are resolved against the config file's directory.
 */
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { compileStoreConfig, loadYamlFile, resolveFrom, storeConfigSchema, type StoreConfig } from '@boxback/common';
import { loadPlan, type Plan } from './plan.js';

/** The name `boxback certs init` gives the controller's certificate. */
export const DEFAULT_CONTROLLER_NAME = 'controller';

const agentConfigSchema = z
  .object({
    /** Host name in the catalog; must match the agent's certificate. */
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, "letters, digits, '.', '_' or '-'"),
    /** host:port to serve gRPC on. */
    listen: z.string().regex(/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/, 'want host:port'),
    tls: z.object({ ca: z.string(), cert: z.string(), key: z.string() }).strict(),
    /** The backup store: a directory (local disk or a mount shared with the controller) or { kind: ... } (store/config.ts). */
    store: storeConfigSchema,
    /** Agent state: quiesce records, locks, change journals, safety-copy records. */
    stateDir: z.string().min(1),
    /** The host plan file. */
    plan: z.string().min(1),
    /** The only directories the plan may name. */
    allowedRoots: z.array(z.string()).min(1, 'name at least one root'),
    /** Override the box's identity (hostname and addresses written into host files). */
    identity: z
      .object({ hostname: z.string().optional(), addresses: z.array(z.string()).optional() })
      .strict()
      .default({}),
    /**
     * Certificate common names allowed to call this agent. Default: only the controller's
     * (`boxback certs init` names it "controller"); every other fleet certificate is refused.
     */
    allowedClients: z
      .array(z.string().min(1))
      .min(1, 'name at least one client (the controller\'s certificate name); there is no "any certificate of the CA"')
      .default([DEFAULT_CONTROLLER_NAME]),
  })
  .strict();

export interface AgentConfig {
  readonly file: string;
  readonly name: string;
  readonly listen: string;
  readonly tls: { ca: string; cert: string; key: string };
  readonly store: StoreConfig;
  readonly stateDir: string;
  readonly planFile: string;
  readonly plan: Plan;
  readonly allowedRoots: string[];
  readonly hostname: string;
  readonly addresses: string[];
  readonly allowedClients: string[];
}

/** The box's non-internal IP addresses, IPv4 first. */
export function localAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (!a.internal) out.push(a.address);
  }
  return out.sort((a, b) => Number(a.includes(':')) - Number(b.includes(':')));
}

export function loadAgentConfig(file: string): AgentConfig {
  const raw = loadYamlFile(agentConfigSchema, file);
  const r = (p: string) => resolveFrom(file, p);
  const allowedRoots = raw.allowedRoots.map(r);
  const planFile = r(raw.plan);
  const plan = loadPlan(planFile, allowedRoots);
  return Object.freeze({
    file: path.resolve(file),
    name: raw.name,
    listen: raw.listen,
    tls: { ca: r(raw.tls.ca), cert: r(raw.tls.cert), key: r(raw.tls.key) },
    store: compileStoreConfig(raw.store, file),
    stateDir: r(raw.stateDir),
    planFile,
    plan,
    allowedRoots,
    hostname: raw.identity.hostname ?? os.hostname(),
    addresses: raw.identity.addresses ?? localAddresses(),
    allowedClients: raw.allowedClients,
  });
}
