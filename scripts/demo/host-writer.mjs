// A guest stand-in (used by the tests, and by the demo where QEMU cannot run): hammers one file through
// the mount with seeded random writes on a single fd, keeps its own model of the bytes, and on SIGTERM
// writes the model out and reports what it saw, including its longest write stall.
// usage: node host-writer.mjs <file> <modelOut> <seed> <maxWrite> <bytesPerSec|0> [fsyncEvery] [span: bytes of the file written]
import fs from 'node:fs/promises';

const [file, modelOut, seedArg, maxWriteArg, rateArg, fsyncEveryArg, spanArg] = process.argv.slice(2);
let seed = Number(seedArg) >>> 0 || 1;
const random = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
const maxWrite = Number(maxWriteArg);
const rate = Number(rateArg);
const fsyncEvery = Number(fsyncEveryArg ?? 0);

const handle = await fs.open(file, 'r+');
const model = await handle.readFile();
const size = Math.min(model.length, Number(spanArg) || model.length);
let stopping = false;
process.on('SIGTERM', () => (stopping = true));

const stats = { writes: 0, bytes: 0, errors: [], fsyncs: 0, maxStallMs: 0 };
const started = Date.now();
process.stdout.write('ready\n');
while (!stopping) {
  const length = 1 + Math.floor(random() * maxWrite);
  const offset = Math.floor(random() * (size - length));
  const data = Buffer.allocUnsafe(length);
  let i = 0;
  for (; i + 4 <= length; i += 4) data.writeUInt32LE((random() * 2 ** 32) >>> 0, i);
  for (; i < length; i++) data[i] = (random() * 256) | 0;
  try {
    const t0 = process.hrtime.bigint();
    const { bytesWritten } = await handle.write(data, 0, length, offset);
    stats.maxStallMs = Math.max(stats.maxStallMs, Number(process.hrtime.bigint() - t0) / 1e6);
    if (bytesWritten !== length) stats.errors.push(`short write ${bytesWritten}/${length} at ${offset}`);
    data.copy(model, offset, 0, bytesWritten);
    stats.writes++;
    stats.bytes += bytesWritten;
    if (fsyncEvery && stats.writes % fsyncEvery === 0) {
      await handle.datasync();
      stats.fsyncs++;
    }
  } catch (err) {
    stats.errors.push(String(err));
    if (stats.errors.length > 20) break;
  }
  if (rate > 0) {
    const due = started + (stats.bytes / rate) * 1000 - Date.now();
    if (due > 0) await new Promise((r) => setTimeout(r, due));
  } else if (stats.writes % 64 === 0) {
    await new Promise((r) => setImmediate(r));
  }
}
try {
  await handle.datasync();
  await handle.close();
} catch (err) {
  stats.errors.push(`close: ${err}`);
}
await fs.writeFile(modelOut, model);
process.stdout.write(JSON.stringify(stats) + '\n');
