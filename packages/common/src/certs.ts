/**
 * The fleet's certificate authority: one CA signs the controller's certificate and one
 * certificate per agent. Keys are RSA 2048 made by Node's crypto (native, fast) and the
 * certificates are built with node-forge. Private keys are written mode 0600.
 *
 * Layout of a certs directory:
 *   ca.crt, ca.key                 the CA
 *   controller.crt, controller.key the controller (server for the CLI, client for agents):
 *                                  extended key usage serverAuth + clientAuth
 *   agents/<name>.crt, .key        one per agent (server for the controller): serverAuth
 *                                  only, so TLS refuses it as a client certificate
 * Certificates issued by older versions gave agents clientAuth too: `checkCerts` (`boxback certs
 * check`) names them, and `boxback certs issue` again replaces one.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import forge from 'node-forge';
import { BoxbackError } from './errors.js';
import { writeFileAtomic } from './fs-atomic.js';

const VALID_DAYS_CA = 3650;
const VALID_DAYS_LEAF = 825;

function newKeyPair(): { privatePem: string; forgeKey: forge.pki.rsa.PrivateKey; forgePub: forge.pki.rsa.PublicKey } {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const privatePem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
  const forgeKey = forge.pki.privateKeyFromPem(privatePem);
  const forgePub = forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e);
  return { privatePem, forgeKey, forgePub };
}

function baseCert(pub: forge.pki.PublicKey, cn: string, days: number): forge.pki.Certificate {
  const cert = forge.pki.createCertificate();
  cert.publicKey = pub;
  cert.serialNumber = '01' + randomBytes(15).toString('hex');
  const now = new Date();
  cert.validity.notBefore = new Date(now.getTime() - 5 * 60_000);
  cert.validity.notAfter = new Date(now.getTime() + days * 86_400_000);
  cert.setSubject([
    { name: 'commonName', value: cn },
    { name: 'organizationName', value: 'boxback' },
  ]);
  return cert;
}

export interface IssuedCert {
  certPem: string;
  keyPem: string;
}

export function createCa(name = 'boxback fleet CA'): IssuedCert {
  const kp = newKeyPair();
  const cert = baseCert(kp.forgePub, name, VALID_DAYS_CA);
  cert.setIssuer(cert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  cert.sign(kp.forgeKey, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem: kp.privatePem };
}

/** What a leaf certificate may do: `server` (agents) or `server+client` (the controller). */
export type CertUsage = 'server' | 'server+client';

/** Issue a leaf certificate for `name`: a TLS server, and a TLS client too when `usage` says so. */
export function issueCert(ca: IssuedCert, name: string, altNames: string[] = [], usage: CertUsage = 'server'): IssuedCert {
  const caCert = forge.pki.certificateFromPem(ca.certPem);
  const caKey = forge.pki.privateKeyFromPem(ca.keyPem);
  const kp = newKeyPair();
  const cert = baseCert(kp.forgePub, name, VALID_DAYS_LEAF);
  cert.setIssuer(caCert.subject.attributes);
  const names = [...new Set([name, 'localhost', ...altNames])];
  const ips = [...new Set(['127.0.0.1', '::1', ...altNames.filter((n) => isIP(n))])];
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true, clientAuth: usage === 'server+client' },
    {
      name: 'subjectAltName',
      altNames: [...names.filter((n) => !isIP(n)).map((value) => ({ type: 2, value })), ...ips.map((ip) => ({ type: 7, ip }))],
    },
  ]);
  cert.sign(caKey, forge.md.sha256.create());
  return { certPem: forge.pki.certificateToPem(cert), keyPem: kp.privatePem };
}

async function writePair(dir: string, base: string, pair: IssuedCert): Promise<{ cert: string; key: string }> {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const cert = path.join(dir, `${base}.crt`);
  const key = path.join(dir, `${base}.key`);
  await writeFileAtomic(key, pair.keyPem, 0o600);
  await writeFileAtomic(cert, pair.certPem, 0o644);
  return { cert, key };
}

