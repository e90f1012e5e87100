import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type FuseClass from 'fuse-native';
import { Beneath, Root } from '../../src/util/beneath.js';
import { removeTree } from '../../src/util/beneath-tree.js';

// Issue 28: the removal of a migration's source (or of its partial copy) never removes a mount point, whether of
// another filesystem or a bind mount of the same one, and never empties one found below the tree it removes.
const Fuse = createRequire(import.meta.url)('fuse-native') as typeof FuseClass;
const at = new Beneath(Fuse.io);
let top: string;
const mounted: string[] = [];

beforeEach(() => {
  top = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-remove-tree-'));
});

afterEach(() => {
  for (const dir of mounted.splice(0).reverse()) execFileSync('umount', ['-l', dir]);
  fs.rmSync(top, { recursive: true, force: true });
});

function mount(args: string[], dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  execFileSync('mount', [...args, dir]);
  mounted.push(dir);
}

function isMountPoint(dir: string): boolean {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((line) => line.split(' ')[4] === dir);
}

function fill(dir: string): void {
  fs.mkdirSync(path.join(dir, 'sub'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'disk.img'), 'data');
  fs.writeFileSync(path.join(dir, 'sub/nvram'), 'vars');
}

async function remove(rel: string): Promise<string | undefined> {
  const root = new Root(top);
  try {
    return await removeTree(at, root, rel);
  } finally {
    root.retire();
  }
}

describe('removeTree and mount points', () => {
  it('a tree that is itself a mount point (another filesystem) is emptied and left in place, its path returned', async () => {
    const mp = path.join(top, 'ds2');
    mount(['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs'], mp);
    fill(mp);
    expect(await remove('ds2')).toBe(mp);
    expect(isMountPoint(mp)).toBe(true);
    expect(fs.readdirSync(mp)).toEqual([]);
    fill(path.join(top, 'vm1'));
    expect(await remove('vm1'), 'an ordinary tree goes whole').toBeUndefined();
    expect(fs.existsSync(path.join(top, 'vm1'))).toBe(false);
  });

  it('a bind mount of the same filesystem at the top: kept too (its st_dev is its parent’s)', async () => {
    const src = path.join(top, 'src');
    fill(src);
    const bind = path.join(top, 'bind');
    mount(['--bind', src], bind);
    expect(fs.statSync(bind).dev).toBe(fs.statSync(top).dev);
    expect(await remove('bind')).toBe(bind);
    expect(isMountPoint(bind)).toBe(true);
    expect(fs.readdirSync(src)).toEqual([]);
  });

  it('a bind mount below the tree fails the removal (EXDEV) with its contents untouched', async () => {
    const src = path.join(top, 'src');
    fill(src);
    const tree = path.join(top, 'tree');
    fs.mkdirSync(tree);
    mount(['--bind', src], path.join(tree, 'inner'));
    await expect(remove('tree')).rejects.toMatchObject({ code: 'EXDEV' });
    expect(fs.readdirSync(src).sort()).toEqual(['disk.img', 'sub']);
    expect(fs.readFileSync(path.join(src, 'sub/nvram'), 'utf8')).toBe('vars');
  });
});
