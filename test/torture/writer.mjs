// One torture writer: a process of its own (never the daemon's) doing seeded random file operations through
// the mount on the files it owns (names `w<id>-<n>` in the VM homes), keeping a model of every acknowledged
// operation. It checks each read against the model as it goes. On SIGTERM, or when the daemon is gone, it
// writes the model and exits.
// usage: node writer.mjs <json config: { id, seed, mount, homes: string[], out: string, opsLog: string, crossLinks, reuse }>
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const config = JSON.parse(process.argv[2]);
const { id, mount, homes, out } = config;
let seed = config.seed >>> 0 || 1;
// mulberry32: the op sequence is a function of the seed (and of which operations the mount refused).
const random = () => {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
};
const pick = (list) => list[Math.floor(random() * list.length)];
const KiB = 1024;
const MAX_SIZE = 3 << 20;
/** The daemon is gone (killed by the conductor): the operation in flight may or may not have happened. */
const DAEMON_GONE = new Set(['ENOTCONN', 'ECONNABORTED']);

/** name (home/w<id>-<n>) -> inode key; inode key -> content. Rebuilt from the mount at start (verified truth). */
const names = new Map();
const inodes = new Map();
const fds = new Map();
let next = 0;
const log = fs.openSync(config.opsLog, 'a');
const note = (entry) => fs.writeSync(log, JSON.stringify({ w: id, t: Date.now(), ...entry }) + '\n');

function scan() {
  const byIno = new Map();
  for (const home of homes) {
    for (const entry of fs.readdirSync(join(mount, home))) {
      if (!entry.startsWith(`w${id}-`)) continue;
      const name = `${home}/${entry}`;
      const st = fs.statSync(join(mount, name));
      if (!byIno.has(st.ino)) byIno.set(st.ino, { key: `i${next++}`, content: fs.readFileSync(join(mount, name)) });
      names.set(name, byIno.get(st.ino).key);
      next = Math.max(next, Number(entry.slice(`w${id}-`.length)) + 1);
    }
  }
  for (const { key, content } of byIno.values()) inodes.set(key, content);
}

function randomBytes(length) {
  const data = Buffer.allocUnsafe(length);
  let i = 0;
  for (; i + 4 <= length; i += 4) data.writeUInt32LE((random() * 2 ** 32) >>> 0, i);
  for (; i < length; i++) data[i] = (random() * 256) | 0;
  return data;
}

function writeAt(content, offset, data) {
  const end = offset + data.length;
  const grown = end > content.length ? Buffer.concat([content, Buffer.alloc(end - content.length)]) : content;
  data.copy(grown, offset);
  return grown;
}

function resize(content, size) {
  return size <= content.length ? Buffer.from(content.subarray(0, size)) : Buffer.concat([content, Buffer.alloc(size - content.length)]);
}

function fdFor(name, direct = false) {
  const key = `${names.get(name)}${direct ? ':d' : ''}`;
  if (!fds.has(key)) fds.set(key, fs.openSync(join(mount, name), fs.constants.O_RDWR | (direct ? fs.constants.O_DIRECT : 0)));
  return fds.get(key);
}

function closeFds(key) {
  for (const suffix of ['', ':d']) {
    const fd = fds.get(key + suffix);
    if (fd === undefined) continue;
    fs.closeSync(fd);
    fds.delete(key + suffix);
  }
}

/** Names the op in flight may change: if the daemon dies under it, these are uncertain, the rest is not. */
let touching = [];
const touch = (...list) => {
  touching = list;
  return list[0];
};
const freshName = (home) => `${home}/w${id}-${next++}`;
const mine = () => [...names.keys()];
const homeOf = (name) => name.slice(0, name.indexOf('/'));

/**
 * Runs `change`, which may take the last name of the inode `key`: half the time with the inode's handles still
 * open (the mount then hides it until they close), closing them after.
 */
function withHandles(key, change) {
  const open = random() < 0.5;
  if (!open) closeFds(key);
  change();
  if (open) closeFds(key);
  return open;
}

function removeName(name) {
  const key = names.get(name);
  const open = withHandles(key, () => fs.unlinkSync(join(mount, name)));
  names.delete(name);
  if (![...names.values()].includes(key)) inodes.delete(key);
  return { name, open };
}

