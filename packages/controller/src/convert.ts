/**
 * Catalog rows -> ControllerService messages (camelCase, as @grpc/proto-loader sends them).
 */
import type { Progress } from '@boxback/common';
import type { BackupRow, HostRow, JobRow } from './catalog/types.js';

export function hostMsg(h: HostRow) {
  return {
    name: h.name,
    address: h.address,
    group: h.group,
    planName: h.planName,
    agentVersion: h.agentVersion,
    lastSeenMs: h.lastSeenMs,
    rpoSeconds: h.rpoSeconds,
    product: h.product,
    productVersion: h.productVersion,
  };
}

export function backupMsg(b: BackupRow, withManifest = false) {
  return {
    id: b.id,
    host: b.host,
    createdAtMs: b.createdAtMs,
    sizeBytes: b.sizeBytes,
    consistency: b.consistency,
    status: b.status,
    restorable: b.restorable,
    verifiedAtMs: b.verifiedAtMs,
    path: b.path,
    productVersion: b.productVersion,
    jobId: b.jobId,
    origin: b.origin,
    manifestJson: withManifest ? b.manifestJson : '',
    quiesceWindowMs: b.quiesceWindowMs,
    fileCount: b.fileCount,
    initiatedVia: b.initiatedVia,
    drillPassedAtMs: b.drillPassedAtMs,
    drillDurationMs: b.drillDurationMs,
    drillResult: b.drillResult,
    drillAtMs: b.drillAtMs,
    damaged: b.status === 'Completed' && b.verifyFailed,
    damage: b.verifyFailed ? b.errorMessage : '',
    label: b.label ?? '',
    pinned: Boolean(b.pinned),
  };
}

function parseProgress(json: string): Progress | null {
  if (!json) return null;
  try {
    return JSON.parse(json) as Progress;
  } catch {
    return null;
  }
}

export function jobMsg(j: JobRow, live?: Progress) {
  return {
    id: j.id,
    kind: j.kind,
    host: j.host,
    state: j.state,
    phase: live?.phase ?? j.phase,
    progress: live ?? parseProgress(j.progressJson),
    requestedBy: j.requestedBy,
    createdAtMs: j.createdAtMs,
    startedAtMs: j.startedAtMs,
    endedAtMs: j.endedAtMs,
    errorCode: j.errorCode,
    errorMessage: j.errorMessage,
    backupId: j.backupId,
    warningCount: j.warningCount,
    dryRunReport: j.dryRunReport,
  };
}
