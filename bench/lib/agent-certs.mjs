// Certificates for the fleet bench's simulated agents: one per agent, as a real fleet has
// (`boxback certs issue --host NAME`: its name, localhost, 127.0.0.1, ::1; serverAuth only),
// signed by the bench's CA. All share one RSA key and are signed with Node's native crypto
// (node-forge's JS signature takes ~0.5 s a certificate on a loaded machine; 1000 agents
// would wait minutes). What the controller checks per connection is then what it checks
// in production: a chain of two and a certificate with four names, not one naming 1000 hosts.
import { createPrivateKey, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import forge from 'node-forge';

/** Write `<dir>/agents/<name>.crt` for every name and one shared key; returns { ca, key, certOf(name) }. */
export function issueBenchAgentCerts(certsDir, names) {
  const caPem = readFileSync(path.join(certsDir, 'ca.crt'), 'utf8');
  const caKey = createPrivateKey(readFileSync(path.join(certsDir, 'ca.key')));
  const caCert = forge.pki.certificateFromPem(caPem);
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pub = forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }).toString());
  const dir = path.join(certsDir, 'agents');
  mkdirSync(dir, { recursive: true });
  const key = path.join(dir, 'bench-agents.key');
  writeFileSync(key, privateKey.export({ type: 'pkcs1', format: 'pem' }).toString(), { mode: 0o600 });
  const sha256Rsa = forge.pki.oids.sha256WithRSAEncryption;
  for (const name of names) {
    const cert = forge.pki.createCertificate();
    cert.publicKey = pub;
    cert.serialNumber = `01${randomBytes(15).toString('hex')}`;
    cert.validity.notBefore = new Date(Date.now() - 5 * 60_000);
    cert.validity.notAfter = new Date(Date.now() + 7 * 86_400_000);
    cert.setSubject([
      { name: 'commonName', value: name },
      { name: 'organizationName', value: 'boxback' },
    ]);
    cert.setIssuer(caCert.subject.attributes);
    cert.setExtensions([
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', serverAuth: true, clientAuth: false },
      {
        name: 'subjectAltName',
        altNames: [
          { type: 2, value: name },
          { type: 2, value: 'localhost' },
          { type: 7, ip: '127.0.0.1' },
          { type: 7, ip: '::1' },
        ],
      },
    ]);
    cert.signatureOid = sha256Rsa;
    cert.siginfo.algorithmOid = sha256Rsa;
    const tbs = forge.asn1.toDer(forge.pki.getTBSCertificate(cert)).getBytes();
    cert.signature = sign('sha256', Buffer.from(tbs, 'binary'), caKey).toString('binary');
    writeFileSync(path.join(dir, `${name}.crt`), forge.pki.certificateToPem(cert));
  }
  return { ca: path.join(certsDir, 'ca.crt'), key, certOf: (name) => path.join(dir, `${name}.crt`) };
}
