/**
 * Controller -> agent channel credentials that resume TLS sessions (docs/design/fleet-scale.md).
 *
 * Past 256 hosts the controller closes idle channels and opens them again for the next poll or
 * job, and every new channel was a full mutual-TLS handshake: the certificate chain verified,
 * the controller's CertificateVerify signed, and Node's identity check parsing the agent's
 * certificate chain into objects (`getPeerCertificate(true)`, the largest item of a 1000-host
 * fleet backup's profile). Each agent's TLS server issues session tickets; this keeps the
 * newest one per host (name and address) and offers it on the host's next connection, so a
 * reconnect to an agent this controller verified a few minutes ago skips all three.
 *
 * What is checked is unchanged: a full handshake is the same mutual TLS as
 * `mutualClientCredentials` (the fleet CA, the controller's certificate, the agent's name
 * checked as `grpc.ssl_target_name_override` asks), and a ticket is only accepted by the TLS
 * server that issued it, under the key only it holds, so a resumed session proves the peer is
 * the agent verified then. A session is offered only to the same name and address, for at most
 * SESSION_MAX_AGE_MS, and dropped when a connection with it fails.
 *
 * The connector implements grpc-js's `ChannelCredentials._createSecureConnector` (abstract in
 * its public typings), doing what its SSL connector does plus the session.
 */
import tls from 'node:tls';
import { isIP, type Socket } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { tlsFileBytes, type TlsFiles } from '@boxback/common/rpc';

/** A session older than this is not offered (agents' TLS servers keep tickets for 300 s by default). */
export const SESSION_MAX_AGE_MS = 10 * 60_000;
/** Sessions kept at most (one per host; ~2 KB each with the agent's certificate). */
const MAX_SESSIONS = 10_000;

interface Kept {
  session: Buffer;
  atMs: number;
}

/** The newest TLS session per host, and how many connections resumed one (tests and the bench read them). */
export class TlsSessions {
  private readonly byHost = new Map<string, Kept>();
  readonly counts = { full: 0, resumed: 0 };

  get(key: string, now = Date.now()): Buffer | undefined {
    const k = this.byHost.get(key);
    if (!k) return undefined;
    if (now - k.atMs > SESSION_MAX_AGE_MS) {
      this.byHost.delete(key);
      return undefined;
    }
    return k.session;
  }

  set(key: string, session: Buffer): void {
    this.byHost.delete(key);
    this.byHost.set(key, { session, atMs: Date.now() });
    if (this.byHost.size > MAX_SESSIONS) this.byHost.delete(this.byHost.keys().next().value as string);
  }

  forget(key: string): void {
    this.byHost.delete(key);
  }

  get size(): number {
    return this.byHost.size;
  }
}

type GrpcUri = Parameters<grpc.ChannelCredentials['_createSecureConnector']>[0];
type SecureConnector = ReturnType<grpc.ChannelCredentials['_createSecureConnector']>;

/** "host" of a grpc target's path "host:port", "[v6]:port" or "host". */
function hostOf(path: string): string {
  const v6 = /^\[([^\]]+)\]/.exec(path);
  if (v6) return v6[1];
  const colon = path.lastIndexOf(':');
  return colon > 0 && path.indexOf(':') === colon ? path.slice(0, colon) : path;
}

class ResumingCredentials extends grpc.ChannelCredentials {
  constructor(
    private readonly context: tls.SecureContext,
    private readonly sessions: TlsSessions,
  ) {
    super();
  }

  _isSecure(): boolean {
    return true;
  }

  _equals(other: grpc.ChannelCredentials): boolean {
    return other === this;
  }

  _createSecureConnector(target: GrpcUri, options: grpc.ChannelOptions, callCredentials?: grpc.CallCredentials): SecureConnector {
    const host = hostOf(target.path);
    const name = typeof options['grpc.ssl_target_name_override'] === 'string' ? options['grpc.ssl_target_name_override'] : host;
    const key = `${name}\u0000${target.path}`;
    const { context, sessions } = this;
    const calls = callCredentials ?? grpc.CallCredentials.createEmpty();
    return {
      connect(socket: Socket) {
        return new Promise((resolve, reject) => {
          const session = sessions.get(key);
          const s = tls.connect(
            {
              socket,
              secureContext: context,
              host,
              ...(isIP(name) ? {} : { servername: name }), // SNI carries names only (RFC 6066)
              ALPNProtocols: ['h2'],
              checkServerIdentity: (_host, cert) => tls.checkServerIdentity(name, cert),
              ...(session ? { session } : {}),
            },
            () => {
              if (!s.authorized) {
                sessions.forget(key);
                reject(s.authorizationError);
                return;
              }
              if (s.isSessionReused()) sessions.counts.resumed++;
              else sessions.counts.full++;
              resolve({ socket: s, secure: true });
            },
          );
          s.on('session', (next: Buffer) => sessions.set(key, next));
          s.on('error', (err) => {
            sessions.forget(key);
            reject(err);
          });
        });
      },
      waitForReady: () => Promise.resolve(),
      getCallCredentials: () => calls,
      destroy: () => undefined,
    };
  }
}

/** Mutual-TLS channel credentials (controller -> agent) that resume each host's last TLS session. */
export function resumingClientCredentials(files: TlsFiles, sessions: TlsSessions): grpc.ChannelCredentials {
  const context = tls.createSecureContext(tlsFileBytes(files));
  return new ResumingCredentials(context, sessions);
}
