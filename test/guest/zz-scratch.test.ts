import { it, expect } from 'vitest';
import { bootGuest, createImage } from '../helpers/guest.js';
const D = '/tmp/gscratch-enospc';
it('enospc', async () => {
  const image = `${D}/full.raw`;
  await createImage(image, 'raw', 32 << 20);
  const g = await bootGuest({ image, params: { seed: 1, writes: 3000, region: 16 << 20, direct: true }, timeoutMs: 60_000 });
  const r = await g.result;
  console.log(JSON.stringify(r.report), r.timing);
}, 120_000);
it('enospc buffered', async () => {
  const image = `${D}/full.raw`;
  const g = await bootGuest({ image, params: { seed: 2, writes: 3000, region: 16 << 20 }, timeoutMs: 60_000 });
  const r = await g.result;
  console.log(JSON.stringify(r.report), r.timing);
}, 120_000);
it('timeout', async () => {
  const g = await bootGuest({ image: `${D}/full.raw`, params: { seed: 1, writes: 3000, start_delay: 30 }, timeoutMs: 8000 });
  await g.ready;
  await expect(g.result).rejects.toThrow(/timed out/);
  await expect(g.started).rejects.toThrow(/exited before/);
}, 120_000);
