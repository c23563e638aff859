// Types for sample-box.mjs, so .ts tests and tools can import it.
export declare const STANDIN_CTL: string;
export declare const H2_CTL: string;

export interface Prng {
  next(): number;
  bytes(n: number, textRatio?: number): Buffer;
  int(max: number): number;
}
export declare function prng(seed: number): Prng;

export interface SampleBoxOptions {
  root: string;
  port: number;
  seed?: number;
  artifacts?: number;
  testReports?: number;
  dbBytes?: number;
  version?: string;
  hostname?: string;
  address?: string;
  commits?: number;
  /** A real H2 TCP server on this port holds the database (kind: h2). */
  h2Port?: number;
}

export interface SampleBox {
  root: string;
  serverDir: string;
  db: string;
  dbFile: string;
  configRepo: string;
  shine: string;
  artifacts: string;
  plugins: string;
  addons: string;
  wrapperConfig: string;
  configDir: string;
  envFile: string;
  versionFile: string;
  pidFile: string;
  logFile: string;
  planFile: string;
  hostname: string;
  address: string;
  version: string;
  port: number;
  /** With h2Port: the H2 server's URL and pid file. */
  h2: { port: number; url: string; pidFile: string } | null;
  /** Where the stand-in appends its records (dbFile without H2). */
  standinDb: string;
  startArgv: string[];
  stopArgv: string[];
  start(): Promise<void>;
  stop(): Promise<void>;
  healthy(): Promise<boolean>;
}

export declare function createSampleBox(o: SampleBoxOptions): Promise<SampleBox>;
