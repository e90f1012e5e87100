import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import dgram from 'node:dgram';
import { join } from 'node:path';
import { hostname } from 'node:os';
import { execFileSync, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ferry, run, CLI } from '../helpers/cli.js';
import { makeRoot, mountFerry, type TestMount } from '../helpers/mounts.js';
import { waitFor } from '../helpers/migration.js';
import { logFileFor } from '../../src/daemon/log-target.js';

// Issue 28 items 6-8: --json to the end, logs an admin can use, and the small CLI items.

/** Every stdout line is a JSON object; the last one is the error event, and no phase event came before it. */
function expectJsonError(stdout: string, message: RegExp): Record<string, unknown> {
  const lines = stdout.trim().split('\n');
  const events = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  const last = events.at(-1)!;
  expect(last.type).toBe('error');
  expect(String(last.message)).toMatch(message);
  expect(typeof last.code).toBe('string');
  expect(events.filter((e) => e.type === 'phase')).toEqual([]);
  return last;
}

let m: TestMount;
beforeAll(async () => {
  m = await mountFerry();
  await fsp.mkdir(join(m.mountpoint, 'vm'));
  await fsp.writeFile(join(m.mountpoint, 'vm/disk.img'), Buffer.alloc(64 << 10, 7));
});
afterAll(async () => {
  await m?.stop();
});

