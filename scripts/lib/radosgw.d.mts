import type { ChildProcess } from 'node:child_process';
import type { S3Client } from '@aws-sdk/client-s3';

export interface RadosgwInfo {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** ceph.conf of the cluster (for radosgw-admin). */
  conf: string;
}

export interface Radosgw extends RadosgwInfo {
  dir: string;
  /** Pids of the gateway, the osd and the mon that are running. */
  pids(): number[];
  stop(): Promise<void>;
}

export interface StartRadosgwOptions {
  /** memstore's size: what the cluster can hold, in RAM (default 2 GiB). */
  memBytes?: number;
  /** Where the cluster's temp dir is made (default the OS temp dir). */
  parent?: string;
  /** Called with each daemon as soon as it is spawned (the bench tracks them). */
  onSpawn?: (child: ChildProcess) => void;
}

export interface ExtraGateway {
  endpoint: string;
  pid: number;
  stop(): Promise<void>;
}

export const TEST_ACCESS_KEY: string;
export const TEST_SECRET_KEY: string;
export function freePort(): Promise<number>;
export function rgwAdmin(conf: string, args: string[]): Promise<string>;
export function radosgwInstalled(): Promise<boolean>;
export function startRadosgw(opts?: StartRadosgwOptions): Promise<Radosgw>;
export function startExtraGateway(info: RadosgwInfo): Promise<ExtraGateway>;
export function setBucketQuota(info: RadosgwInfo, bucket: string, maxBytes: number): Promise<void>;
export function adminS3(info: RadosgwInfo, endpoint?: string, maxAttempts?: number): S3Client;
export function makeBucket(info: RadosgwInfo, stem?: string): Promise<string>;
export function bucketBytes(info: RadosgwInfo, bucket: string, sub?: string): Promise<{ objects: number; bytes: number }>;
