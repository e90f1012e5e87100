import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { chmod, copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { CLI, hasExited, run, type Result } from '../helpers/cli.js';
import { forceUnmount, makeRoot, mountsUnder } from '../helpers/mounts.js';
import { listRecords } from '../../src/state/registry.js';
import { waitFor } from '../helpers/migration.js';
import { isDeadMount } from '../../src/util/mounts.js';

const UNIT = fileURLToPath(new URL('../../contrib/systemd/ferry-mount@.service', import.meta.url));
const roots: string[] = [];

function directive(text: string, key: string): string[] {
  return text
    .split('\n')
    .filter((line) => line.startsWith(`${key}=`))
    .map((line) => line.slice(key.length + 1));
}

/** Runs a unit's command line as systemd would for this instance (no systemd on this machine). */
function runUnitCommand(line: string, vars: Record<string, string>, env: NodeJS.ProcessEnv): Promise<Result> {
  const words = line.split(/\s+/).map((word) => word.replace(/\$\{(\w+)\}|%f/g, (all, name: string | undefined) => (name ? vars[name] : vars['%f'])));
  expect(words[0]).toBe('ferry');
  return run(process.execPath, [CLI, ...words.slice(1)], { env });
}

async function waitExited(pid: number): Promise<boolean> {
  const deadline = Date.now() + 5000;
  while (!hasExited(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  return hasExited(pid);
}

afterAll(async () => {
  for (const root of roots) for (const mountpoint of await mountsUnder(root)) await forceUnmount(mountpoint);
});

describe('contrib/systemd/ferry-mount@.service', () => {
  it('is ordered before libvirt, restarts on failure, and passes systemd-analyze verify', async () => {
    const text = await readFile(UNIT, 'utf8');
    expect(directive(text, 'Before').join(' ').split(' ')).toEqual(expect.arrayContaining(['libvirtd.service', 'virtqemud.service']));
    expect(directive(text, 'After').join(' ').split(' ')).toEqual(expect.arrayContaining(['local-fs.target', 'remote-fs.target']));
    expect(directive(text, 'Restart')).toEqual(['on-failure']);
    expect(directive(text, 'Type')).toEqual(['forking']);

    // verify wants `ferry` where systemd looks (its PATH starts at /usr/local/sbin): bound there in a private
    // mount namespace, as an instance of the template.
    const root = await makeRoot();
    roots.push(root);
    await mkdir(join(root, 'bin'));
    await writeFile(join(root, 'bin', 'ferry'), `#!/bin/sh\nexec '${process.execPath}' '${CLI}' "$@"\n`);
    await chmod(join(root, 'bin', 'ferry'), 0o755);
    await copyFile(UNIT, join(root, 'ferry-mount@vmstore.service'));
    const verify = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind "$1" /usr/local/sbin && exec systemd-analyze verify --man=no "$2"', 'sh', join(root, 'bin'), join(root, 'ferry-mount@vmstore.service')], { encoding: 'utf8' });
    expect({ status: verify.status, stderr: verify.stderr }).toEqual({ status: 0, stderr: '' });
  });

  it('ExecStart mounts, starts again after a crash (clearing the dead mount, showing the interrupted migration), ExecStop unmounts', async () => {
    const text = await readFile(UNIT, 'utf8');
    const [execStart] = directive(text, 'ExecStart');
    const [execStop] = directive(text, 'ExecStop');
    const root = await makeRoot();
    roots.push(root);
    const vars = { DATASTORE: join(root, 'ds'), OPTIONS: 'allow_other,block_size=64K', '%f': join(root, 'mnt') };
    const env = { FERRY_STATE_DIR: join(root, 'state') };
    const dest = join(root, 'dest');
    await mkdir(join(vars.DATASTORE, 'vm1'), { recursive: true });
    await mkdir(vars['%f']);
    await mkdir(dest);
    await writeFile(join(vars.DATASTORE, 'vm1', 'disk.raw'), Buffer.alloc(32 << 20, 7));
    await writeFile(join(vars.DATASTORE, 'vm1', 'a.nvram'), Buffer.alloc(1 << 20, 8));

    const started = await runUnitCommand(execStart, vars, env);
    expect(started).toMatchObject({ code: 0, stdout: '', stderr: '' });
    const [first] = await listRecords(env.FERRY_STATE_DIR);
    expect(first.blockSize).toBe(65536);

    // A migration slow enough to be under way when the daemon dies.
    const migrating = await run(process.execPath, [CLI, 'migrate', join(vars['%f'], 'vm1'), '--to', dest, '--rate-limit', '4M', '--detach'], { env });
    expect(migrating.code).toBe(0);
    // Killed once its checkpoint holds some progress: the migration is then kept for --resume, not undone.
    await waitFor(async () => {
      const dir = join(env.FERRY_STATE_DIR, 'datastores', (await readdir(join(env.FERRY_STATE_DIR, 'datastores')))[0], 'migrations');
      const file = (await readdir(dir)).find((n) => n.endsWith('.checkpoint.json'));
      const c = file ? JSON.parse(await readFile(join(dir, file), 'utf8').catch(() => '{}')) : {};
      return (c.complete?.length ?? 0) > 0 || (c.partial?.copiedUpTo ?? 0) > 0;
    }, 30_000, 'a checkpoint with progress');
    process.kill(first.pid, 'SIGKILL');
    expect(await waitExited(first.pid)).toBe(true);
    // The leader shows as exited while its other threads may still hold /dev/fuse for a moment.
    await waitFor(() => isDeadMount(vars['%f']), 10_000, 'the mount to be dead');

    // What Restart=on-failure runs: the same ExecStart.
    const restarted = await runUnitCommand(execStart, vars, env);
    expect(restarted.code).toBe(0);
    expect(restarted.stderr).toMatch(/^ferry: warning: .*\/vm1.* was interrupted .*--resume.*ferry cancel/m);
    const [second] = await listRecords(env.FERRY_STATE_DIR);
    expect(second.pid).not.toBe(first.pid);
    expect((await readFile(join(vars['%f'], 'vm1', 'disk.raw'))).equals(Buffer.alloc(32 << 20, 7))).toBe(true);
    const status = await run(process.execPath, [CLI, 'status'], { env });
    expect(status.code).toBe(4);

    // --clear-dead never touches a live mount: a second start is refused and the mount keeps serving.
    const again = await runUnitCommand(execStart, vars, env);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/^ferry: .* is already a mount \(fuse\.ferry\)/);
    expect(hasExited(second.pid)).toBe(false);

    expect(await run(process.execPath, [CLI, 'cancel', join(vars['%f'], 'vm1')], { env })).toMatchObject({ code: 0 });
    const stopped = await runUnitCommand(execStop, vars, env);
    expect(stopped).toMatchObject({ code: 0, stderr: '' });
    expect(await waitExited(second.pid)).toBe(true);
    expect(await mountsUnder(root)).toEqual([]);
  });

  it('without --clear-dead a dead mount is refused, and left for the admin', async () => {
    const root = await makeRoot();
    roots.push(root);
    const [ds, mnt] = [join(root, 'ds'), join(root, 'mnt')];
    await mkdir(ds);
    await mkdir(mnt);
    const env = { FERRY_STATE_DIR: join(root, 'state') };
    expect(await run(process.execPath, [CLI, 'mount', ds, mnt], { env })).toMatchObject({ code: 0 });
    const [record] = await listRecords(env.FERRY_STATE_DIR);
    process.kill(record.pid, 'SIGKILL');
    await waitFor(() => isDeadMount(mnt), 10_000, 'the mount to be dead');
    const refused = await run(process.execPath, [CLI, 'mount', ds, mnt], { env });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/dead FUSE mount .*ferry unmount --force .*or mount with --clear-dead/);
    expect(await isDeadMount(mnt)).toBe(true);
    expect(await run(process.execPath, [CLI, 'mount', ds, mnt, '--clear-dead'], { env })).toMatchObject({ code: 0, stderr: '' });
    expect(await run(process.execPath, [CLI, 'unmount', mnt], { env })).toMatchObject({ code: 0 });
  });
});
