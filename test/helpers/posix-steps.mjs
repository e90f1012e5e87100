// Runs a sequence of file system calls in one process, as pjdfstest does: first as root (the setup), then, after
// a `become` step, as another user. Prints one result per step as a JSON array: `ok`, a value (a mode in octal),
// or the errno code. One process keeps the sequence tight: the kernel's caches (a dentry lives 1 s) see it as
// one program would, and a file a step holds open stays open until the end.
// usage: node posix-steps.mjs <dir> <json steps>
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';

const { constants: C } = fs;
const [dir, json] = process.argv.slice(2);
process.chdir(dir);
process.umask(0);
const held = [];

const octal = (mode) => (mode & 0o7777).toString(8);

/** Opens, does `fn` with the fd, and reports the mode fstat sees right after: the caller's own view. */
function withFd(path, flags, fn, mode) {
  const fd = fs.openSync(path, flags, mode);
  try {
    fn(fd);
    return octal(fs.fstatSync(fd).mode);
  } finally {
    fs.closeSync(fd);
  }
}

/** A tool's failure as its message's last words, which are the same on both sides. */
function tool(cmd, args) {
  try {
    execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    return 'ok';
  } catch (err) {
    return `${cmd}: ${String(err.stderr).split(':').pop().trim()}`;
  }
}

const ops = {
  become(uid, gid, groups) {
    process.setgroups(groups);
    process.setgid(gid);
    process.setuid(uid);
  },
  file: (p, mode = 0o644) => fs.writeFileSync(p, Buffer.alloc(8192, 1), { mode }),
  mkdir: (p, mode = 0o755) => fs.mkdirSync(p, mode),
  // mkfifo(1) refuses setuid/setgid; mkfifo(3) takes them.
  mkfifo: (p, mode = 0o644) => tool('perl', ['-MPOSIX', '-e', 'POSIX::mkfifo($ARGV[0], oct $ARGV[1]) or die "$!\\n"', p, mode.toString(8)]),
  mknod: (p) => tool('mknod', [p, 'c', '1', '3']),
  symlink: (target, p) => fs.symlinkSync(target, p),
  link: (from, to) => fs.linkSync(from, to),
  chmod: (p, mode) => fs.chmodSync(p, mode),
  chown: (p, uid, gid) => fs.lchownSync(p, uid, gid),
  lstat: (p) => octal(fs.lstatSync(p).mode),
  truncate: (p, size) => fs.truncateSync(p, size),
  ftruncate: (p, size) => withFd(p, C.O_WRONLY, (fd) => fs.ftruncateSync(fd, size)),
  otrunc: (p) => withFd(p, C.O_WRONLY | C.O_TRUNC, () => undefined),
  write: (p) => withFd(p, C.O_WRONLY, (fd) => fs.writeSync(fd, 'x', 0)),
  fallocate: (p) => tool('fallocate', ['-p', '-o', '0', '-l', '4096', p]),
  /** Creates with this mode, then writes through the creating fd: the modes fstat sees after each. */
  create(p, mode) {
    let created = '';
    const written = withFd(p, C.O_CREAT | C.O_EXCL | C.O_WRONLY, (fd) => {
      created = octal(fs.fstatSync(fd).mode);
      fs.writeSync(fd, 'x', 0);
    }, mode);
    return `${created} ${written}`;
  },
  hold: (p) => void held.push(fs.openSync(p, C.O_RDONLY | C.O_NONBLOCK)),
  holdForWriting: (p) => void held.push(fs.openSync(p, C.O_WRONLY)),
  /** Writes through the i-th held fd: the mode fstat sees right after. */
  writeHeld: (i) => (fs.writeSync(held[i], 'x', 0), octal(fs.fstatSync(held[i]).mode)),
  rename: (from, to) => fs.renameSync(from, to),
  unlink: (p) => fs.unlinkSync(p),
  rmdir: (p) => fs.rmdirSync(p),
};

const results = [];
for (const [op, ...args] of JSON.parse(json)) {
  try {
    const value = ops[op](...args);
    results.push(typeof value === 'string' ? value : 'ok');
  } catch (err) {
    results.push(err.code ?? String(err));
  }
}
process.stdout.write(JSON.stringify(results));
