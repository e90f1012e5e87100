// libvirt guests on a ferry mount: libvirt runs QEMU as its own unprivileged user (libvirt-qemu, dynamic
// ownership) on a disk served by a `--allow-other` mount, and `ferry migrate --domain` moves the VM home live.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, type Result } from '../helpers/cli.js';
import { mountFerry, type TestMount } from '../helpers/mounts.js';
import { waitFor } from '../helpers/migration.js';
import { mostAtOnce } from '../helpers/evacuation.js';
import { bootArgs, bootGuest, createImage, ensureGuestKit, goldenChecksum, imageChecksum, qemuMaxCpus, type GuestParams, type GuestReport } from '../helpers/guest.js';

const MiB = 1 << 20;
const REGION = 48 * MiB;
const URI = 'qemu:///system';

function has(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const libvirtInstalled = has('virsh') && has('libvirtd');
if (!libvirtInstalled) {
  const banner = '!'.repeat(100);
  console.warn(`\n${banner}\n!!! SKIPPING the libvirt tests: libvirt is not installed (virsh and libvirtd; scripts/setup.sh installs\n!!! libvirt-daemon-system, libvirt-daemon-driver-qemu and libvirt-clients). Nothing libvirt-related was tested.\n${banner}\n`);
}

const virsh = (args: string[]): Promise<Result> => run('virsh', ['-c', URI, ...args], { env: { LIBVIRT_DEFAULT_URI: URI } });

function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(path);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** The daemons this file started (and so stops): none when libvirt was already running. */
const started: ChildProcess[] = [];
let scratch: string;

/** In the foreground, as children of this process: it stops them, and reaps them. */
async function startDaemon(name: 'virtlogd' | 'libvirtd', ready: () => Promise<boolean>): Promise<void> {
  const child = spawn(name, [], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  started.push(child);
  await waitFor(async () => {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}): ${stderr}`);
    return ready();
  }, 30_000, `${name} to answer`);
}

async function stopDaemons(): Promise<void> {
  // libvirtd first: it talks to virtlogd.
  for (const child of started.reverse()) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }
  started.length = 0;
}

/** /dev/kvm's owner and mode before this file gave it to group kvm (see below), to put back after. */
let kvmBefore: { uid: number; gid: number; mode: number } | undefined;

/**
 * Debian's udev rule gives /dev/kvm to group kvm, mode 0660 (libvirt-qemu is in that group). A host without udev
 * leaves it root's 0600: libvirtd's probe (as root) finds KVM, its check for the QEMU user does not, so it judges
 * its cached QEMU capabilities outdated at every define and probes QEMU again, ~30 s each time. Do what udev would.
 */
function kvmAsUdevWould(): void {
  const group = /^kvm:[^:]*:(\d+):/m.exec(fs.readFileSync('/etc/group', 'utf8'));
  const st = fs.statSync('/dev/kvm', { throwIfNoEntry: false });
  if (!st || !group) return;
  const kvmGid = Number(group[1]);
  if (st.gid === kvmGid && (st.mode & 0o060) === 0o060) return;
  kvmBefore = { uid: st.uid, gid: st.gid, mode: st.mode & 0o777 };
  fs.chownSync('/dev/kvm', st.uid, kvmGid);
  fs.chmodSync('/dev/kvm', 0o660);
}

function kvmPutBack(): void {
  if (!kvmBefore) return;
  fs.chownSync('/dev/kvm', kvmBefore.uid, kvmBefore.gid);
  fs.chmodSync('/dev/kvm', kvmBefore.mode);
}

beforeAll(async () => {
  scratch = await fsp.mkdtemp(join(tmpdir(), 'ferry-libvirt-'));
  if (!libvirtInstalled) return;
  await ensureGuestKit();
  kvmAsUdevWould();
  // No systemd in CI: start what is not running (virtlogd takes QEMU's stdio, libvirtd the QEMU driver).
  const virtlogd = () => socketAnswers('/run/libvirt/virtlogd-sock');
  const libvirtd = async () => (await virsh(['version'])).code === 0;
  if (!(await virtlogd())) await startDaemon('virtlogd', virtlogd);
  if (!(await libvirtd())) await startDaemon('libvirtd', libvirtd);
}, 900_000);

afterAll(async () => {
  await stopDaemons();
  kvmPutBack();
  if (scratch) await fsp.rm(scratch, { recursive: true, force: true });
});

let mounts: TestMount[] = [];
let domains: string[] = [];
let defined: string[] = [];
afterEach(async () => {
  // No domain may outlive its test: a guest holding the mount open would keep it busy.
  for (const name of domains) await virsh(['destroy', name]);
  for (const name of defined) await virsh(['undefine', '--nvram', name]);
  for (const m of mounts) await m.stop();
  domains = [];
  defined = [];
  mounts = [];
});

let domainCount = 0;
const domainName = () => `ferry-test-${process.pid}-${++domainCount}`;

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
}

/** A TCG domain booting the guest kit directly, its serial console written to `console`. */
function domainXml(o: { name: string; kernel: string; initrd: string; params: GuestParams; disks: string[]; console: string; cache?: 'none' | 'writeback'; nvram?: string }): string {
  const disks = o.disks.map(
    (file, i) => `
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw' cache='${o.cache ?? 'none'}' error_policy='report' rerror_policy='report'/>
      <source file='${escapeXml(file)}'/>
      <target dev='vd${String.fromCharCode(97 + i)}' bus='virtio'/>
    </disk>`,
  );
  return `<domain type='qemu'>
  <name>${o.name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu current='1'>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${escapeXml(o.kernel)}</kernel>
    <initrd>${escapeXml(o.initrd)}</initrd>
    <cmdline>${escapeXml(bootArgs(o.params))}</cmdline>${o.nvram ? `\n    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>\n    <nvram>${escapeXml(o.nvram)}</nvram>` : ''}
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>${disks.join('')}
    <serial type='file'><source path='${escapeXml(o.console)}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

interface VmHome extends TestMount {
  kernel: string;
  initrd: string;
  /** The VM home through the mount, and where it goes. */
  home: string;
  disk: string;
  dest: string;
}

/** A ferry mount that libvirt's QEMU user can reach: `--allow-other`, every directory on the way searchable. */
async function vmHomeOnFerry(): Promise<VmHome> {
  const m = await mountFerry({ args: ['--allow-other'] });
  mounts.push(m);
  await fsp.chmod(m.root, 0o755); // mkdtemp made it 0700: libvirt-qemu could not get to the mount
  await fsp.mkdir(join(m.datastore, 'vm1'), { mode: 0o755 });
  await createImage(join(m.datastore, 'vm1', 'disk.raw'), 'raw', REGION);
  await fsp.writeFile(join(m.datastore, 'vm1', 'vm1.xml'), '<!-- the VM home travels whole -->\n');
  // The kernel and initrd where libvirt-qemu can read them (the checkout may be in a directory it cannot enter).
  const { vmlinuz, initrd } = await ensureGuestKit();
  const kit = join(m.root, 'kit');
  await fsp.mkdir(kit, { mode: 0o755 });
  await fsp.copyFile(vmlinuz, join(kit, 'vmlinuz'));
  await fsp.copyFile(initrd, join(kit, 'initrd.img'));
  await fsp.mkdir(join(m.root, 'b'), { mode: 0o755 });
  const home = join(m.mountpoint, 'vm1');
  return Object.assign(m, { kernel: join(kit, 'vmlinuz'), initrd: join(kit, 'initrd.img'), home, disk: join(home, 'disk.raw'), dest: join(m.root, 'b', 'vm1') });
}

async function createDomain(m: VmHome, name: string, params: GuestParams, console: string): Promise<void> {
  const xml = join(m.root, `${name}.xml`);
  await fsp.writeFile(xml, domainXml({ name, kernel: m.kernel, initrd: m.initrd, params, disks: [m.disk], console }));
  domains.push(name);
  const created = await virsh(['create', xml]);
  expect(created.stderr).toBe('');
  expect(created.code).toBe(0);
}

async function waitConsole(console: string, marker: string, timeoutMs = 120_000): Promise<string> {
  let text = '';
  await waitFor(
    async () => {
      text = (await fsp.readFile(console, 'latin1').catch(() => '')).replace(/\r/g, '');
      if (/FERRY-ERROR .*/.test(text)) throw new Error(`guest failed: ${/FERRY-ERROR .*/.exec(text)![0]}\n${text.slice(-3000)}`);
      return text.includes(marker);
    },
    timeoutMs,
    `${marker} on ${console}`,
  ).catch((err: Error) => {
    throw new Error(`${err.message}\n--- console tail ---\n${text.slice(-3000)}`);
  });
  return text;
}

async function guestReport(console: string): Promise<GuestReport> {
  const text = await waitConsole(console, 'FERRY-RESULT-END');
  return JSON.parse(/FERRY-RESULT-BEGIN\n(.*)\nFERRY-RESULT-END/.exec(text)![1]) as GuestReport;
}

/** libvirt destroys a transient domain whose guest powered off (`<on_poweroff>destroy`). */
async function waitGone(name: string): Promise<void> {
  await waitFor(async () => (await virsh(['domstate', name])).code !== 0, 30_000, `domain ${name} to go away`);
}

const qemuPid = (name: string): string => fs.readFileSync(`/run/libvirt/qemu/${name}.pid`, 'utf8').trim();

function qemuUser(name: string): number {
  return fs.statSync(`/proc/${qemuPid(name)}`).uid;
}

describe.skipIf(!libvirtInstalled)('a libvirt domain on a ferry mount', () => {
  it('is migrated live with `ferry migrate --domain` as it writes, then boots again from the new location', async () => {
    const m = await vmHomeOnFerry();
    const name = domainName();
    const console1 = join(m.root, 'console-1.log');
    const seed = 171;
    // Long enough that the migration (the CLI's start included, slow on a loaded host) ends while it writes.
    await createDomain(m, name, { seed, seconds: 15, bs: 4096, region: REGION, fsync: 64, direct: true }, console1);
    await waitConsole(console1, 'FERRY-WORKLOAD-START');

    // libvirt runs QEMU unprivileged and handed it the disk through the mount (dynamic ownership).
    const libvirtQemu = Number(execFileSync('id', ['-u', 'libvirt-qemu'], { encoding: 'utf8' }).trim());
    expect(libvirtQemu).not.toBe(0);
    expect(qemuUser(name)).toBe(libvirtQemu);
    expect(qemuMaxCpus(qemuPid(name))).toBeGreaterThan(1);
    expect((await fsp.stat(m.disk)).uid).toBe(libvirtQemu);
    // It remembers the owner to give the file back to in an xattr (remember_owner), which ferry serves and moves.
    const remembered = await run('getfattr', ['--only-values', '-n', 'trusted.libvirt.security.dac', m.disk]);
    expect(remembered).toMatchObject({ code: 0, stdout: '+0:+0' });

    await new Promise((r) => setTimeout(r, 1000));
    const migrated = await m.cli(['migrate', '--domain', name, '--to', m.dest, '--json'], { LIBVIRT_DEFAULT_URI: URI });
    expect(migrated.stderr).toBe('');
    expect(migrated.code).toBe(0);
    const events = migrated.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, any>);
    expect(events.at(-1)).toMatchObject({ type: 'done', destination: m.dest });
    expect(await fsp.readFile(console1, 'latin1')).not.toContain('FERRY-RESULT-BEGIN');
    // It moved the VM home the disk lives in, while the guest was still writing to it.
    expect((await virsh(['domstate', name])).stdout.trim()).toBe('running');
    const blkerror = await virsh(['domblkerror', name]);
    expect(blkerror.code).toBe(0);
    expect(blkerror.stdout.trim()).toBe('No errors found');
    expect(fs.existsSync(join(m.datastore, 'vm1'))).toBe(false);
    expect(await fsp.readFile(join(m.dest, 'vm1.xml'), 'utf8')).toBe('<!-- the VM home travels whole -->\n');
    expect((await fsp.stat(join(m.dest, 'disk.raw'))).uid).toBe(libvirtQemu);

    const report = await guestReport(console1);
    expect(report.write.errors).toBe(0);
    expect(report.write.fsync_errors).toBe(0);
    expect(report.dmesg_io_errors).toBe(0);
    expect(report.write.writes).toBeGreaterThan(0);
    const golden = await goldenChecksum({ seed, writes: report.write.writes, bs: 4096, region: REGION });
    expect(report.checksum.fnv1a64).toBe(golden);
    await waitGone(name);
    expect(await imageChecksum(join(m.dest, 'disk.raw'), 'raw', REGION)).toBe(golden);
    // libvirt gave the disk back to its owner when the domain ended: through the mount, on the destination.
    expect((await fsp.stat(join(m.dest, 'disk.raw'))).uid).toBe(0);
    expect((await m.status()).mappings).toContainEqual({ virtual: '/vm1', backing: m.dest });

    // Started again, same disk path, now served from the destination: it boots and finds its data. A few more
    // writes on top of what the first run left: the golden value starts from that content, so lost data shows.
    const golden2 = await goldenChecksum({ seed: seed + 1, writes: 200, bs: 4096, region: REGION, base: join(m.dest, 'disk.raw') });
    expect(golden2).not.toBe(await goldenChecksum({ seed: seed + 1, writes: 200, bs: 4096, region: REGION }));
    const again = domainName();
    const console2 = join(m.root, 'console-2.log');
    await createDomain(m, again, { seed: seed + 1, writes: 200, bs: 4096, region: REGION }, console2);
    const second = await guestReport(console2);
    expect(second.write.errors).toBe(0);
    expect(second.dmesg_io_errors).toBe(0);
    expect(second.checksum.fnv1a64).toBe(golden2);
    await waitGone(again);
  });

  it('refuses a domain with a disk outside the ferry mount, naming it; nothing moves', async () => {
    const m = await vmHomeOnFerry();
    const outside = join(m.root, 'elsewhere', 'data.raw');
    await fsp.mkdir(join(m.root, 'elsewhere'));
    await createImage(outside, 'raw', MiB);
    const name = domainName();
    const xml = join(m.root, 'outside.xml');
    await fsp.writeFile(xml, domainXml({ name, kernel: m.kernel, initrd: m.initrd, params: {}, disks: [m.disk, outside], console: join(m.root, 'c.log') }));
    defined.push(name);
    expect((await virsh(['define', xml])).code).toBe(0);
    const r = await m.cli(['migrate', '--domain', name, '--to', m.dest], { LIBVIRT_DEFAULT_URI: URI });
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`ferry: domain '${name}' has files outside any ferry mount: ${outside} (ferry moves one VM home, all of it inside a ferry mount)\n`);
    expect(fs.existsSync(m.dest)).toBe(false);
    expect(fs.existsSync(join(m.datastore, 'vm1', 'disk.raw'))).toBe(true);
  });

  it('refuses a domain whose NVRAM is outside the VM home, naming it', async () => {
    const m = await vmHomeOnFerry();
    await fsp.mkdir(join(m.datastore, 'nvram'));
    const nvram = join(m.mountpoint, 'nvram', 'vm1_VARS.fd');
    const name = domainName();
    const xml = join(m.root, 'nvram.xml');
    await fsp.writeFile(xml, domainXml({ name, kernel: m.kernel, initrd: m.initrd, params: {}, disks: [m.disk], console: join(m.root, 'c.log'), nvram }));
    defined.push(name);
    const def = await virsh(['define', xml]);
    expect(def.stderr).toBe('');
    const r = await m.cli(['migrate', '--domain', name, '--to', m.dest], { LIBVIRT_DEFAULT_URI: URI });
    expect(r.stderr).toBe(`ferry: domain '${name}' has files outside its VM home ${m.home}: ${nvram}\n`);
    expect(r.code).toBe(2);
    expect(fs.existsSync(m.dest)).toBe(false);
  });

  it('refuses an unknown domain', async () => {
    const m = await vmHomeOnFerry();
    const r = await m.cli(['migrate', '--domain', 'ferry-test-no-such-domain', '--to', m.dest], { LIBVIRT_DEFAULT_URI: URI });
    expect(r.stderr).toBe("ferry: libvirt has no domain named 'ferry-test-no-such-domain' (see `virsh list --all`)\n");
    expect(r.code).toBe(2);
    expect(fs.existsSync(m.dest)).toBe(false);
  });
});

describe.skipIf(!libvirtInstalled)('ferry evacuate with libvirt', () => {
  it('two guests (one through libvirt) evacuated together while they write: zero guest I/O errors, checksums = golden', async () => {
    const m = await vmHomeOnFerry();
    await fsp.mkdir(join(m.datastore, 'vm2'), { mode: 0o755 });
    await createImage(join(m.datastore, 'vm2', 'disk.raw'), 'raw', REGION);
    const name = domainName();
    const console1 = join(m.root, 'console-1.log');
    const seeds = [311, 312];
    await createDomain(m, name, { seed: seeds[0], seconds: 25, bs: 4096, region: REGION, fsync: 64, direct: true }, console1);
    const plain = await bootGuest({ evidence: m.evidence, image: join(m.mountpoint, 'vm2/disk.raw'), params: { seed: seeds[1], seconds: 25, bs: 4096, region: REGION, fsync: 64 } });
    await waitConsole(console1, 'FERRY-WORKLOAD-START');
    await plain.started;
    await new Promise((r) => setTimeout(r, 1000));

    const r = await m.cli(['evacuate', m.mountpoint, '--to', join(m.root, 'b'), '--parallel', '2', '--json'], { LIBVIRT_DEFAULT_URI: URI });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const events = r.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, any>);
    expect(events.at(-1)).toMatchObject({ type: 'done', state: 'done', moved: 2, failed: 0 });
    expect(mostAtOnce(events)).toBe(2);
    // Both moved while their guests still wrote.
    expect(await fsp.readFile(console1, 'latin1')).not.toContain('FERRY-RESULT-BEGIN');
    expect((await virsh(['domstate', name])).stdout.trim()).toBe('running');
    expect((await virsh(['domblkerror', name])).stdout.trim()).toBe('No errors found');

    const reports = [await guestReport(console1), (await plain.result).report];
    for (const [i, report] of reports.entries()) {
      expect(report.write.errors, `guest ${i + 1}`).toBe(0);
      expect(report.write.fsync_errors, `guest ${i + 1}`).toBe(0);
      expect(report.dmesg_io_errors, `guest ${i + 1}`).toBe(0);
      const golden = await goldenChecksum({ seed: seeds[i], writes: report.write.writes, bs: 4096, region: REGION });
      expect(report.checksum.fnv1a64, `guest ${i + 1}`).toBe(golden);
      if (i === 0) await waitGone(name);
      expect(await imageChecksum(join(m.root, 'b', `vm${i + 1}`, 'disk.raw'), 'raw', REGION), `vm${i + 1} at the destination`).toBe(golden);
    }
    expect(fs.existsSync(join(m.datastore, 'vm1'))).toBe(false);
    expect(fs.existsSync(join(m.datastore, 'vm2'))).toBe(false);
  });

  it("plans only the homes of libvirt's domains directly under the directory; excluding them leaves nothing (exit 2)", async () => {
    const m = await vmHomeOnFerry();
    await fsp.mkdir(join(m.datastore, 'not-a-domain'));
    await fsp.writeFile(join(m.datastore, 'not-a-domain', 'f'), 'x');
    const name = domainName();
    const xml = join(m.root, 'evacuate.xml');
    await fsp.writeFile(xml, domainXml({ name, kernel: m.kernel, initrd: m.initrd, params: {}, disks: [m.disk], console: join(m.root, 'c.log') }));
    defined.push(name);
    expect((await virsh(['define', xml])).code).toBe(0);
    const r = await m.cli(['evacuate', m.mountpoint, '--domains', '--to', join(m.root, 'b'), '--dry-run', '--json'], { LIBVIRT_DEFAULT_URI: URI });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n').map((line) => JSON.parse(line));
    expect(lines.filter((l) => l.type === 'domain')).toEqual([{ type: 'domain', domain: name, home: m.home }]);
    expect(lines.at(-1).homes.map((h: { name: string }) => h.name)).toEqual(['vm1']);
    const none = await m.cli(['evacuate', m.mountpoint, '--domains', '--exclude', 'vm*', '--to', join(m.root, 'b')], { LIBVIRT_DEFAULT_URI: URI });
    expect(none.stderr).toBe('ferry: nothing to evacuate in /: --exclude left out every home\n');
    expect(none.code).toBe(2);
    expect(fs.existsSync(join(m.root, 'b', 'vm1'))).toBe(false);
  });
});

describe('ferry migrate --domain without libvirt, or with a path too', () => {
  it('refuses cleanly when virsh is not installed', async () => {
    const m = await mountFerry();
    mounts.push(m);
    // The CLI runs as process.execPath: it needs no PATH, and this one has no virsh in it.
    const empty = join(m.root, 'empty-path');
    await fsp.mkdir(empty);
    const r = await m.cli(['migrate', '--domain', 'vm1', '--to', join(m.root, 'b')], { PATH: empty });
    expect(r.stderr).toBe("ferry: libvirt's virsh is not installed: --domain needs it (or name the VM's directory instead)\n");
    expect(r.code).toBe(2);
  });

  it('refuses --domain together with a path, and neither', async () => {
    const m = await mountFerry();
    mounts.push(m);
    const both = await m.cli(['migrate', join(m.mountpoint, 'x'), '--domain', 'vm1', '--to', join(m.root, 'b')]);
    expect(both.stderr).toBe(`ferry: give either <path> or --domain, not both (${join(m.mountpoint, 'x')}, --domain vm1)\n`);
    expect(both.code).toBe(2);
    const neither = await m.cli(['migrate', '--to', join(m.root, 'b')]);
    expect(neither.stderr).toBe('ferry: missing <path>: which directory or file inside a ferry mount (or --domain <name>)?\n');
    expect(neither.code).toBe(2);
  });
});