/** Stores `data` at `offset` through a shared mapping of the whole file, then msync. */
const MMAP_WRITE = `
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
m = mmap.mmap(fd, 0)
data = sys.stdin.buffer.read()
m[int(sys.argv[2]):int(sys.argv[2]) + len(data)] = data
m.flush()
m.close()
os.close(fd)
`;

/** A helper process failed: because the daemon is gone (the op in flight is uncertain), or for real. */
function helperFailed(what, r, name) {
  let code = 'E' + what.toUpperCase().replace(/[^A-Z]/g, '');
  try {
    fs.statSync(join(mount, name));
  } catch (err) {
    if (DAEMON_GONE.has(err.code)) code = err.code;
  }
  return Object.assign(new Error(`${what}: ${r.signal ?? r.status} ${String(r.stderr).trim()}`), { code });
}

/** A write that stopped short: because the daemon died in the middle (the op in flight is uncertain), or for real. */
function shortWrite(what, written, length, name) {
  let code = 'ESHORT';
  try {
    fs.statSync(join(mount, name));
  } catch (err) {
    if (DAEMON_GONE.has(err.code)) code = err.code;
  }
  return Object.assign(new Error(`${what} ${written}/${length}`), { code });
}

/** Each op returns what it did (for the log); it changes the model only after the mount acknowledged it. */
const ops = {
  write() {
    const name = touch(pick(mine()));
    const key = names.get(name);
    const content = inodes.get(key);
    const length = 1 + Math.floor(random() * 64 * KiB);
    const offset = Math.floor(random() * Math.min(content.length + 64 * KiB, MAX_SIZE - length));
    const data = randomBytes(length);
    const written = fs.writeSync(fdFor(name), data, 0, length, offset);
    if (written !== length) throw shortWrite('short write', written, length, name);
    inodes.set(key, writeAt(content, offset, data));
    return { name, offset, length };
  },
  directWrite() {
    const name = touch(pick(mine()));
    const key = names.get(name);
    const content = inodes.get(key);
    const length = 4 * KiB * (1 + Math.floor(random() * 16));
    const offset = 4 * KiB * Math.floor((random() * Math.min(content.length + 64 * KiB, MAX_SIZE - length)) / (4 * KiB));
    const data = randomBytes(length);
    const written = fs.writeSync(fdFor(name, true), data, 0, length, offset);
    if (written !== length) throw shortWrite('short direct write', written, length, name);
    inodes.set(key, writeAt(content, offset, data));
    return { name, offset, length };
  },
  fsync() {
    const name = pick(mine());
    fs.fsyncSync(fdFor(name));
    return { name };
  },
  truncate() {
    const name = touch(pick(mine()));
    const key = names.get(name);
    const size = Math.floor(random() * Math.min(2 * inodes.get(key).length + 64 * KiB, MAX_SIZE));
    fs.ftruncateSync(fdFor(name), size);
    inodes.set(key, resize(inodes.get(key), size));
    return { name, size };
  },
  create() {
    const name = touch(freshName(pick(homes)));
    const data = randomBytes(Math.floor(random() * 256 * KiB));
    fs.writeFileSync(join(mount, name), data, { flag: 'wx' });
    const key = `i${next}-${name}`;
    inodes.set(key, data);
    names.set(name, key);
    return { name, length: data.length };
  },
  rename() {
    const from = pick(mine());
    // Mostly within the home; across homes it may be EXDEV (the homes live on different datastores). A name of
    // a linked inode moves across homes only in rounds that allow links across homes.
    const single = [...names.values()].filter((k) => k === names.get(from)).length === 1;
    const to = freshName(random() < 0.7 || !(single || config.crossLinks) ? homeOf(from) : pick(homes));
    touch(from, to);
    fs.renameSync(join(mount, from), join(mount, to));
    names.set(to, names.get(from));
    names.delete(from);
    return { from, to };
  },
  renameOver() {
    const from = pick(mine());
    const single = [...names.values()].filter((k) => k === names.get(from)).length === 1;
    const others = mine().filter((n) => n !== from && names.get(n) !== names.get(from) && (homeOf(n) === homeOf(from) || ((single || config.crossLinks) && random() < 0.2)));
    if (others.length === 0) return ops.rename();
    const to = pick(others);
    const victim = names.get(to);
    touch(from, to);
    const open = withHandles(victim, () => fs.renameSync(join(mount, from), join(mount, to)));
    names.set(to, names.get(from));
    names.delete(from);
    if (![...names.values()].includes(victim)) inodes.delete(victim);
    return { from, to, open };
  },
  unlink() {
    return removeName(touch(pick(mine())));
  },
  unlinkCrossLink() {
    const { name } = unlinkSoon.shift();
    return names.has(name) ? removeName(touch(name)) : { name, gone: true };
  },
  link() {
    const from = pick(mine());
    // A link across homes makes both homes unmovable (refused at preflight) until one name goes: it lives
    // for a few operations only, racing the migrations' preflights.
    const across = config.crossLinks && random() < 0.1;
    const to = freshName(across ? pick(homes) : homeOf(from));
    touch(from, to);
    fs.linkSync(join(mount, from), join(mount, to));
    names.set(to, names.get(from));
    if (across) unlinkSoon.push({ name: to, after: count + 1 + Math.floor(random() * 20) });
    return { from, to };
  },
  punchHole() {
    // fallocate(PUNCH_HOLE | KEEP_SIZE): the range reads as zeros, the size stays.
    const name = touch(pick(mine()));
    const key = names.get(name);
    const content = inodes.get(key);
    const offset = 4 * KiB * Math.floor((random() * content.length) / (4 * KiB));
    const length = 4 * KiB * (1 + Math.floor(random() * 32));
    const r = spawnSync('fallocate', ['-p', '-o', String(offset), '-l', String(length), join(mount, name)], { encoding: 'utf8' });
    if (r.status !== 0) throw helperFailed('fallocate', r, name);
    const punched = Buffer.from(content);
    punched.fill(0, Math.min(offset, content.length), Math.min(offset + length, content.length));
    inodes.set(key, punched);
    return { name, offset, length };
  },
  mmapWrite() {
    // Stores through a MAP_SHARED mapping (page-cached opens, the default): they reach the daemon as written-back pages.
    const name = touch(pick(mine()));
    const key = names.get(name);
    const content = inodes.get(key);
    if (content.length === 0) return ops.write();
    const offset = Math.floor(random() * content.length);
    const data = randomBytes(Math.min(1 + Math.floor(random() * 32 * KiB), content.length - offset));
    const r = spawnSync('python3', ['-c', MMAP_WRITE, join(mount, name), String(offset)], { input: data });
    if (r.status !== 0) throw helperFailed('mmap write', r, name);
    inodes.set(key, writeAt(content, offset, data));
    return { name, offset, length: data.length };
  },
  copy() {
    // A whole-file copy to a fresh name in the same home: libuv uses copy_file_range(2).
    const from = pick(mine());
    const to = touch(freshName(homeOf(from)), from);
    fs.copyFileSync(join(mount, from), join(mount, to), fs.constants.COPYFILE_EXCL);
    const key = `i${next}-${to}`;
    inodes.set(key, Buffer.from(inodes.get(names.get(from))));
    names.set(to, key);
    return { from, to };
  },
  recreate() {
    // Unlink a file and create another at once (all handles closed, so the inode is freed): the filesystem may
    // hand the number out again, to a file a migration's mirror must not take for the old one.
    const single = mine().filter((n) => [...names.values()].filter((k) => k === names.get(n)).length === 1);
    if (single.length === 0) return ops.create();
    const name = pick(single);
    const key = names.get(name);
    const to = freshName(homeOf(name));
    touch(name, to);
    const { ino } = fs.statSync(join(mount, name));
    closeFds(key);
    fs.unlinkSync(join(mount, name));
    names.delete(name);
    inodes.delete(key);
    const data = randomBytes(Math.floor(random() * 256 * KiB));
    fs.writeFileSync(join(mount, to), data, { flag: 'wx' });
    inodes.set(`i${next}-${to}`, data);
    names.set(to, `i${next}-${to}`);
    const reused = fs.statSync(join(mount, to)).ino === ino;
    if (reused) reuses++;
    return { from: name, to, ino, reused };
  },
  read() {
    const name = pick(mine());
    const actual = fs.readFileSync(join(mount, name));
    const expected = inodes.get(names.get(name));
    if (!actual.equals(expected)) {
      let at = 0;
      while (at < Math.min(actual.length, expected.length) && actual[at] === expected[at]) at++;
      // What each name and each open handle of the inode says, for the one who debugs it.
      const key = names.get(name);
      const seen = [...names].filter(([, k]) => k === key).map(([n]) => { const st = fs.statSync(join(mount, n)); return `${n}: ino ${st.ino} nlink ${st.nlink} size ${st.size}`; });
      for (const suffix of ['', ':d']) if (fds.has(key + suffix)) { const st = fs.fstatSync(fds.get(key + suffix)); seen.push(`fd${suffix}: ino ${st.ino} nlink ${st.nlink} size ${st.size}`); }
      throw Object.assign(new Error(`read of ${name} differs from the model: ${actual.length} bytes, expected ${expected.length}, first difference at ${at}; ${seen.join('; ')}`), { code: 'EMODEL' });
    }
    return { name, length: actual.length };
  },
};
const WEIGHTS = [
  ['write', 34], ['directWrite', 10], ['fsync', 5], ['truncate', 7], ['create', 6], ['rename', 8],
  ['renameOver', 5], ['unlink', 6], ['link', 5], ['read', 14], ['punchHole', 3], ['copy', 2],
  ['mmapWrite', 4],
  ...(config.reuse ? [['recreate', 12]] : []),
];
const TOTAL = WEIGHTS.reduce((s, [, w]) => s + w, 0);
/** Errors the mount may legitimately answer with: a rename or link across datastores, an ancestor pinned. */
const REFUSALS = { rename: ['EXDEV', 'EBUSY'], renameOver: ['EXDEV', 'EBUSY'], link: ['EXDEV', 'EBUSY'] };

