export const H2_JAR: string;
export const H2_JAVA_OPTS: string[];
export const H2_SCHEMA: string;
export function startH2(baseDir: string, port: number, pidFile: string, logFile?: string): Promise<number>;
export function stopH2(pidFile: string): Promise<void>;
export function h2Query(url: string, sql: string): string;
export function h2Prefix(url: string): { rows: number; max: number; min: number; counter: number; consistent: boolean };
export function startH2Writer(url: string, from?: number): { stop(): Promise<number> };