function loadCa(dir: string): IssuedCert {
  const c = path.join(dir, 'ca.crt');
  const k = path.join(dir, 'ca.key');
  if (!existsSync(c) || !existsSync(k)) {
    throw new BoxbackError('BOXBACK_ERR_CERTS', `no CA in ${dir}: run \`boxback certs init --dir ${dir}\` first`);
  }
  return { certPem: readFileSync(c, 'utf8'), keyPem: readFileSync(k, 'utf8') };
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export function checkName(name: string, what = 'host name'): void {
  if (!NAME_RE.test(name)) {
    throw new BoxbackError('BOXBACK_ERR_INVALID_ARGUMENT', `invalid ${what} "${name}": use letters, digits, '.', '_' or '-' (at most 63)`);
  }
}

/** `boxback certs init`: a new CA and the controller's certificate. Refuses to overwrite a CA. */
export async function initCerts(dir: string, opts: { controllerName?: string; altNames?: string[]; force?: boolean } = {}) {
  if (existsSync(path.join(dir, 'ca.key')) && !opts.force) {
    throw new BoxbackError(
      'BOXBACK_ERR_CERTS',
      `a CA already exists in ${dir}; re-issuing it would cut off every agent (use --force to replace it)`,
    );
  }
  const ca = createCa();
  const caFiles = await writePair(dir, 'ca', ca);
  const name = opts.controllerName ?? 'controller';
  const ctl = await writePair(dir, 'controller', issueCert(ca, name, opts.altNames, 'server+client'));
  return { ca: caFiles.cert, caKey: caFiles.key, cert: ctl.cert, key: ctl.key };
}

/** `boxback certs issue --host NAME`: an agent's certificate signed by the CA in `dir`. */
export async function issueAgentCert(dir: string, host: string, altNames: string[] = []) {
  checkName(host);
  const ca = loadCa(dir);
  const files = await writePair(path.join(dir, 'agents'), host, issueCert(ca, host, altNames, 'server'));
  return { ca: path.join(dir, 'ca.crt'), ...files };
}

/** The name (CN) of a certificate, and whether it may act as a TLS client (no EKU at all also may). */
export function certInfo(certPem: string): { name: string; clientAuth: boolean; notAfterMs: number } {
  const cert = forge.pki.certificateFromPem(certPem);
  const eku = cert.getExtension('extKeyUsage') as { clientAuth?: boolean } | null;
  return {
    name: String(cert.subject.getField('CN')?.value ?? ''),
    clientAuth: !eku || Boolean(eku.clientAuth),
    notAfterMs: cert.validity.notAfter.getTime(),
  };
}

export interface CertCheck {
  file: string;
  role: 'controller' | 'agent';
  name: string;
  clientAuth: boolean;
  notAfterMs: number;
  /** What is wrong and what to run; '' when the certificate is as this version issues it. */
  problem: string;
}

/**
 * `boxback certs check`: every certificate of a certs directory, and the ones an older boxback
 * issued that this one would not (an agent certificate usable as a TLS client could call other
 * agents as if it were the controller, were they configured to accept its name).
 */
export function checkCerts(dir: string): CertCheck[] {
  const out: CertCheck[] = [];
  const look = (file: string, role: CertCheck['role']) => {
    if (!existsSync(file)) return;
    const i = certInfo(readFileSync(file, 'utf8'));
    let problem = '';
    if (role === 'agent' && i.clientAuth) {
      problem = `usable as a client certificate (issued by an older boxback): re-issue it with \`boxback certs issue --dir ${dir} --host ${i.name}\` and install the new one on the agent`;
    }
    if (i.notAfterMs < Date.now()) problem = [problem, 'expired'].filter(Boolean).join('; ');
    out.push({ file, role, name: i.name, clientAuth: i.clientAuth, notAfterMs: i.notAfterMs, problem });
  };
  look(path.join(dir, 'controller.crt'), 'controller');
  const agents = path.join(dir, 'agents');
  if (existsSync(agents)) {
    for (const f of readdirSync(agents)
      .filter((n) => n.endsWith('.crt'))
      .sort())
      look(path.join(agents, f), 'agent');
  }
  return out;
}
