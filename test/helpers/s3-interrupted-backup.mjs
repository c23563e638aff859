// A backup process that dies: it begins an S3 backup, uploads a tree (its packs reach the
// server, its lock is taken), says "uploaded" on stdout, then SIGKILLs itself before commit,
// as an agent killed mid-backup would. Run with the built packages (npm run build first).
// argv[2]: a 0600 JSON file { config, credentials, secretHex, host, source, scratchDir }.
import { readFileSync } from 'node:fs';
import { S3BackupStore, createLogger } from '../../packages/common/dist/index.js';

const job = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const log = createLogger('interrupted', 'silent');
const store = new S3BackupStore(job.config, {
  credentials: job.credentials,
  secret: Buffer.from(job.secretHex, 'hex'),
  scratchDir: job.scratchDir,
  log,
  packTarget: 1024 * 1024,
});
const s = await store.begin({ host: job.host, startedAt: new Date(), jobId: 'killed', log });
await s.syncTree({ dir: 'artifacts', source: job.source, out: { add() {} } });
// packs closed during the sync are being uploaded in the background: let them land
await new Promise((r) => setTimeout(r, 1500));
process.stdout.write('uploaded\n', () => process.kill(process.pid, 'SIGKILL'));
