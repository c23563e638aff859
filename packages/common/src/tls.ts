/**
 * gRPC credentials. Controller <-> agent is mutual TLS: both sides present a certificate
 * signed by the fleet CA and refuse anything else. CLI -> controller is TLS with the
 * controller's certificate checked against the CA, plus a bearer token.
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { BoxbackError } from './errors.js';

export interface TlsFiles {
  /** CA certificate (PEM) that signed every certificate of the fleet. */
  ca: string;
  /** This side's certificate (PEM). */
  cert: string;
  /** This side's private key (PEM). */
  key: string;
}

function read(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    throw new BoxbackError(
      'BOXBACK_ERR_CERTS',
      `cannot read the ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}. Run \`boxback certs init\` / \`boxback certs issue\`.`,
    );
  }
}

/** The CA certificate, certificate and key of `tls` as bytes (a clear BOXBACK_ERR_CERTS when one cannot be read). */
export function tlsFileBytes(tls: TlsFiles): { ca: Buffer; cert: Buffer; key: Buffer } {
  return { ca: read(tls.ca, 'CA certificate'), cert: read(tls.cert, 'certificate'), key: read(tls.key, 'private key') };
}

/** Server credentials. `requireClientCert` makes it mutual TLS (the agent always does). */
export function serverCredentials(tls: TlsFiles, requireClientCert: boolean): grpc.ServerCredentials {
  return grpc.ServerCredentials.createSsl(
    read(tls.ca, 'CA certificate'),
    [{ cert_chain: read(tls.cert, 'certificate'), private_key: read(tls.key, 'private key') }],
    requireClientCert,
  );
}

/** Client credentials presenting our certificate (controller -> agent). */
export function mutualClientCredentials(tls: TlsFiles): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(read(tls.ca, 'CA certificate'), read(tls.key, 'private key'), read(tls.cert, 'certificate'));
}

/** Client credentials that only check the server (CLI -> controller), plus an optional bearer token. */
export function tokenClientCredentials(caFile: string, token?: string): grpc.ChannelCredentials {
  const ssl = grpc.credentials.createSsl(read(caFile, 'CA certificate'));
  if (!token) return ssl;
  const call = grpc.credentials.createFromMetadataGenerator((_params, cb) => {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);
    cb(null, md);
  });
  return grpc.credentials.combineChannelCredentials(ssl, call);
}

/**
 * Channel options: certificates are issued for a host *name*; agents are often dialled by
 * IP or loopback, so the name to check is given explicitly.
 */
export function channelOptions(expectedName: string): grpc.ChannelOptions {
  return {
    'grpc.ssl_target_name_override': expectedName,
    'grpc.default_authority': expectedName,
    'grpc.keepalive_time_ms': 30_000,
    'grpc.max_receive_message_length': 256 * 1024 * 1024,
    'grpc.max_send_message_length': 256 * 1024 * 1024,
  };
}
