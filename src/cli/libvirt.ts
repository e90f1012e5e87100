import { execFile } from 'node:child_process';
import { dirname, isAbsolute, resolve, sep } from 'node:path';
import { UserError, errnoCode } from '../util/user-error.js';
import { locate } from './locate.js';

/** What `ferry migrate --domain` learns from libvirt: the files of a domain that a move of its home must carry. */
export interface DomainFiles {
  /** Sources of the domain's file-backed disks, as libvirt names them. */
  disks: string[];
  /** Its UEFI variable store, when it has one. */
  nvram: string[];
}

/** Runs virsh (honouring LIBVIRT_DEFAULT_URI like any virsh call); absent virsh and unknown domains are refusals. */
function virsh(args: string[], domain: string): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    execFile('virsh', args, { timeout: 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (!err) return resolvePromise(stdout);
      if (errnoCode(err) === 'ENOENT') return reject(new UserError("libvirt's virsh is not installed: --domain needs it (or name the VM's directory instead)"));
      const message = stderr.trim().split('\n').filter(Boolean).join('; ').replace(/^error: /, '');
      if (/failed to get domain|Domain not found|no domain with matching name/i.test(stderr)) {
        return reject(new UserError(`libvirt has no domain named '${domain}' (see \`virsh list --all\`)`));
      }
      reject(new UserError(`virsh ${args.join(' ')} failed: ${message || err.message}`, 1));
    });
  });
}

/** Sources of file disks in `virsh domblklist --details` output (columns: Type Device Target Source). */
export function parseDomblklist(text: string): string[] {
  const files: string[] = [];
  for (const line of text.split('\n')) {
    const match = /^\s*(\S+)\s+(\S+)\s+(\S+)\s+(.+?)\s*$/.exec(line);
    if (!match || match[1] !== 'file') continue;
    const source = match[4];
    if (source !== '-') files.push(source);
  }
  return files;
}

function unescapeXml(text: string): string {
  return text.replace(/&(lt|gt|quot|apos|amp|#(\d+)|#x([0-9a-f]+));/gi, (entity, name: string, dec?: string, hex?: string) => {
    if (dec) return String.fromCodePoint(Number(dec));
    if (hex) return String.fromCodePoint(parseInt(hex, 16));
    return { lt: '<', gt: '>', quot: '"', apos: "'", amp: '&' }[name.toLowerCase()] ?? entity;
  });
}

/** The NVRAM file(s) of `virsh dumpxml` output: `<nvram ...>path</nvram>` (or `<nvram><source file=.../></nvram>`). */
export function parseNvram(xml: string): string[] {
  const files: string[] = [];
  for (const match of xml.matchAll(/<nvram\b[^>]*?(?:\/>|>([\s\S]*?)<\/nvram>)/g)) {
    const body = match[1] ?? '';
    const source = /<source\b[^>]*\bfile=(['"])(.*?)\1/.exec(body);
    const path = source ? source[2] : body.trim();
    if (path && !path.startsWith('<')) files.push(unescapeXml(path));
  }
  return files;
}

/** Every domain libvirt knows, running or not. */
export async function domainNames(): Promise<string[]> {
  return (await virsh(['list', '--all', '--name'], '')).split('\n').map((l) => l.trim()).filter(Boolean);
}

export async function domainFiles(domain: string): Promise<DomainFiles> {
  const disks = parseDomblklist(await virsh(['domblklist', '--details', domain], domain));
  const nvram = parseNvram(await virsh(['dumpxml', domain], domain));
  return { disks, nvram };
}

function within(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith(sep) ? dir : dir + sep);
}

/** The deepest directory that holds every one of `dirs`. */
function commonDirectory(dirs: string[]): string {
  let common = dirs[0];
  for (const dir of dirs.slice(1)) while (!within(dir, common)) common = dirname(common);
  return common;
}

/**
 * The VM home of a libvirt domain: the directory its disk files share, which must lie inside a ferry mount (but
 * not be the mount's root) and hold its NVRAM too. Anything else is refused, naming the files outside.
 */
export async function domainHome(stateDir: string, domain: string): Promise<string> {
  const { disks, nvram } = await domainFiles(domain);
  if (disks.length === 0) throw new UserError(`domain '${domain}' has no file-backed disk: nothing for ferry to move`);
  const relative = [...disks, ...nvram].filter((f) => !isAbsolute(f));
  if (relative.length) throw new UserError(`domain '${domain}' names files by relative path: ${relative.join(', ')}`);
  const files = [...disks, ...nvram].map((f) => resolve(f));

  // Each file must be inside a ferry mount, and all in the same one.
  const outside: string[] = [];
  const mounts = new Map<string, string[]>();
  for (const file of files) {
    const found = await locate(stateDir, file).catch((err: unknown) => {
      if (err instanceof UserError && err.exitCode === 2) return undefined;
      throw err;
    });
    if (!found) outside.push(file);
    else mounts.set(found.record.mountpoint, [...(mounts.get(found.record.mountpoint) ?? []), file]);
  }
  if (outside.length) throw new UserError(`domain '${domain}' has files outside any ferry mount: ${outside.join(', ')} (ferry moves one VM home, all of it inside a ferry mount)`);
  if (mounts.size > 1) {
    const list = [...mounts].map(([mp, fs]) => `${fs.join(', ')} (in ${mp})`).join('; ');
    throw new UserError(`domain '${domain}' has files in more than one ferry mount: ${list}`);
  }
  const [mountpoint] = mounts.keys();
  const home = commonDirectory(disks.map((d) => dirname(resolve(d))));
  if (!within(home, mountpoint) || home === mountpoint) {
    throw new UserError(`domain '${domain}' has no VM home of its own: its disks ${disks.join(', ')} share only ${home}, the mount itself; put them in one directory inside it`);
  }
  const stray = files.filter((f) => !within(f, home));
  if (stray.length) throw new UserError(`domain '${domain}' has files outside its VM home ${home}: ${stray.join(', ')}`);
  return home;
}
