/**
 * The dataset drivers, one line each, and the plan's dataset schema compiled from them once:
 * a discriminated union on `kind` (default zip). Adding a kind: one file in this directory
 * and one line in DRIVERS.
 */
import { z } from 'zod';
import { BoxbackError, type ManifestDataset } from '@boxback/common';
import type { Plan, PlanDataset } from '../plan.js';
import type { DatasetDriver } from './driver.js';
import { h2DatasetSchema, h2Driver } from './h2.js';
import { mysqlDatasetSchema, mysqlDriver } from './mysql.js';
import { postgresDriver } from './postgres.js';
import { sqliteDatasetSchema, sqliteDriver } from './sqlite.js';
import { zipDriver, zipSchema } from './zip.js';
import { postgresDatasetSchema } from '../postgres/plan.js';

/** Every driver, in the order their kinds are documented. */
const DRIVERS = [zipDriver, postgresDriver, h2Driver, sqliteDriver, mysqlDriver] as const;

/** The plan's `datasets[]` item: `kind` defaults to zip. */
export const datasetSchema = z.preprocess(
  (v) => (v && typeof v === 'object' && !Array.isArray(v) && (v as { kind?: unknown }).kind === undefined ? { ...v, kind: 'zip' } : v),
  z.discriminatedUnion('kind', [zipSchema, postgresDatasetSchema, h2DatasetSchema, sqliteDatasetSchema, mysqlDatasetSchema]),
);

export const DATASET_KINDS: readonly string[] = DRIVERS.map((d) => d.kind);

/** The driver of a plan dataset. */
export function driverOf(d: Pick<PlanDataset, 'kind'>): DatasetDriver {
  const drv = DRIVERS.find((x) => x.kind === d.kind);
  if (!drv) throw new BoxbackError('BOXBACK_ERR_INTERNAL', `no dataset driver for kind ${d.kind}`);
  return drv as unknown as DatasetDriver;
}

/** Whether the plan dataset's driver can restore this manifest entry. */
export function accepts(d: Pick<PlanDataset, 'kind'>, entry: Pick<ManifestDataset, 'kind'>): boolean {
  return driverOf(d).accepts.includes(entry.kind);
}

/** A plan dataset by name, with its index (moves name the dataset they belong to). */
export function planDataset(plan: Plan, name: string | undefined): { d: PlanDataset; index: number } {
  const index = plan.datasets.findIndex((d) => d.name === name);
  if (index < 0) throw new Error(`plan dataset ${name ?? '?'} is no longer in the plan`);
  return { d: plan.datasets[index], index };
}