describe('--json is JSON to the end', () => {
  it('a refused migration: stdout is JSON lines ending in an error event, no phase event; the stderr line too', async () => {
    const r = await m.cli(['migrate', join(m.mountpoint, 'vm'), '--to', join(m.mountpoint, 'inside-dest'), '--json']);
    expect(r.code).toBe(2);
    const error = expectJsonError(r.stdout, /inside the ferry mount/);
    expect(error.code).toBe('EREFUSED');
    expect(r.stderr).toMatch(/^ferry: destination .* is inside the ferry mount/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('a refused migration in plain mode prints no phase line before the refusal', async () => {
    const r = await m.cli(['migrate', join(m.mountpoint, 'vm'), '--to', join(m.mountpoint, 'inside-dest')]);
    expect(r.code).toBe(2);
    expect(r.stdout).not.toMatch(/phase/);
    expect(r.stderr).toMatch(/inside the ferry mount/);
  });

  it('a refusal by the CLI itself, and by status and cancel', async () => {
    const bad = await m.cli(['migrate', join(m.mountpoint, 'vm'), '--to', join(m.root, 'dest-a'), '--max-downtime', 'soon', '--json']);
    expect(bad.code).toBe(2);
    expectJsonError(bad.stdout, /--max-downtime/);
    const status = await m.cli(['status', join(m.root, 'nowhere'), '--json']);
    expect(status.code).not.toBe(0);
    expectJsonError(status.stdout, /nowhere/);
    expect(status.stderr).toMatch(/^ferry: /);
    const cancel = await m.cli(['cancel', join(m.mountpoint, 'vm'), '--json']);
    expect(cancel.code).toBe(2);
    expectJsonError(cancel.stdout, /no migration/);
    const usage = await m.cli(['status', '--json', '--bogus']);
    expect(usage.code).toBe(2);
    expectJsonError(usage.stdout, /bogus/);
  });

  it('a preflight that fails on a readlink (FERRY_FAULTS walk-readlink): an error event on stdout, exit 1', async () => {
    const f = await mountFerry({ env: { FERRY_FAULTS: 'walk-readlink=fail' } });
    try {
      await fsp.mkdir(join(f.mountpoint, 'vm'));
      await fsp.symlink('disk.img', join(f.mountpoint, 'vm/link'));
      const r = await f.cli(['migrate', join(f.mountpoint, 'vm'), '--to', join(f.root, 'dest'), '--json']);
      expect(r.code).toBe(1);
      expectJsonError(r.stdout, /injected failure at walk-readlink/);
      expect(r.stderr).toMatch(/^ferry: .*injected failure at walk-readlink/);
    } finally {
      await f.stop();
    }
  });
});

describe('small CLI items', () => {
  it('--max-downtime 0 says it must be > 0; --help says a bare number is seconds, not virsh milliseconds', async () => {
    const r = await m.cli(['migrate', join(m.mountpoint, 'vm'), '--to', join(m.root, 'dest-b'), '--max-downtime', '0']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--max-downtime must be > 0/);
    const help = await ferry(['migrate', '--help']);
    expect(help.stdout).toMatch(/bare number is seconds/);
    expect(help.stdout).toMatch(/migrate-setmaxdowntime/);
  });

  it('--to in a pseudo filesystem is refused as no place for VM disks, not as "0 B free"', async () => {
    const r = await m.cli(['migrate', join(m.mountpoint, 'vm'), '--to', '/proc/ferry-dest']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/\/proc.* is on a proc filesystem.*not a place for VM disks/);
    expect(r.stderr).not.toMatch(/free/);
  });

  it('unmount of a busy mount names the open files', async () => {
    const fd = fs.openSync(join(m.mountpoint, 'vm/disk.img'), 'r');
    try {
      const r = await m.cli(['unmount', m.mountpoint]);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/1 file\(s\) open through it: \/vm\/disk\.img/);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('--domain names the VM home it picked', async () => {
    const bin = join(m.root, 'bin');
    await fsp.mkdir(bin, { recursive: true });
    const disk = join(m.mountpoint, 'vm/disk.img');
    // A stand-in for libvirt's virsh: the two calls --domain makes.
    await fsp.writeFile(join(bin, 'virsh'), `#!/bin/sh\ncase "$1" in\n domblklist) printf ' Type Device Target Source\\n----\\n file disk vda ${disk}\\n';;\n dumpxml) echo '<domain/>';;\nesac\n`, { mode: 0o755 });
    const r = await m.cli(['migrate', '--domain', 'web1', '--to', join(m.mountpoint, 'inside-dest')], { PATH: `${bin}:${process.env.PATH}` });
    expect(r.code).toBe(2);
    expect(r.stdout).toContain(`domain web1: its home is ${join(m.mountpoint, 'vm')}`);
  });

  it('usage errors point to --help; --help gives exit codes, examples and what SIGHUP does', async () => {
    const r = await ferry(['migrate', '--bogus']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown option '--bogus'/);
    expect(r.stderr).toMatch(/ferry migrate --help/);
    const help = await ferry(['--help']);
    expect(help.stdout).toMatch(/Exit status:[\s\S]*0 +[\s\S]*1 +[\s\S]*2 +/);
    expect(help.stdout).toMatch(/Examples:[\s\S]*ferry mount /);
    expect(help.stdout).toMatch(/SIGHUP/);
    const migrateHelp = await ferry(['migrate', '--help']);
    expect(migrateHelp.stdout).toMatch(/Examples:\n {2}ferry migrate [\s\S]*Exit status: 0 done, 1 failed, 2 refused/);
  });

  it('the man page is generated from the commands and up to date', async () => {
    const script = fileURLToPath(new URL('../../scripts/gen-man.mjs', import.meta.url));
    const r = await run(process.execPath, [script, '--check']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const page = await fsp.readFile(fileURLToPath(new URL('../../man/ferry.1', import.meta.url)), 'utf8');
    expect(page).toMatch(/^\.TH FERRY 1/m);
    expect(page).toContain('\\-\\-max\\-downtime');
  });

  it('ferry completion bash: generated from the commands; compgen answers in bash', async () => {
    const r = await ferry(['completion', 'bash']);
    expect(r.code).toBe(0);
    const script = join(m.root, 'ferry.bash');
    await fsp.writeFile(script, r.stdout);
    const complete = (...words: string[]) =>
      execFileSync('bash', ['-c', `source ${script}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}; _ferry; printf '%s\\n' "\${COMPREPLY[@]}"`], { encoding: 'utf8' })
        .trim()
        .split('\n');
    expect(complete('ferry', 'mi')).toEqual(['migrate']);
    expect(complete('ferry', 'c')).toEqual(['cancel', 'completion']);
    expect(complete('ferry', 'migrate', '--max-d')).toEqual(['--max-downtime']);
    expect(complete('ferry', 'migrate', '--mode', '')).toEqual(['iterative', 'mirror', 'auto']);
    expect(complete('ferry', 'mount', '--log-target', 's')).toEqual(['stderr', 'syslog']);
    const zsh = await ferry(['completion', 'zsh']);
    expect(zsh.code).toBe(0);
    expect(zsh.stdout).toMatch(/bashcompinit/);
  });
});

describe('logs an admin can use', () => {
  it('one JSON-lines file per mount point, named after it, appended across mounts; level names; status names it', async () => {
    const root = await makeRoot();
    try {
      const state = join(root, 'state');
      const mnt = join(root, 'mnt');
      await fsp.mkdir(join(root, 'ds'));
      await fsp.mkdir(mnt);
      const logs = join(state, 'logs');
      const log = logFileFor(state, mnt);
      expect(log).toBe(join(logs, `${mnt.slice(1).replace(/-/g, '\\x2d').replace(/\//g, '-')}.log`));
      for (let i = 0; i < 2; i++) {
        const r = await ferry(['mount', join(root, 'ds'), mnt, '--state-dir', state]);
        expect(r.code, r.stderr).toBe(0);
        if (i === 0) {
          const status = await ferry(['status', mnt, '--state-dir', state]);
          expect(status.stdout).toContain(`log: ${log}`);
        }
        expect((await ferry(['unmount', mnt, '--state-dir', state])).code).toBe(0);
      }
      // A refused mount (no such datastore) at another mount point leaves no file of its own.
      await fsp.mkdir(join(root, 'mnt2'));
      const refused = await ferry(['mount', join(root, 'nods'), join(root, 'mnt2'), '--state-dir', state]);
      expect(refused.code).toBe(2);
      expect(await fsp.readdir(logs)).toEqual([log.slice(logs.length + 1)]);
      const lines = (await fsp.readFile(log, 'utf8')).trim().split('\n');
      const records = lines.map((line) => JSON.parse(line) as { level: unknown; msg: string });
      expect(new Set(records.map((r) => r.level)).has('info')).toBe(true);
      for (const record of records) expect(['trace', 'debug', 'info', 'warn', 'error', 'fatal']).toContain(record.level);
      expect(records.filter((r) => r.msg === 'mounted')).toHaveLength(2);
      // Pretty lines are for a terminal only: never into a file.
      const pretty = await ferry(['mount', join(root, 'ds'), mnt, '--state-dir', state, '--log-format', 'pretty']);
      expect(pretty.code).toBe(2);
      expect(pretty.stderr).toMatch(/--log-format pretty .*--foreground/);
    } finally {
      await fsp.rm(root, { recursive: true, force: true });
    }
  });

  it('SIGHUP makes the daemon reopen its log file (logrotate without copytruncate)', async () => {
    const status = await m.status();
    const log = logFileFor(m.stateDir, m.mountpoint);
    await fsp.rename(log, `${log}.1`);
    process.kill(Number(status.pid), 'SIGHUP');
    await waitFor(() => fs.existsSync(log), 10_000, 'the log file reopened');
    expect((await fsp.readFile(`${log}.1`, 'utf8')).length).toBeGreaterThan(0);
  });

  it('--log-target syslog: one datagram per record to a Unix datagram socket (like /dev/log), RFC 5424 over UDP', async () => {
    const root = await makeRoot();
    const socket = join(root, 'dev-log');
    // A syslog daemon's /dev/log: a Unix datagram socket (Node has none: python's), printing each datagram.
    const server = spawn('python3', ['-u', '-c', `import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint('ready')\nwhile True: print(repr(s.recv(65536).decode()))`, socket]);
    let datagrams = '';
    server.stdout.on('data', (d: Buffer) => (datagrams += d.toString()));
    let udp = '';
    const udpServer = dgram.createSocket('udp4').on('message', (msg) => (udp += msg.toString() + '\n'));
    await new Promise<void>((resolve) => udpServer.bind(0, '127.0.0.1', resolve));
    const state = join(root, 'state');
    try {
      await waitFor(() => datagrams.startsWith('ready'), 10_000, 'the datagram server');
      await fsp.mkdir(join(root, 'ds'));
      for (const mnt of ['mnt', 'mnt-udp']) await fsp.mkdir(join(root, mnt));
      const r = await ferry(['mount', join(root, 'ds'), join(root, 'mnt'), '--state-dir', state, '--log-target', 'syslog', '--syslog-address', socket]);
      expect(r.code, r.stderr).toBe(0);
      await waitFor(() => /"msg":"mounted"/.test(datagrams), 10_000, 'the mounted record at the datagram socket');
      // RFC 3164 as syslog(3) sends it, one whole record per datagram (the server prints each as one repr line).
      expect(datagrams).toMatch(new RegExp(`^'<134>\\w{3} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d ${hostname()} ferry\\[\\d+\\]: \\{[^\\n]*"msg":"mounted"[^\\n]*\\}'$`, 'm'));
      expect(fs.existsSync(join(state, 'logs'))).toBe(false);
      const port = udpServer.address().port;
      await fsp.mkdir(join(root, 'ds2'));
      const u = await ferry(['mount', join(root, 'ds2'), join(root, 'mnt-udp'), '--state-dir', join(root, 'state2'), '--log-target', 'syslog', '--syslog-address', `udp://127.0.0.1:${port}`]);
      expect(u.code, u.stderr).toBe(0);
      await waitFor(() => /"msg":"mounted"/.test(udp), 10_000, 'the mounted record at the UDP syslog');
      expect(udp).toMatch(new RegExp(`^<134>1 \\S+ ${hostname()} ferry \\d+ - - \\{.*"msg":"mounted"`, 'm'));
      expect((await ferry(['unmount', join(root, 'mnt-udp'), '--state-dir', join(root, 'state2')])).code).toBe(0);
      // No syslog socket there: refused before any daemon starts.
      const none = await ferry(['mount', join(root, 'ds2'), join(root, 'mnt-udp'), '--state-dir', state, '--log-target', 'syslog', '--syslog-address', join(root, 'nosock')]);
      expect(none.code).toBe(2);
      expect(none.stderr).toMatch(/no syslog socket at .*nosock/);
    } finally {
      await ferry(['unmount', join(root, 'mnt'), '--force', '--state-dir', state]);
      await ferry(['unmount', join(root, 'mnt-udp'), '--force', '--state-dir', join(root, 'state2')]);
      server.kill();
      udpServer.close();
      await fsp.rm(root, { recursive: true, force: true });
    }
  });
});

it('the CLI used is the built one', () => {
  expect(fs.existsSync(CLI)).toBe(true);
});
