// Shadow.flush on a home of many files (issue 27: it opened every file at once, EMFILE on large homes): run in a
// child whose fd limit is far below the number of files, it must fsync them all.
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const CHILD = fileURLToPath(new URL('./fixtures/flush-copy.mjs', import.meta.url));
const top = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-flush-'));
afterAll(() => fs.rmSync(top, { recursive: true, force: true }));

describe('Shadow.flush', () => {
  it('fsyncs a copy of 3000 files and 30 directories with 256 fds', () => {
    for (let d = 0; d < 30; d++) {
      const dir = path.join(top, 'copy', `d${d}`);
      fs.mkdirSync(dir, { recursive: true });
      for (let f = 0; f < 100; f++) fs.writeFileSync(path.join(dir, `f${f}`), 'x');
    }
    const r = spawnSync('prlimit', ['--nofile=256:256', process.execPath, CHILD, top], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect([r.status, r.stdout]).toEqual([0, 'flushed\n']);
  });
});