const unlinkSoon = [];

function chooseOp() {
  if (mine().length === 0) return 'create';
  if (unlinkSoon.length > 0 && unlinkSoon[0].after <= count) return 'unlinkCrossLink';
  if (mine().length > 10 && random() < 0.5) return 'unlink';
  let r = random() * TOTAL;
  for (const [op, w] of WEIGHTS) if ((r -= w) < 0) return op;
  return 'write';
}

function dump(inFlight, error) {
  for (const fd of fds.values()) {
    try {
      fs.closeSync(fd);
    } catch {
      // The daemon is gone: closing a handle to the dead mount can fail; the model is what matters.
    }
  }
  const files = {};
  for (const [name, key] of names) files[name] = key;
  for (const [key, content] of inodes) fs.writeFileSync(join(out, `${key.replace(/\//g, '_')}.bin`), content);
  fs.writeFileSync(join(out, 'model.json'), JSON.stringify({ id, files, inFlight, error, ops: count, reuses }));
}

let stopping = false;
let count = 0;
/** recreate()s whose new file got the unlinked one's inode number. */
let reuses = 0;
process.on('SIGTERM', () => (stopping = true));
scan();
process.stdout.write('ready\n');
while (!stopping) {
  const op = chooseOp();
  touching = [];
  const before = new Map(names);
  try {
    const did = ops[op]();
    count++;
    note({ op, ...did });
  } catch (err) {
    if (REFUSALS[op]?.includes(err.code)) {
      note({ op, refused: err.code });
      // A refused rename/link took a fresh name it never used; the model is unchanged.
      for (const [name] of names) if (!before.has(name)) names.delete(name);
    } else if (DAEMON_GONE.has(err.code)) {
      // The names the op in flight touched, and every other name of their inodes.
      const keys = new Set(touching.map((n) => before.get(n)).filter(Boolean));
      const uncertain = [...new Set([...touching, ...[...before].filter(([, k]) => keys.has(k)).map(([n]) => n)])];
      note({ op, gone: err.code, uncertain });
      dump({ op, names: uncertain });
      process.exit(3);
    } else {
      note({ op, error: String(err) });
      dump(null, `${op}: ${err.stack ?? err}`);
      process.exit(4);
    }
  }
  // A few hundred operations a second: enough to keep every pass dirty, not so many that nothing converges.
  if (count % 4 === 0) await new Promise((r) => setTimeout(r, Math.floor(random() * 12)));
}
dump(null, null);
process.exit(0);
