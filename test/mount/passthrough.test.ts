import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { mountFerry, type TestMount } from '../helpers/mounts.js';
import { run } from '../helpers/cli.js';

let m: TestMount;
const inMount = (p: string) => join(m.mountpoint, p);
const inStore = (p: string) => join(m.datastore, p);

async function errnoOf(fn: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await fn();
    return undefined;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code;
  }
}

function sha(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex');
}

beforeAll(async () => {
  m = await mountFerry({ args: ['--allow-other'] });
});
afterAll(async () => {
  await m?.stop();
});

describe('passthrough: bytes', () => {
  it('writes random ranges of a 256 MiB sparse file exactly as the datastore stores them', async () => {
    const size = 256 << 20;
    const fd = fs.openSync(inMount('sparse.img'), 'w+');
    fs.ftruncateSync(fd, size);
    // The bytes written, kept apart from both (later writes over earlier ones, as the file has them).
    const model = Buffer.alloc(size);
    const written: [number, number][] = [];
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
    for (let i = 0; i < 200; i++) {
      const length = 1 + rand(300_000);
      const offset = rand(size - length);
      const data = randomBytes(length);
      fs.writeSync(fd, data, 0, length, offset);
      data.copy(model, offset);
      written.push([offset, length]);
    }
    fs.closeSync(fd);
    const viaMount = fs.openSync(inMount('sparse.img'), 'r');
    const viaStore = fs.openSync(inStore('sparse.img'), 'r');
    for (const [offset, length] of written) {
      const a = Buffer.alloc(length);
      const b = Buffer.alloc(length);
      fs.readSync(viaMount, a, 0, length, offset);
      fs.readSync(viaStore, b, 0, length, offset);
      expect(a.equals(model.subarray(offset, offset + length))).toBe(true);
      expect(b.equals(model.subarray(offset, offset + length))).toBe(true);
    }
    fs.closeSync(viaMount);
    fs.closeSync(viaStore);
    // Whole-file equality with the model, and the file stays sparse in the datastore.
    const sum = createHash('sha256').update(model).digest('hex');
    const [hm, hs] = await Promise.all([run('sha256sum', [inMount('sparse.img')]), run('sha256sum', [inStore('sparse.img')])]);
    expect([hm.stdout.split(' ')[0], hs.stdout.split(' ')[0]]).toEqual([sum, sum]);
    const st = fs.statSync(inStore('sparse.img'));
    expect(st.size).toBe(size);
    expect(st.blocks * 512).toBeLessThan(size / 2);
  });

  it('reads what the datastore holds and reports its size and inode', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 17);
    await fsp.writeFile(inStore('direct.bin'), data);
    expect(sha(await fsp.readFile(inMount('direct.bin')))).toBe(sha(data));
    const [a, b] = [fs.statSync(inMount('direct.bin')), fs.statSync(inStore('direct.bin'))];
    expect(a.size).toBe(b.size);
    expect(a.ino).toBe(b.ino);
    expect(a.mode).toBe(b.mode);
  });

  it('serves several writer processes at once', async () => {
    const writers = 4;
    const chunk = 1 << 20;
    const script = `const fs=require('fs');const [file,idx,chunk]=process.argv.slice(1);const fd=fs.openSync(file,'r+');const b=Buffer.alloc(+chunk,+idx+1);for(let r=0;r<8;r++)fs.writeSync(fd,b,0,b.length,(+idx*8+r)*+chunk);fs.closeSync(fd);`;
    await fsp.writeFile(inMount('shared.img'), Buffer.alloc(0));
    const results = await Promise.all(Array.from({ length: writers }, (_, i) => run(process.execPath, ['-e', script, inMount('shared.img'), String(i), String(chunk)])));
    expect(results.map((r) => r.code)).toEqual([0, 0, 0, 0]);
    const content = await fsp.readFile(inStore('shared.img'));
    expect(content.length).toBe(writers * 8 * chunk);
    for (let i = 0; i < writers; i++) {
      const region = content.subarray(i * 8 * chunk, (i + 1) * 8 * chunk);
      expect(region.every((byte) => byte === i + 1)).toBe(true);
    }
  });
});

