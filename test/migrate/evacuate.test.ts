import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { forceUnmount, listTree, mountFerry, mountsUnder, type TestMount } from '../helpers/mounts.js';
import { waitFor } from '../helpers/migration.js';
import { evacuate, mostAtOnce } from '../helpers/evacuation.js';
import { startWriter } from '../helpers/writer.js';
import { CLI, hasExited, run } from '../helpers/cli.js';

// Issue 30: `ferry evacuate` moves every VM home under a directory, a few at a time, each an ordinary migration.
const MiB = 1 << 20;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

let mount: TestMount | undefined;
/** Filesystems a test mounted: unmounted once the ferry mount is gone. */
const mounted: string[] = [];

afterEach(async () => {
  const m = mount;
  mount = undefined;
  if (m) {
    await m.cli(['unmount', m.mountpoint, '--force']).catch(() => undefined);
    if ((await mountsUnder(m.mountpoint)).length > 0) await forceUnmount(m.mountpoint);
  }
  for (const path of mounted.splice(0).reverse()) {
    if ((await run('umount', [path])).code !== 0) await run('umount', ['-l', path]);
  }
  await m?.stop();
});

async function tmpfs(dir: string, size: string): Promise<void> {
  await fsp.mkdir(dir, { recursive: true });
  const r = await run('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  if (r.code !== 0) throw new Error(`mount tmpfs ${dir}: ${r.stderr}`);
  mounted.push(dir);
}

/** Homes written into the datastore before anything moves: name → file → bytes. */
type Homes = Record<string, Record<string, Buffer>>;

async function makeHomes(m: TestMount, homes: Homes): Promise<void> {
  for (const [home, files] of Object.entries(homes)) {
    await fsp.mkdir(join(m.datastore, home));
    for (const [name, bytes] of Object.entries(files)) await fsp.writeFile(join(m.datastore, home, name), bytes);
  }
}

async function expectFiles(dir: string, files: Record<string, Buffer>, what: string): Promise<void> {
  expect((await fsp.readdir(dir)).sort(), what).toEqual(Object.keys(files).sort());
  for (const [name, bytes] of Object.entries(files)) expect(sha(await fsp.readFile(join(dir, name))), `${what}: ${name}`).toBe(sha(bytes));
}

const home = (events: Record<string, any>[], name: string, type: string) => events.filter((e) => e.home === name && e.type === type);

/**
 * Four homes evacuated two at a time at 8M shared; the daemon is killed (kill -9) once vm-1 has moved and vm-2 has
 * copied for over 2 s (so it has checkpointed), then the mount is cleared and made again.
 */
async function evacuationCrashed(): Promise<{ m: TestMount; homes: Homes; dest: string }> {
    const m = (mount = await mountFerry());
    const homes: Homes = {
      'vm-1': { 'disk.img': randomBytes(4 * MiB) },
      'vm-2': { 'disk.img': randomBytes(24 * MiB), 'vm.cfg': Buffer.from('2\n') },
      'vm-3': { 'disk.img': randomBytes(24 * MiB) },
      'vm-4': { 'disk.img': randomBytes(4 * MiB) },
    };
    await makeHomes(m, homes);
    const dest = join(m.root, 'dest');
    await fsp.mkdir(dest);
    const { pid } = await m.status();
    const events: Record<string, any>[] = [];
    const running = evacuate(m, m.mountpoint, dest, ['--parallel', '2', '--rate-limit', '8M'], (e) => events.push(e));
    // vm-1 moved, vm-2 and vm-3 copying for over 2 s (a checkpoint each), vm-4 pending.
    await waitFor(() => events.some((e) => e.home === 'vm-1' && e.type === 'finished'), 60_000, 'vm-1 moved');
    await waitFor(() => events.some((e) => e.home === 'vm-2' && e.type === 'progress' && e.copiedBytes > 12 * MiB), 60_000, 'vm-2 half copied');
    process.kill(pid, 'SIGKILL');
    const first = await running.done;
    expect(first.code).toBe(1);
    expect(first.stderr).toMatch(/closed the connection|cannot reach the daemon/);
    expect(home(first.events, 'vm-1', 'finished')).toEqual([expect.objectContaining({ state: 'moved' })]);
    await waitFor(() => hasExited(pid), 10_000, 'the daemon to die');
    expect((await m.cli(['unmount', m.mountpoint, '--force'])).code).toBe(0);
    const again = await m.remount();
    expect(again.code, again.stderr).toBe(0);
    // Said at the mount (a boot, a restart by systemd): the evacuation, not its homes one by one, is what to resume.
    const esc = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const mnt = esc(m.mountpoint);
    expect(again.stderr).toMatch(new RegExp(`^ferry: warning: the evacuation of ${mnt} to ${esc(dest)} was interrupted by a crash: continue it with \`ferry evacuate ${mnt} --resume\`, or \`ferry cancel ${mnt}\`$`, 'm'));
    expect(again.stderr).not.toContain('ferry migrate');
    return { m, homes, dest };
}

describe('ferry evacuate', () => {
  it('five homes, --parallel 2, one shared budget: the hard-linked home is refused, four move byte-exact, never more than two at once', async () => {
    const m = (mount = await mountFerry());
    const homes: Homes = {
      'vm-a': { 'disk.img': randomBytes(24 * MiB), 'vm.cfg': Buffer.from('a\n') },
      'vm-b': { 'disk.img': randomBytes(24 * MiB), 'vm.cfg': Buffer.from('b\n') },
      'vm-big': { 'disk.img': randomBytes(64 * MiB) },
      'vm-c': { 'disk.img': randomBytes(8 * MiB) },
      'vm-link': { 'disk.img': randomBytes(4 * MiB) },
    };
    await makeHomes(m, homes);
    await fsp.link(join(m.datastore, 'vm-link/disk.img'), join(m.datastore, 'shared.img'));
    const dest = join(m.root, 'dest');
    await fsp.mkdir(dest);
    const writers = await Promise.all(
      ['vm-a', 'vm-b'].map((name, i) => startWriter({ file: join(m.mountpoint, name, 'disk.img'), modelOut: join(m.root, `model-${name}`), seed: 30 + i, maxWrite: 64 * 1024, bytesPerSec: 2 * MiB, fsyncEvery: 20 })),
    );
    const rate = 32 * MiB;
    const run = await evacuate(m, m.mountpoint, dest, ['--parallel', '2', '--rate-limit', '32M', '--mode', 'iterative']).done;
    await new Promise((r) => setTimeout(r, 300));
    const reports = await Promise.all(writers.map((w) => w.stop()));
    expect(run.stderr, await m.evidence()).toBe('');
    expect(run.code).toBe(0);

    const planned = run.events.find((e) => e.type === 'planned')!;
    expect(planned.homes.map((h: { name: string }) => h.name)).toEqual(['vm-a', 'vm-b', 'vm-big', 'vm-c']);
    expect(planned.refused).toEqual([{ name: 'vm-link', virtual: '/vm-link', reason: expect.stringContaining('hard links') }]);
    expect(run.totals).toMatchObject({ state: 'done', moved: 4, failed: 0, cancelled: 0, refused: 1, left: 0 });
    expect(mostAtOnce(run.events)).toBe(2);
    // Each move is an ordinary migration: its own events, tagged with its home, through the commit.
    for (const name of ['vm-a', 'vm-b', 'vm-big', 'vm-c']) {
      expect(home(run.events, name, 'finished')).toEqual([expect.objectContaining({ state: 'moved' })]);
      expect(home(run.events, name, 'phase').map((e) => e.phase)).toContain('committed');
    }

    // The shared budget: the moves' copy passes together run at the limit (not twice it), from the first bulk copy's
    // start to the last pass's end (the switchovers' copies, with I/O frozen, are not paced).
    const passes = run.events.filter((e) => e.type === 'pass');
    const copied = passes.reduce((sum, e) => sum + e.copiedBytes, 0);
    const from = Math.min(...run.events.filter((e) => e.type === 'phase' && e.phase === 'bulk').map((e) => e.at));
    const aggregate = copied / ((Math.max(...passes.map((e) => e.at)) - from) / 1000);
    expect(aggregate, `${copied} bytes`).toBeGreaterThan(rate * 0.8);
    expect(aggregate, `${copied} bytes`).toBeLessThan(rate * 1.2);

    for (const report of reports) expect(report.errors).toEqual([]);
    for (const name of ['vm-a', 'vm-b']) {
      const model = await fsp.readFile(join(m.root, `model-${name}`));
      await expectFiles(join(dest, name), { ...homes[name], 'disk.img': model }, name);
      expect(sha(await fsp.readFile(join(m.mountpoint, name, 'disk.img')))).toBe(sha(model));
    }
    for (const name of ['vm-big', 'vm-c']) await expectFiles(join(dest, name), homes[name], name);
    expect((await fsp.readdir(dest)).sort()).toEqual(['vm-a', 'vm-b', 'vm-big', 'vm-c']);
    // Sources gone, the refused home where it was.
    expect((await fsp.readdir(m.datastore)).filter((n) => n !== '.ferry').sort()).toEqual(['shared.img', 'vm-link']);
    await expectFiles(join(m.datastore, 'vm-link'), homes['vm-link'], 'vm-link stays');
  });

  it('--dry-run prints the plan (sizes, refusals, free space) and changes nothing', async () => {
    const m = (mount = await mountFerry());
    const homes: Homes = { 'vm-1': { 'disk.img': randomBytes(4 * MiB) }, 'vm-2': { 'disk.img': randomBytes(2 * MiB) }, 'skip-me': { f: Buffer.from('x') } };
    await makeHomes(m, homes);
    const dest = join(m.root, 'dest');
    await fsp.mkdir(join(dest, 'vm-2'), { recursive: true });
    const before = await listTree(m.datastore);
    const r = await m.cli(['evacuate', m.mountpoint, '--to', dest, '--dry-run', '--json', '--exclude', 'skip-*', '--order', 'smallest']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const plan = JSON.parse(r.stdout);
    // Allocated bytes: its data and its directory's block.
    expect(plan.homes).toEqual([expect.objectContaining({ name: 'vm-1', virtual: '/vm-1', dest: join(dest, 'vm-1'), bytes: 4 * MiB + 4096 })]);
    expect(plan.refused).toEqual([{ name: 'vm-2', virtual: '/vm-2', reason: `destination ${join(dest, 'vm-2')} already exists: give a new name, or a directory to move into` }]);
    expect(plan.excluded).toEqual(['skip-me']);
    expect(plan.freeBytes).toBeGreaterThan(plan.neededBytes);
    expect(plan.neededBytes).toBeGreaterThan(4 * MiB);
    const text = await m.cli(['evacuate', join(m.mountpoint), '--to', dest, '--dry-run']);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain('move    vm-1 (4.00 MiB)');
    expect(text.stdout).toContain('dry run: nothing moved');
    expect(await listTree(m.datastore)).toEqual(before);
    expect(await listTree(dest)).toEqual(['vm-2']);
    expect((await m.status()).migrations).toEqual([]);
  });

  it('refuses bad input with one line on stderr and exit 2, nothing changed', async () => {
    const m = (mount = await mountFerry());
    await makeHomes(m, { 'vm-1': { 'disk.img': randomBytes(MiB) }, 'vm-2': { 'disk.img': randomBytes(MiB) } });
    const dest = join(m.root, 'dest');
    await fsp.mkdir(dest);
    const small = join(m.root, 'small');
    await tmpfs(small, '20m');
    const before = await listTree(m.datastore);
    const cases: [string[], RegExp][] = [
      [[join(m.mountpoint, 'nope'), '--to', dest], /^ferry: no such directory in the mount: \/nope\n$/],
      [[m.mountpoint, '--to', join(m.mountpoint, 'vm-1')], /^ferry: destination .*\/mnt\/vm-1 is inside the ferry mount .*: give a directory outside it\n$/],
      [[m.mountpoint, '--to', dest, '--parallel', '0'], /^ferry: --parallel must be a whole number >= 1 \(got 0\)\n$/],
      [[m.mountpoint, '--to', dest, '--exclude', 'vm-*'], /^ferry: nothing to evacuate in \/: --exclude left out every home\n$/],
      [[m.mountpoint, '--to', join(m.root, 'missing')], /^ferry: destination .*\/missing is not an existing directory: create it first\n$/],
      [[m.mountpoint, '--to', small], /^ferry: not enough space at .*\/small: 20\.0 MiB free, the 2 homes need 34\.0 MiB \(data plus margin\), 14\.0 MiB missing: .*--fit.*\n$/],
    ];
    for (const [args, line] of cases) {
      const r = await m.cli(['evacuate', ...args]);
      expect(r.stderr, args.join(' ')).toMatch(line);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stdout).toBe('');
    }
    // --fit moves what fits (largest first) and lists what stays: here, one 1 MiB home plus its margin.
    const fit = await m.cli(['evacuate', m.mountpoint, '--to', small, '--fit', '--dry-run', '--json']);
    expect(fit.code).toBe(0);
    const plan = JSON.parse(fit.stdout);
    expect(plan.homes.map((h: { name: string }) => h.name)).toEqual(['vm-1']);
    expect(plan.left.map((h: { name: string }) => h.name)).toEqual(['vm-2']);
    expect(await listTree(m.datastore)).toEqual(before);
    expect(await listTree(dest)).toEqual([]);
    expect((await m.status()).migrations).toEqual([]);
  });

  it('a destination that fills up mid-way aborts the move that no longer fits (source intact); the others stay moved', async () => {
    const m = (mount = await mountFerry());
    const homes: Homes = { 'vm-1': { 'disk.img': randomBytes(8 * MiB) }, 'vm-2': { 'disk.img': randomBytes(8 * MiB) }, 'vm-3': { 'disk.img': randomBytes(40 * MiB) } };
    await makeHomes(m, homes);
    const dest = join(m.root, 'dest');
    await tmpfs(dest, '160m');
    await fsp.mkdir(join(dest, 'vms'));
    // Once vm-3's own preflight has passed, something else takes the room it was counted on.
    let filled = false;
    const r = await evacuate(m, m.mountpoint, join(dest, 'vms'), ['--parallel', '1', '--rate-limit', '20M', '--order', 'name'], (e) => {
      if (e.home === 'vm-3' && e.type === 'plan' && !filled) {
        filled = true;
        fs.writeFileSync(join(dest, 'filler'), Buffer.alloc(120 * MiB, 1));
      }
    }).done;
    expect(filled).toBe(true);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^ferry: evacuation of \/ incomplete: 2 moved, 1 failed, 0 cancelled, 0 refused, 0 did not fit; .*; the VMs not moved run on the source\n$/);
    expect(r.totals).toMatchObject({ state: 'done', moved: 2, failed: 1 });
    expect(home(r.events, 'vm-3', 'finished')).toEqual([expect.objectContaining({ state: 'failed', reason: expect.stringContaining('the destination ran out of space') })]);
    await expectFiles(join(dest, 'vms/vm-1'), homes['vm-1'], 'vm-1 moved');
    await expectFiles(join(dest, 'vms/vm-2'), homes['vm-2'], 'vm-2 moved');
    expect(await fsp.readdir(join(dest, 'vms'))).toEqual(['vm-1', 'vm-2']);
    await expectFiles(join(m.mountpoint, 'vm-3'), homes['vm-3'], 'vm-3 served from its source');
    await expectFiles(join(m.datastore, 'vm-3'), homes['vm-3'], 'vm-3 source intact');
    expect((await fsp.readdir(m.datastore)).filter((n) => n !== '.ferry')).toEqual(['vm-3']);
  });

  it('ferry cancel <dir> cancels the evacuation: the running move aborts (source intact), the pending one never starts, the moved one stays', async () => {
    const m = (mount = await mountFerry());
    const homes: Homes = { 'vm-1': { 'disk.img': randomBytes(4 * MiB) }, 'vm-2': { 'disk.img': randomBytes(32 * MiB) }, 'vm-3': { 'disk.img': randomBytes(4 * MiB) } };
    await makeHomes(m, homes);
    const dest = join(m.root, 'dest');
    await fsp.mkdir(dest);
    const events: Record<string, any>[] = [];
    const running = evacuate(m, m.mountpoint, dest, ['--parallel', '1', '--rate-limit', '8M'], (e) => events.push(e));
    await waitFor(() => events.some((e) => e.home === 'vm-2' && e.type === 'progress' && e.copiedBytes > 0), 60_000, 'vm-2 copying');
    // One evacuation of a directory at a time (of one inside it too).
    await fsp.mkdir(join(m.root, 'dest2'));
    const second = await m.cli(['evacuate', join(m.mountpoint, 'vm-3'), '--to', join(m.root, 'dest2')]);
    expect(second.stderr).toBe('ferry: /vm-3 overlaps the running evacuation of / (ferry cancel / stops it)\n');
    expect(second.code).toBe(2);
    const cancel = await m.cli(['cancel', m.mountpoint]);
    expect(cancel.stderr).toBe('');
    expect(cancel.code).toBe(0);
    expect(cancel.stdout).toBe('cancelled the evacuation of /: 1 moved (they stay moved), 2 cancelled and 0 failed (those run on the source)\n');
    const r = await running.done;
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^ferry: evacuation of \/ cancelled: 1 moved, 0 failed, 2 cancelled/);
    expect(home(r.events, 'vm-3', 'started')).toEqual([]);
    await expectFiles(join(dest, 'vm-1'), homes['vm-1'], 'vm-1 moved');
    expect(await fsp.readdir(dest)).toEqual(['vm-1']);
    for (const name of ['vm-2', 'vm-3']) await expectFiles(join(m.datastore, name), homes[name], `${name} source intact`);
    const status = await m.status();
    expect(status.evacuations).toEqual([expect.objectContaining({ state: 'cancelled', homes: [expect.objectContaining({ name: 'vm-1', state: 'moved' }), expect.objectContaining({ name: 'vm-2', state: 'cancelled' }), expect.objectContaining({ name: 'vm-3', state: 'cancelled' })] })]);
  });

  it('kill -9 of the daemon mid-evacuation: the remount lists it interrupted with its homes; --resume ends with every home moved, byte-exact', async () => {
    const { m, homes, dest } = await evacuationCrashed();
    const text = await m.cli(['status', m.mountpoint]);
    expect(text.code).toBe(4);
    expect(text.stdout).toMatch(/evacuation \w+: \/ → .*\/dest \(INTERRUPTED by a crash: `ferry evacuate --resume` continues it/);
    expect(text.stdout).toMatch(/\n {4}vm-1 +moved /);
    expect(text.stdout).toMatch(/\n {4}vm-4 +pending /);
    const status = await m.status();
    expect(status.evacuations).toEqual([expect.objectContaining({ state: 'interrupted', parallel: 2, rateLimit: 8 * MiB })]);
    const states = Object.fromEntries(status.evacuations[0].homes.map((h: { name: string; state: string }) => [h.name, h.state]));
    expect(states['vm-1']).toBe('moved');
    expect(states['vm-4']).toBe('pending');
    // vm-2 had checkpointed (every 2 s): it waits for --resume. vm-3 as well, or, had it not, it was undone and
    // starts again.
    expect(states['vm-2']).toBe('interrupted');
    expect(['interrupted', 'pending']).toContain(states['vm-3']);
    expect(status.migrations).toEqual(expect.arrayContaining([expect.objectContaining({ path: '/vm-2', interrupted: true })]));
    for (const name of ['vm-2', 'vm-3', 'vm-4']) await expectFiles(join(m.mountpoint, name), homes[name], `${name} served from its source`);

    const resumed = await m.cli(['evacuate', m.mountpoint, '--resume', '--rate-limit', '0', '--json']);
    expect(resumed.stderr).toBe('');
    expect(resumed.code).toBe(0);
    const totals = resumed.stdout.trim().split('\n').map((l) => JSON.parse(l)).find((e) => e.type === 'done' && e.home === undefined);
    expect(totals).toMatchObject({ state: 'done', moved: 4, failed: 0, cancelled: 0 });
    for (const name of Object.keys(homes)) {
      await expectFiles(join(dest, name), homes[name], `${name} at the destination`);
      await expectFiles(join(m.mountpoint, name), homes[name], `${name} served`);
    }
    expect((await fsp.readdir(m.datastore)).filter((n) => n !== '.ferry')).toEqual([]);
    const after = await m.status();
    expect(after.evacuations).toEqual([expect.objectContaining({ state: 'done' })]);
    // Nothing of it is left in the state dir: a remount finds no evacuation.
    expect((await m.cli(['unmount', m.mountpoint])).code).toBe(0);
    expect((await m.remount()).code).toBe(0);
    expect((await m.status()).evacuations).toEqual([]);
  });

  it('on a TTY: one line per home (state, bytes, pass, rate, time left) and a total line, redrawn in place', async () => {
    const m = (mount = await mountFerry());
    await makeHomes(m, { 'vm-1': { 'disk.img': randomBytes(4 * MiB) }, 'vm-2': { 'disk.img': randomBytes(4 * MiB) } });
    const dest = join(m.root, 'dest');
    await fsp.mkdir(dest);
    const quote = (s: string) => `'${s}'`;
    const command = [process.execPath, CLI, 'evacuate', m.mountpoint, '--to', dest, '--rate-limit', '4M', '--state-dir', m.stateDir].map(quote).join(' ');
    const r = await run('script', ['-qec', command, '/dev/null']);
    expect(r.code, r.stdout).toBe(0);
    const screen = r.stdout.replace(/\r/g, '');
    // While copying: the home's phase, its bytes, its pass, the rate and the time left; a total line below.
    expect(screen).toMatch(/\x1b\[2K {2}vm-[12] +bulk copy +[\d.]+ [KM]iB of 4\.00 MiB, pass 1, [\d.]+ [KM]iB\/s, ~\d+ s left\n/);
    expect(screen).toMatch(/\x1b\[2K {2}total +[01]\/2 moved +[\d.]+ [KM]iB of 8\.0[01] MiB, [\d.]+ [KM]iB\/s\n/);
    // Redrawn in place: the cursor goes back up over the table (two homes and the total).
    expect(screen).toContain('\x1b[3A\x1b[0J');
    expect(screen).toMatch(/\x1b\[2K {2}vm-1 +moved +4\.00 MiB of 4\.00 MiB\n\x1b\[2K {2}vm-2 +moved +4\.00 MiB of 4\.00 MiB\n\x1b\[2K {2}total +2\/2 moved +8\.00 MiB of 8\.00 MiB\n/);
    expect(screen).toMatch(/evacuated \/: 2 moved, 0 failed/);
  });

  it('kill -9 mid-evacuation, then ferry cancel <dir> gives up the rest: the interrupted move is undone, sources intact, the moved home stays', async () => {
    const { m, homes, dest } = await evacuationCrashed();
    const cancel = await m.cli(['cancel', m.mountpoint]);
    expect(cancel.stderr).toBe('');
    expect(cancel.code).toBe(0);
    expect(cancel.stdout).toBe('cancelled the evacuation of /: 1 moved (they stay moved), 3 cancelled and 0 failed (those run on the source)\n');
    await expectFiles(join(dest, 'vm-1'), homes['vm-1'], 'vm-1 moved');
    expect(await fsp.readdir(dest)).toEqual(['vm-1']);
    for (const name of ['vm-2', 'vm-3', 'vm-4']) {
      await expectFiles(join(m.datastore, name), homes[name], `${name} source intact`);
      await expectFiles(join(m.mountpoint, name), homes[name], `${name} served`);
    }
    const status = await m.cli(['status', m.mountpoint, '--json']);
    expect(status.code).toBe(0);
    expect(JSON.parse(status.stdout).evacuations).toEqual([expect.objectContaining({ state: 'cancelled' })]);
    expect((await m.cli(['evacuate', m.mountpoint, '--resume'])).stderr).toBe('ferry: no interrupted evacuation of / (see ferry status)\n');
    expect((await m.cli(['unmount', m.mountpoint])).code).toBe(0);
    expect((await m.remount()).code).toBe(0);
    expect((await m.status()).evacuations).toEqual([]);
  });
});
