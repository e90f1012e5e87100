import { describe, expect, it } from 'vitest';
import type { FerryIo } from 'fuse-native';
import { Mover } from '../../src/migrate/mover.js';

// A chunk that fails must not make copy() reject while other chunks still copy in C: the caller closes both fds
// as soon as copy() settles, and a number reused by a guest's open would then receive another file's bytes.
// The io here is a stand-in for Fuse.io's threadpool calls, so that their completion order can be chosen.
describe('Mover.copy', () => {
  it('settles every chunk in flight before it reports the first failure', async () => {
    const pending: (() => void)[] = [];
    let inFlight = 0;
    const io = {
      SEEK_DATA: 3,
      SEEK_HOLE: 4,
      seek: (_fd: number, _offset: number, _whence: number, cb: (err: number, at?: number) => void) => setImmediate(() => cb(0, 1 << 30)),
      copyRange: (_in: number, offset: number, _fdOut: number, _offOut: number, length: number, cb: (err: number, copied?: number) => void) => {
        inFlight++;
        // The first chunk fails at once; the others finish only when the test lets them.
        if (offset === 0) setImmediate(() => ((inFlight--), cb(-5)));
        else pending.push(() => ((inFlight--), cb(0, length)));
      },
    } as unknown as FerryIo;
    const mover = new Mover(new AbortController().signal, io);
    let settled = false;
    const copying = mover.copy(10, 11, [[0, 4 * (4 << 20)]], { sparse: false, throttle: false }).finally(() => (settled = true));
    copying.catch(() => undefined);
    await new Promise((r) => setTimeout(r, 50));
    expect(pending.length).toBe(3);
    expect(settled).toBe(false);
    for (const finish of pending.splice(0)) finish();
    await expect(copying).rejects.toMatchObject({ code: 'EIO' });
    expect(inFlight).toBe(0);
  });
});