describe('passthrough: namespace and errors', () => {
  it('creates, renames, links and removes entries in the datastore', async () => {
    await fsp.mkdir(inMount('vm1/sub'), { recursive: true, mode: 0o750 });
    expect(fs.statSync(inStore('vm1/sub')).isDirectory()).toBe(true);
    expect(fs.statSync(inStore('vm1/sub')).mode & 0o777).toBe(0o750);
    await fsp.writeFile(inMount('vm1/a.txt'), 'alpha');
    await fsp.rename(inMount('vm1/a.txt'), inMount('vm1/sub/b.txt'));
    expect(await fsp.readFile(inStore('vm1/sub/b.txt'), 'utf8')).toBe('alpha');
    await fsp.link(inMount('vm1/sub/b.txt'), inMount('vm1/hard.txt'));
    expect(fs.statSync(inMount('vm1/hard.txt')).nlink).toBe(2);
    expect(fs.statSync(inStore('vm1/hard.txt')).ino).toBe(fs.statSync(inStore('vm1/sub/b.txt')).ino);
    await fsp.symlink('sub/b.txt', inMount('vm1/link'));
    expect(await fsp.readlink(inMount('vm1/link'))).toBe('sub/b.txt');
    expect(await fsp.readlink(inStore('vm1/link'))).toBe('sub/b.txt');
    expect(await fsp.readFile(inMount('vm1/link'), 'utf8')).toBe('alpha');
    expect((await fsp.readdir(inMount('vm1'))).sort()).toEqual(['hard.txt', 'link', 'sub']);
    await fsp.chmod(inMount('vm1/hard.txt'), 0o640);
    expect(fs.statSync(inStore('vm1/sub/b.txt')).mode & 0o777).toBe(0o640);
    await fsp.chown(inMount('vm1/hard.txt'), 1234, 5678);
    expect([fs.statSync(inStore('vm1/hard.txt')).uid, fs.statSync(inStore('vm1/hard.txt')).gid]).toEqual([1234, 5678]);
    await fsp.truncate(inMount('vm1/hard.txt'), 2);
    expect(await fsp.readFile(inStore('vm1/sub/b.txt'), 'utf8')).toBe('al');
    await fsp.unlink(inMount('vm1/hard.txt'));
    await fsp.unlink(inMount('vm1/link'));
    expect(fs.existsSync(inStore('vm1/hard.txt'))).toBe(false);
    await fsp.rm(inMount('vm1'), { recursive: true });
    expect(fs.existsSync(inStore('vm1'))).toBe(false);
  });

  it('link counts, ctime, mode and owner are right at once through every name of a hard-linked file (issue 19)', async () => {
    await fsp.writeFile(inMount('h1'), 'x');
    expect(fs.statSync(inMount('h1')).nlink).toBe(1);
    await fsp.link(inMount('h1'), inMount('h2'));
    expect(fs.statSync(inMount('h1')).nlink).toBe(2);
    const before = fs.statSync(inMount('h1'), { bigint: true }).ctimeNs;
    await new Promise((r) => setTimeout(r, 20));
    await fsp.chmod(inMount('h2'), 0o640);
    await fsp.chown(inMount('h2'), 65534, 65534);
    const after = fs.statSync(inMount('h1'), { bigint: true });
    expect([Number(after.mode) & 0o7777, Number(after.uid), Number(after.gid)]).toEqual([0o640, 65534, 65534]);
    expect(after.ctimeNs).toBeGreaterThan(before);
    await fsp.unlink(inMount('h2'));
    expect(fs.statSync(inMount('h1')).nlink).toBe(1);
    await fsp.unlink(inMount('h1'));
  });

  it('returns the datastore errno unchanged', async () => {
    await fsp.mkdir(inMount('errs/full'), { recursive: true });
    await fsp.writeFile(inMount('errs/full/x'), 'x');
    expect(await errnoOf(() => fsp.readFile(inMount('errs/missing')))).toBe('ENOENT');
    expect(await errnoOf(() => fsp.mkdir(inMount('errs/full')))).toBe('EEXIST');
    expect(await errnoOf(() => fsp.rmdir(inMount('errs/full')))).toBe('ENOTEMPTY');
    expect(await errnoOf(() => fsp.rmdir(inMount('errs/full/x')))).toBe('ENOTDIR');
    expect(await errnoOf(() => fsp.unlink(inMount('errs/full')))).toBe('EISDIR');
    expect(await errnoOf(() => fsp.open(inMount('errs/full/x'), fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_WRONLY))).toBe('EEXIST');
    expect(await errnoOf(() => fsp.readlink(inMount('errs/full/x')))).toBe('EINVAL');
    expect(await errnoOf(() => fsp.rename(inMount('errs/full'), inMount('errs/full/x/y')))).toBe('ENOTDIR');
    await fsp.writeFile(inMount('errs/secret'), 'no');
    await fsp.chmod(inMount('errs/secret'), 0o600);
    await fsp.chmod(inMount('errs'), 0o755);
    const asNobody = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'cat', inMount('errs/secret')]);
    expect(asNobody.code).not.toBe(0);
    expect(asNobody.stderr).toContain('Permission denied');
  });

  it('answers statfs with the datastore filesystem figures', async () => {
    const [a, b] = [await fsp.statfs(m.mountpoint), await fsp.statfs(m.datastore)];
    expect(a.bsize * a.blocks).toBe(b.bsize * b.blocks);
    expect(Math.abs(a.bavail * a.bsize - b.bavail * b.bsize)).toBeLessThan(64 << 20);
  });

  it('keeps working on open files that are renamed or unlinked', async () => {
    const fd = fs.openSync(inMount('open.img'), 'w+');
    fs.writeSync(fd, Buffer.from('before'), 0, 6, 0);
    await fsp.rename(inMount('open.img'), inMount('moved.img'));
    fs.writeSync(fd, Buffer.from('after!'), 0, 6, 6);
    expect(await fsp.readFile(inStore('moved.img'), 'utf8')).toBe('beforeafter!');
    const dirty = await m.dirty('moved.img');
    expect(dirty.extents).toEqual([[0, 12]]);
    await fsp.unlink(inMount('moved.img'));
    fs.writeSync(fd, Buffer.from('ghost'), 0, 5, 12);
    expect(fs.fstatSync(fd).size).toBe(17);
    const back = Buffer.alloc(17);
    fs.readSync(fd, back, 0, 17, 0);
    expect(back.toString()).toBe('beforeafter!ghost');
    fs.closeSync(fd);
    expect(fs.existsSync(inMount('moved.img'))).toBe(false);
    expect((await fsp.readdir(m.datastore)).filter((n) => n.startsWith('.fuse_hidden'))).toEqual([]);
  });

  it('appends where the file ends, with O_APPEND through the mount', async () => {
    await fsp.writeFile(inMount('log.txt'), 'one\n');
    await fsp.appendFile(inMount('log.txt'), 'two\n');
    await fsp.appendFile(inMount('log.txt'), 'three\n');
    expect(await fsp.readFile(inStore('log.txt'), 'utf8')).toBe('one\ntwo\nthree\n');
  });
});

