// A copy window belongs to one destination file (issue 27: "mirror windows keyed by inode number outlive the
// inode"): an inode placed afresh gets a new window, and the old one is retired, never reused, closed at the end.
import { afterEach, describe, expect, it } from 'vitest';
import { fstatSync, openSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Mirrors } from '../../src/migrate/mirrors.js';

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

const closed = (fd: number) => {
  try {
    fstatSync(fd);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EBADF';
  }
};

describe('Mirrors', () => {
  it('keeps a window while its copy stays placed, retires it when the inode is placed afresh, closes both at the end', async () => {
    dir = await mkdtemp(join(tmpdir(), 'ferry-unit-mirrors-'));
    const opened: number[] = [];
    const open = (name: string) => async () => {
      const fd = openSync(join(dir!, name), 'w+');
      opened.push(fd);
      return fd;
    };
    const mirrors = new Mirrors(undefined);
    const first = await mirrors.windowFor(5n, true, open('a'));
    expect(await mirrors.windowFor(5n, false, open('unused'))).toBe(first);
    const second = await mirrors.windowFor(5n, true, open('b'));
    expect(second).not.toBe(first);
    expect(second.fd).not.toBe(first.fd);
    expect(opened).toEqual([first.fd, second.fd]);
    // The retired window stays open: a write through an old handle may still be mirroring through it.
    expect(closed(first.fd)).toBe(false);
    mirrors.closeAll();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect([closed(first.fd), closed(second.fd)]).toEqual([true, true]);
  });

  it('a failure on a retired window still fails the migration', async () => {
    dir = await mkdtemp(join(tmpdir(), 'ferry-unit-mirrors-'));
    const mirrors = new Mirrors(undefined);
    const old = await mirrors.windowFor(7n, true, async () => openSync(join(dir!, 'a'), 'w+'));
    await mirrors.windowFor(7n, true, async () => openSync(join(dir!, 'b'), 'w+'));
    old.fail(Object.assign(new Error('mirror write failed'), { code: 'ENOSPC' }));
    expect(() => mirrors.check()).toThrow('mirror write failed');
    mirrors.closeAll();
  });
});
