// npm run torture -- --seed N --minutes M [--path native|js|both]: the torture test (test/torture) seed after seed,
// M minutes per data path, then one table of what it did. A failure prints its seed and op log, and exits 1.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, Option } from 'commander';

const program = new Command('torture')
  .option('--seed <n>', 'first seed (then n+1, n+2, ...)', '1')
  .option('--minutes <m>', 'minutes per data path', '15')
  .addOption(new Option('--path <path>', 'data path(s)').choices(['native', 'js', 'both']).default('both'))
  .parse();
const { seed, minutes, path } = program.opts();
if (!/^\d+$/.test(seed) || !(Number(minutes) > 0)) {
  console.error('torture: --seed takes a whole number and --minutes a positive number');
  process.exit(2);
}

const paths = path === 'both' ? ['native', 'js'] : [path];
const rows = [];
let failed = false;
for (const p of paths) {
  const report = join(tmpdir(), `ferry-torture-report-${process.pid}-${p}.json`);
  const env = { ...process.env, FERRY_NATIVE: p === 'js' ? '0' : '1', FERRY_TORTURE_SEED: seed, FERRY_TORTURE_MINUTES: minutes, FERRY_TORTURE_REPORT: report };
  const run = spawnSync('npx', ['vitest', 'run', 'test/torture/torture.test.ts'], { env, stdio: 'inherit' });
  if (run.status !== 0) failed = true;
  const runs = existsSync(report) ? JSON.parse(readFileSync(report, 'utf8')) : [];
  rmSync(report, { force: true });
  const sum = (key) => runs.reduce((n, r) => n + r[key], 0);
  rows.push({ path: p, seeds: runs.map((r) => r.seed).join(',').replace(/^(\d+),.*,(\d+)$/, '$1-$2'), rounds: sum('rounds'), 'writer ops': sum('writerOps'), migrations: sum('migrations'), completed: sum('completed'), failed: sum('failed'), refused: sum('refused'), cancels: sum('cancels'), 'rate changes': sum('rateChanges'), kills: sum('kills'), 'in abort': sum('killsInAbort'), 'abort cut': sum('abortsCut'), 'in cleanup': sum('killsInCleanup'), resumes: sum('resumes'), 'cancelled after kill': sum('cancelledAfterKill'), 'written behind': sum('writtenBehind'), 'late opens': sum('lateOpens'), ENOSPC: sum('enospc'), EROFS: sum('erofs'), immutable: sum('immutable'), EIO: sum('eio'), 'failed by fault': sum('failedByFault'), 'inode reuses': sum('inodeReuses'), 'readlink fails': sum('readlinkFails'), result: run.status === 0 ? 'pass' : 'FAIL' });
}
console.table(rows);
process.exit(failed ? 1 : 0);