describe('passthrough: paths near PATH_MAX', () => {
  // Issue 15: the daemon joined the datastore's path and the mount's path into one backing path, which passed
  // PATH_MAX (4096 bytes with its NUL) where the mount's own path did not: ENAMETOOLONG where ext4 succeeds.
  it('files and directories at a mount path of about 4070 bytes work as on the backing filesystem', async () => {
    const name = (i: number) => `${String(i).padStart(2, '0')}${'d'.repeat(251)}`;
    const depth = 16; // 16 components of 253 bytes: a 4064-byte directory path in the mount
    const script = `
set -e
cd "$1"
for i in $(seq -w 0 ${depth - 1}); do mkdir "\${i}${'d'.repeat(251)}"; cd "\${i}${'d'.repeat(251)}"; done
printf 'deep data' > f
cat f; echo
ln f g
ln -s f s
chmod 600 f
touch -m -d '2001-02-03 04:05:06' f
mv g h
stat -c '%s %a %h %Y' f
readlink s
rm f h s
ls -A | wc -l
`;
    try {
      const result = await run('bash', ['-c', script, 'deep', inMount('')]);
      expect(result.stderr).toBe('');
      expect(result.code).toBe(0);
      const mtime = new Date('2001-02-03T04:05:06').getTime() / 1000;
      expect(result.stdout.split('\n')).toEqual(['deep data', `9 600 2 ${mtime}`, 'f', '0', '']);
      // The backing path of the deepest directory is itself past PATH_MAX: look from inside, a level at a time.
      const dirs = Array.from({ length: depth }, (_, i) => name(i));
      const inBacking = await run('bash', ['-c', `cd "$1" && for d in ${dirs.join(' ')}; do cd "$d"; done && ls -A | wc -l`, 'deep', inStore('')]);
      expect(inBacking.stdout.trim()).toBe('0');
      const removed = await run('bash', ['-c', `cd "$1" && rm -rf ${name(0)}`, 'deep', inMount('')]);
      expect(removed.code, removed.stderr).toBe(0);
    } finally {
      // rm -rf works a level at a time (fd-relative); Node's recursive rm of the scratch dir would not.
      await run('bash', ['-c', `cd "$1" && rm -rf ${name(0)}`, 'deep', inStore('')]);
    }
    expect(await fsp.readdir(inStore(''))).not.toContain(name(0));
  });

  it('a path of PATH_MAX - 1 bytes from the mount root, the most one syscall takes, works as on ext4', async () => {
    // 16 names of 255 bytes: 4095 bytes with their slashes. libfuse hands the daemon "/" + that: 4096 bytes.
    const names = Array.from({ length: 16 }, (_, i) => `${String(i).padStart(2, '0')}${'e'.repeat(253)}`);
    const full = names.join('/');
    expect(Buffer.byteLength(full)).toBe(4095);
    const script = `set -e; cd "$1"; mkdir -p "${names.slice(0, -1).join('/')}"; printf data > "${full}"; chmod 642 "${full}"; stat -c %a "${full}"; cat "${full}"; echo; rm "${full}"; printf x > "${full}x" || true`;
    try {
      const result = await run('bash', ['-c', script, 'max', inMount('')]);
      expect(result.stdout).toBe('642\ndata\n');
      expect(result.stderr).toContain('File name too long');
      expect(result.code).toBe(0);
    } finally {
      await run('bash', ['-c', `cd "$1" && rm -rf ${names[0]}`, 'max', inStore('')]);
    }
  });
});
