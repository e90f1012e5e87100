import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type FuseClass from 'fuse-native';
import { Beneath, Root, rootOf } from '../../src/util/beneath.js';

// The daemon's syscalls beneath a root (Fuse.io, ferry's addon) on real files: a symlink anywhere on the way, or as
// the last component of a call that must not follow, never leads outside the root.
const Fuse = createRequire(import.meta.url)('fuse-native') as typeof FuseClass;
const at = new Beneath(Fuse.io);
const top = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-beneath-'));
const root = path.join(top, 'root');
const outside = path.join(top, 'outside');
let rootFd: Root;

afterAll(() => fs.rmSync(top, { recursive: true, force: true }));

beforeEach(() => {
  fs.rmSync(root, { recursive: true, force: true });
  fs.rmSync(outside, { recursive: true, force: true });
  fs.mkdirSync(path.join(root, 'dir'), { recursive: true });
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(outside, 'secret'), 'secret', { mode: 0o600 });
  fs.chmodSync(path.join(outside, 'secret'), 0o600);
  fs.symlinkSync(outside, path.join(root, 'out')); // a directory's name that leads out
  fs.symlinkSync(path.join(outside, 'secret'), path.join(root, 'dir/link')); // a last component that leads out
  rootFd = new Root(root);
});

const inRoot = <T>(rel: string, work: (fd: number, rel: string) => Promise<T>) => rootFd.use(rel, work);
const code = (p: Promise<unknown>) => p.then(() => 'ok', (err: NodeJS.ErrnoException) => err.code);
const secret = () => fs.statSync(path.join(outside, 'secret'));

describe('resolution beneath a root', () => {
  it('refuses a symlink on the way, for every kind of call', async () => {
    const before = secret();
    expect(await code(inRoot('out/secret', (fd, rel) => at.open(fd, rel, fs.constants.O_RDONLY)))).toBe('ELOOP');
    expect(await code(inRoot('out/secret', (fd, rel) => at.chmod(fd, rel, 0o4777)))).toBe('ELOOP');
    expect(await code(inRoot('out/secret', (fd, rel) => at.chown(fd, rel, 65534, 65534)))).toBe('ELOOP');
    expect(await code(inRoot('out/secret', (fd, rel) => at.utimens(fd, rel, [1, 0], [1, 0])))).toBe('ELOOP');
    expect(await code(inRoot('out/secret', (fd, rel) => at.setxattr(fd, rel, 'user.x', Buffer.from('y'))))).toBe('ELOOP');
    expect(await code(inRoot('out/secret', (fd, rel) => at.unlink(fd, rel)))).toBe('ELOOP');
    expect(await code(inRoot('out/new', (fd, rel) => at.open(fd, rel, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_WRONLY, 0o600)))).toBe('ELOOP');
    expect(await code(inRoot('out/new', (fd, rel) => at.mkdir(fd, rel, 0o700)))).toBe('ELOOP');
    expect(await code(inRoot('out/new', (fd, rel) => at.symlink('x', fd, rel)))).toBe('ELOOP');
    expect(await code(inRoot('out/new', (fd, rel) => at.mknod(fd, rel, fs.constants.S_IFIFO | 0o600, 0)))).toBe('ELOOP');
    expect(await code(rootFd.use('dir/f', (fd, rel) => at.link(fd, 'out/secret', fd, rel)))).toBe('ELOOP');
    expect(await code(rootFd.use('out/g', (fd, rel) => at.rename(fd, 'out/secret', fd, rel)))).toBe('ELOOP');
    expect(await code(inRoot('../outside/secret', (fd, rel) => at.open(fd, rel, fs.constants.O_RDONLY)))).toBe('EXDEV');
    expect(await code(inRoot(path.join(outside, 'secret'), (fd, rel) => at.open(fd, rel, fs.constants.O_RDONLY)))).toBe('EXDEV');
    expect(fs.readdirSync(outside)).toEqual(['secret']);
    const after = secret();
    expect([after.mode, after.uid, after.mtimeMs, after.ino]).toEqual([before.mode, before.uid, before.mtimeMs, before.ino]);
  });

  it('acts on a symlink itself, never on its target', async () => {
    const before = secret();
    // chmod: refused, as Linux >= 6.6 refuses it for ext4 (glibc's fchmodat(AT_SYMLINK_NOFOLLOW)).
    expect(await code(inRoot('dir/link', (fd, rel) => at.chmod(fd, rel, 0o666)))).toBe('EOPNOTSUPP');
    await inRoot('dir/link', (fd, rel) => at.chown(fd, rel, 65534, 65534));
    await inRoot('dir/link', (fd, rel) => at.utimens(fd, rel, [1, 0], [1, 0]));
    expect(await code(inRoot('dir/link', (fd, rel) => at.open(fd, rel, fs.constants.O_RDONLY)))).toBe('ELOOP');
    const link = fs.lstatSync(path.join(root, 'dir/link'));
    expect([link.uid, link.mtimeMs]).toEqual([65534, 1000]);
    expect(await inRoot('dir/link', (fd, rel) => at.readlink(fd, rel))).toBe(path.join(outside, 'secret'));
    expect((await inRoot('dir/link', (fd, rel) => at.lstat(fd, rel))).isSymbolicLink()).toBe(true);
    await inRoot('dir/link2', (fd, rel) => at.link(fd, 'dir/link', fd, rel));
    expect(fs.lstatSync(path.join(root, 'dir/link2')).isSymbolicLink()).toBe(true);
    const after = secret();
    expect([after.mode & 0o7777, after.uid, after.mtimeMs, after.nlink]).toEqual([0o600, before.uid, before.mtimeMs, 1]);
  });

  it('serves a one-file root through its parent, and the root itself as ""', async () => {
    fs.writeFileSync(path.join(root, 'dir/disk'), 'data');
    const file = rootOf(path.join(root, 'dir/disk'));
    expect((await file.use('', (fd, rel) => at.lstat(fd, rel))).size).toBe(4n);
    expect((await rootFd.use('', (fd, rel) => at.lstat(fd, rel))).isDirectory()).toBe(true);
    file.retire();
    expect(await code(file.use('', (fd, rel) => at.lstat(fd, rel)))).toBe('ENOENT');
  });
});
