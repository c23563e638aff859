// Types for sample-box.mjs, so .ts tests and tools can import it.
export declare const STANDIN_CTL: string;

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
  startArgv: string[];
  stopArgv: string[];
  start(): Promise<void>;
  stop(): Promise<void>;
  healthy(): Promise<boolean>;
}

export declare function createSampleBox(o: SampleBoxOptions): Promise<SampleBox>;
