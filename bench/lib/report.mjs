// The bench's text report: one row per figure against its peer and target, the RSS lines, the
// deployed incremental's phases and the fixed costs inside them, then the notes.
const fmt = (k, v) =>
  v === undefined
    ? '-'
    : k.endsWith('_bytes')
      ? `${(v / 1048576).toFixed(1)} MiB`
      : k.endsWith('_mb')
        ? `${v.toFixed(1)} MB`
        : k.endsWith('_ratio')
          ? `${v.toFixed(2)}x`
          : k.endsWith('_s')
            ? `${v.toFixed(2)} s`
            : String(v);

const ROWS = [
  ['full backup (daemon)', 'full_s', 'plain_full_s', 'full_ratio', 'zip -r -1 + rsync -a + sync', '<= 1.25x'],
  ['full vs restic', 'full_s', 'restic_full_s', 'full_vs_restic_ratio', 'restic backup', '<= 1.0x'],
  [
    'incremental as deployed',
    'deployed_incremental_s',
    'restic_incremental_s',
    'deployed_incremental_vs_restic_ratio',
    'restic backup',
    '<= 0.5x (goal 0.3x)',
  ],
  [
    '  first round, vs rsync',
    'deployed_incremental_first_s',
    'rsync_linkdest_s',
    'deployed_incremental_vs_rsync_ratio',
    'rsync -a --link-dest + sync',
    '',
  ],
  [
    'incremental, fallback full pass',
    'fallback_incremental_s',
    'restic_incremental_first_s',
    'fallback_incremental_vs_restic_ratio',
    'restic backup (no journal: restart, first backup)',
    '',
  ],
  ['  same, vs rsync', 'fallback_incremental_s', 'rsync_linkdest_s', 'fallback_incremental_ratio', 'rsync -a --link-dest + sync', ''],
  ['restore (data path)', 'restore_s', 'restore_plain_s', 'restore_vs_plain_ratio', 'unzip + rsync -a + sync', '<= 1.25x'],
  ['restore vs restic', 'restore_s', 'restic_restore_s', 'restore_vs_restic_ratio', 'restic restore + sync', '<= 1.0x'],
  ['quiesce window: our part', 'window_own_s', 'cp_datasets_s', 'window_own_vs_cp_ratio', 'cp -a datasets', '<= 1.5x'],
  ['  whole window (stop..started)', 'window_s', 'cp_datasets_s', 'window_ratio', 'cp -a datasets', ''],
  ['  consistent copy inside it', 'window_copy_s', 'cp_datasets_s', 'window_copy_ratio', 'cp -a datasets', ''],
  ['S3 store: full', 's3_full_s', 'restic_s3_full_s', 's3_full_vs_restic_ratio', 'restic backup to the same radosgw', '<= 1.0x'],
  [
    'S3 store: incremental',
    's3_incremental_s',
    'restic_s3_incremental_s',
    's3_incremental_vs_restic_ratio',
    'restic backup to the same radosgw',
    '<= 0.5x',
  ],
  [
    'S3 store: restore (data path)',
    's3_restore_s',
    'restic_s3_restore_s',
    's3_restore_vs_restic_ratio',
    'restic restore from it',
    '<= 1.0x',
  ],
  ['S3 store: bytes stored', 's3_stored_bytes', 'restic_s3_stored_bytes', 's3_stored_bytes_vs_restic_ratio', "restic's bucket", '<= 1.0x'],
  [
    'journaled tree sync (0.1% changed)',
    'journal_incremental_s',
    'journal_full_rsync_s',
    'journal_vs_rsync_ratio',
    'rsync -a --link-dest',
    '<= 0.2x',
  ],
];

export function printTable(out, notes) {
  const lines = [
    `boxback bench: size ${out.size}, seed ${out.seed}, ${out.cpus} CPUs, node ${out.node}; box ${fmt('x_bytes', out.box_bytes)} (generated in ${out.generate_s.toFixed(1)} s)`,
    '',
    `${'figure'.padEnd(36)}${'boxback'.padStart(11)}${'peer'.padStart(11)}${'ratio'.padStart(9)}  peer / target`,
  ];
  for (const [label, a, b, r, peer, target] of ROWS) {
    if (out[a] === undefined || out[b] === undefined) continue;
    lines.push(
      `${label.padEnd(36)}${fmt(a, out[a]).padStart(11)}${fmt(b, out[b]).padStart(11)}${fmt(r, out[r]).padStart(9)}  ${peer}${target ? ` / ${target}` : ''}`,
    );
  }
  if (out.deployed_incremental_rounds)
    lines.push(
      '',
      `incremental as deployed, each round (a CI day each; the row above is their median): ${out.deployed_incremental_rounds
        .map((r) => `day ${r.day} ${fmt('_s', r.deployed_s)} / ${fmt('_s', r.restic_s)} = ${fmt('_ratio', r.ratio)}`)
        .join('; ')}`,
    );
  lines.push(
    '',
    `window: services' own stop ${fmt('_s', out.window_service_stop_s)} + start ${fmt('_s', out.window_service_start_s)}; ours ${fmt('_s', out.window_own_s)} (copy ${fmt('_s', out.window_copy_s)})`,
    `agent peak RSS (target <= 150 MB): backups ${fmt('x_bytes', out.agent_backup_peak_rss_bytes)}, restore ${fmt('x_bytes', out.agent_restore_peak_rss_bytes)}, fallback process ${fmt('x_bytes', out.fallback_peak_rss_bytes)}`,
  );
  if (out.agent_daemon_steady_rss_mb !== undefined)
    lines.push(
      `agent daemon watching ${out.agent_daemon_watch_files} files: steady ${fmt('_mb', out.agent_daemon_steady_rss_mb)} (target <= 150 MB), first-scan peak ${fmt('_mb', out.agent_daemon_first_scan_peak_rss_mb)}, baseline ${fmt('_mb', out.agent_daemon_baseline_rss_mb)}, watching after ${fmt('_s', out.agent_daemon_watcher_start_s)}`,
    );
  if (out.s3_agent_peak_rss_mb !== undefined)
    lines.push(
      `agent peak RSS with the S3 store (target <= 150 MB): backups ${fmt('_mb', out.s3_agent_backup_peak_rss_mb)}, restore ${fmt('_mb', out.s3_agent_restore_peak_rss_mb)}`,
    );
  lines.push(
    `full backup on disk: ${fmt('x_bytes', out.full_backup_bytes)}; deployed incremental adds ${fmt('x_bytes', out.deployed_incremental_unique_bytes)} (${out.deployed_incremental_linked_files} tree files hard-linked, ${out.deployed_incremental_journaled_trees} trees from the journal)`,
    '',
    'deployed incremental, phases and the fixed costs inside them (s):',
  );
  for (const [k, v] of Object.entries(out)) {
    const m = /^deployed_incremental_(phase|step)_(.*?)(_s)?$/.exec(k);
    if (m)
      lines.push(
        `  ${m[1] === 'step' ? '  ' : ''}${m[2].padEnd(m[1] === 'step' ? 34 : 36)}${(m[3] ? v.toFixed(3) : String(v)).padStart(9)}`,
      );
  }
  lines.push('', ...notes);
  process.stdout.write(`${lines.join('\n')}\n`);
}
