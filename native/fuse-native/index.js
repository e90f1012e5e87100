const os = require('os')
const fs = require('fs')
const path = require('path')
const { exec } = require('child_process')

const Nanoresource = require('nanoresource')
const { beforeMount, beforeUnmount, configure, unconfigure, isConfigured } = require('fuse-shared-library')

const BINDING_PATH = require('node-gyp-build').path(__dirname)
const binding = require(BINDING_PATH)

const IS_OSX = os.platform() === 'darwin'
const OSX_FOLDER_ICON = '/System/Library/CoreServices/CoreTypes.bundle/Contents/Resources/GenericFolderIcon.icns'
const HAS_FOLDER_ICON = IS_OSX && fs.existsSync(OSX_FOLDER_ICON)
const DEFAULT_TIMEOUT = 15 * 1000
const TIMEOUT_ERRNO = IS_OSX ? -60 : -110
const ENOTCONN = IS_OSX ? -57 : -107

const OpcodesAndDefaults = new Map([
  ['init', {
    op: binding.op_init
  }],
  ['error', {
    op: binding.op_error
  }],
  ['access', {
    op: binding.op_access,
    defaults: [0]
  }],
  ['statfs', {
    op: binding.op_statfs,
    defaults: [getStatfsArray()]
  }],
  ['fgetattr', {
    op: binding.op_fgetattr,
    defaults: [getStatArray()]
  }],
  ['getattr', {
    op: binding.op_getattr,
    defaults: [getStatArray()]
  }],
  ['flush', {
    op: binding.op_flush
  }],
  ['fsync', {
    op: binding.op_fsync
  }],
  ['fsyncdir', {
    op: binding.op_fsyncdir
  }],
  ['readdir', {
    op: binding.op_readdir,
    defaults: [[], []]
  }],
  ['truncate', {
    op: binding.op_truncate
  }],
  ['ftruncate', {
    op: binding.op_ftruncate
  }],
  ['utimens', {
    op: binding.op_utimens
  }],
  ['readlink', {
    op: binding.op_readlink,
    defaults: ['']
  }],
  ['chown', {
    op: binding.op_chown
  }],
  ['chmod', {
    op: binding.op_chmod
  }],
  ['mknod', {
    op: binding.op_mknod
  }],
  ['setxattr', {
    op: binding.op_setxattr
  }],
  ['getxattr', {
    op: binding.op_getxattr
  }],
  ['listxattr', {
    op: binding.op_listxattr
  }],
  ['removexattr', {
    op: binding.op_removexattr
  }],
  ['open', {
    op: binding.op_open,
    defaults: [0, 0]
  }],
  ['opendir', {
    op: binding.op_opendir,
    defaults: [0, 0]
  }],
  ['read', {
    op: binding.op_read,
    defaults: [0]
  }],
  ['write', {
    op: binding.op_write,
    defaults: [0]
  }],
  ['release', {
    op: binding.op_release
  }],
  ['releasedir', {
    op: binding.op_releasedir
  }],
  ['create', {
    op: binding.op_create,
    defaults: [0, 0]
  }],
  ['unlink', {
    op: binding.op_unlink
  }],
  ['rename', {
    op: binding.op_rename
  }],
  ['link', {
    op: binding.op_link
  }],
  ['symlink', {
    op: binding.op_symlink
  }],
  ['mkdir', {
    op: binding.op_mkdir
  }],
  ['rmdir', {
    op: binding.op_rmdir
  }],
  ['fallocate', {
    op: binding.op_fallocate
  }]
])

class Fuse extends Nanoresource {
  constructor (mnt, ops, opts = {}) {
    super()

    this.opts = opts
    this.mnt = path.resolve(mnt)
    this.ops = ops
    this.timeout = opts.timeout === false ? 0 : (opts.timeout || DEFAULT_TIMEOUT)

    if (opts.mountOptions !== undefined) validateMountOptions(opts.mountOptions)
    this._fuseOptions() // throws early on an over-long option string

    this._force = !!opts.force
    this._mkdir = !!opts.mkdir
    this._thread = null
    this._handlers = this._makeHandlerArray()
    this._threads = new Set()

    const implemented = [binding.op_init, binding.op_error, binding.op_getattr]
    if (ops) {
      for (const [name, { op }] of OpcodesAndDefaults) {
        if (ops[name]) implemented.push(op)
      }
    }
    this._implemented = new Set(implemented)

    // Used to determine if the user-defined callback needs to be nextTick'd.
    this._sync = true
  }

  _getImplementedArray () {
    const implemented = new Uint32Array(35)
    for (const impl of this._implemented) {
      implemented[impl] = 1
    }
    return implemented
  }

  _fuseOptions () {
    const options = []

    if ((/\*|(^,)fuse-bindings(,$)/.test(process.env.DEBUG)) || this.opts.debug) options.push('debug')
    if (this.opts.allowOther) options.push('allow_other')
    if (this.opts.allowRoot) options.push('allow_root')
    if (this.opts.autoUnmount) options.push('auto_unmount')
    if (this.opts.defaultPermissions) options.push('default_permissions')
    if (this.opts.blkdev) options.push('blkdev')
    if (this.opts.blksize) options.push('blksize=' + this.opts.blksize)
    if (this.opts.maxRead) options.push('max_read=' + this.opts.maxRead)
    if (this.opts.fd) options.push('fd=' + this.opts.fd)
    if (this.opts.userId) options.push('user_id=' + this.opts.userId)
    if (this.opts.fsname) options.push('fsname=' + this.opts.fsname)
    if (this.opts.subtype) options.push('subtype=' + this.opts.subtype)
    if (this.opts.kernelCache) options.push('kernel_cache')
    if (this.opts.autoCache) options.push('auto_cache')
    if (this.opts.umask) options.push('umask=' + this.opts.umask)
    if (this.opts.uid) options.push('uid=' + this.opts.uid)
    if (this.opts.gid) options.push('gid=' + this.opts.gid)
    if (this.opts.entryTimeout) options.push('entry_timeout=' + this.opts.entryTimeout)
    if (this.opts.attrTimeout) options.push('attr_timeout=' + this.opts.attrTimeout)
    if (this.opts.acAttrTimeout) options.push('ac_attr_timeout=' + this.opts.acAttrTimeout)
    if (this.opts.noforget) options.push('noforget')
    if (this.opts.remember) options.push('remember=' + this.opts.remember)
    if (this.opts.modules) options.push('modules=' + this.opts.modules)

    if (this.opts.displayFolder && IS_OSX) { // only works on osx
      options.push('volname=' + path.basename(this.opts.name || this.mnt))
      if (HAS_FOLDER_ICON) options.push('volicon=' + OSX_FOLDER_ICON)
    }

    if (this.opts.mountOptions) options.push(...this.opts.mountOptions)

    const str = options.length ? '-o' + options.join(',') : ''
    // the native side copies the option string into a 1024 byte buffer and
    // would silently cut it off
    if (Buffer.byteLength(str) > 1023) throw new RangeError('FUSE mount options are longer than 1023 bytes')
    return str
  }

  _malloc (size) {
    const buf = Buffer.alloc(size)
    this._threads.add(buf)
    return buf
  }

  _makeHandlerArray () {
    const self = this
    const handlers = new Array(OpcodesAndDefaults.size)

    for (const [name, { op, defaults }] of OpcodesAndDefaults) {
      const nativeSignal = binding[`fuse_native_signal_${name}`]
      if (!nativeSignal) continue

      handlers[op] = makeHandler(name, op, defaults, nativeSignal)
    }

    return handlers

    function makeHandler (name, op, defaults, nativeSignal) {
      let to = self.timeout
      if (typeof to === 'object' && to) {
        const defaultTimeout = to.default || DEFAULT_TIMEOUT
        to = to[name]
        if (!to && to !== false) to = defaultTimeout
      }

      return function (nativeHandler, opCode, ...args) {
        const sig = signal.bind(null, nativeHandler)
        const input = [...args]
        const boundSignal = to ? autoTimeout(sig, input) : sig
        const funcName = `_op_${name}`
        if (!self[funcName] || !self._implemented.has(op)) return boundSignal(-1, ...defaults)
        return self[funcName].apply(self, [boundSignal, ...args])
      }

      function signal (nativeHandler, err, ...args) {
        var arr = [nativeHandler, err, ...args]

        if (defaults) {
          while (arr.length > 2 && arr[arr.length - 1] === undefined) arr.pop()
          if (arr.length === 2) arr = arr.concat(defaults)
        }

        return process.nextTick(nativeSignal, ...arr)
      }

      function autoTimeout (cb, input) {
        let called = false
        const timeout = setTimeout(timeoutWrap, to, TIMEOUT_ERRNO)
        return timeoutWrap

        function timeoutWrap (err, ...args) {
          if (called) return
          called = true

          clearTimeout(timeout)

          if (err === TIMEOUT_ERRNO) {
            switch (name) {
              case 'write':
              case 'read':
                return cb(TIMEOUT_ERRNO, 0, input[2].buffer)
              case 'setxattr':
                return cb(TIMEOUT_ERRNO, input[2].buffer)
              case 'getxattr':
                return cb(TIMEOUT_ERRNO, input[2].buffer)
              case 'listxattr':
                return cb(TIMEOUT_ERRNO, input[1].buffer)
            }
          }

          cb(err, ...args)
        }
      }
    }
  }

  // Static methods

  static unmount (mnt, cb) {
    mnt = JSON.stringify(mnt)
    const cmd = IS_OSX ? `diskutil unmount force ${mnt}` : `fusermount -uz ${mnt}`
    exec(cmd, err => {
      if (err) return cb(err)
      return cb(null)
    })
  }

  // Debugging methods

  // Lifecycle methods

  _open (cb) {
    const self = this

    if (this._force) {
      return fs.stat(path.join(this.mnt, 'test'), (err, st) => {
        if (err && (err.errno === ENOTCONN || err.errno === Fuse.ENXIO)) return Fuse.unmount(this.mnt, open)
        return open()
      })
    }
    return open()

    function open () {
      // If there was an unmount error, continue attempting to mount (this is the best we can do)
      self._thread = Buffer.alloc(binding.sizeof_fuse_thread_t)
      self._openCallback = cb

      const opts = self._fuseOptions()
      const implemented = self._getImplementedArray()

      return fs.stat(self.mnt, (err, stat) => {
        if (err && err.errno !== -2) return cb(err)
        if (err) {
          if (!self._mkdir) return cb(new Error('Mountpoint does not exist'))
          return fs.mkdir(self.mnt, { recursive: true }, err => {
            if (err) return cb(err)
            fs.stat(self.mnt, (err, stat) => {
              if (err) return cb(err)
              return onexists(stat)
            })
          })
        }
        if (!stat.isDirectory()) return cb(new Error('Mountpoint is not a directory'))
        return onexists(stat)
      })

      function onexists (stat) {
        fs.stat(path.join(self.mnt, '..'), (_, parent) => {
          if (parent && parent.dev !== stat.dev) return cb(new Error('Mountpoint in use'))
          try {
            // TODO: asyncify
            binding.fuse_native_mount(self.mnt, opts, self._thread, self, self._malloc, self._handlers, implemented)
          } catch (err) {
            return cb(err)
          }
        })
      }
    }
  }

  _close (cb) {
    const self = this

    Fuse.unmount(this.mnt, err => {
      if (err) {
        err.unmountFailure = true
        return cb(err)
      }
      nativeUnmount()
    })

    function nativeUnmount () {
      try {
        binding.fuse_native_unmount(self.mnt, self._thread)
      } catch (err) {
        return cb(err)
      }
      return cb(null)
    }
  }

  // Handlers

  _op_init (signal) {
    if (this._openCallback) {
      process.nextTick(this._openCallback, null)
      this._openCallback = null
    }
    if (!this.ops.init) {
      signal(0)
      return
    }
    this.ops.init(err => {
      return signal(err)
    })
  }

  _op_error (signal) {
    if (!this.ops.error) {
      signal(0)
      return
    }
    this.ops.error(err => {
      return signal(err)
    })
  }

  _op_statfs (signal, path) {
    this.ops.statfs(path, (err, statfs) => {
      if (err) return signal(err)
      const arr = getStatfsArray(statfs)
      return signal(0, arr)
    })
  }

  _op_getattr (signal, path) {
    if (!this.ops.getattr) {
      if (path !== '/') {
        signal(Fuse.EPERM)
      } else {
        signal(0, getStatArray({ mtime: new Date(0), atime: new Date(0), ctime: new Date(0), mode: 16877, size: 4096 }))
      }
      return
    }

    this.ops.getattr(path, (err, stat) => {
      if (err) return signal(err, getStatArray())
      return signal(0, getStatArray(stat))
    })
  }

  _op_fgetattr (signal, path, fh) {
    if (!this.ops.fgetattr) return this._op_getattr(signal, path)
    this.ops.fgetattr(path, fh, (err, stat) => {
      if (err) return signal(err, getStatArray())
      return signal(0, getStatArray(stat))
    })
  }

  _op_access (signal, path, mode) {
    this.ops.access(path, mode, err => {
      return signal(err)
    })
  }

  _op_open (signal, path, flags, uid, gid, pid) {
    this.ops.open(path, flags, uid, gid, pid, (err, fh, openFlags) => {
      return signal(err, fh, openFlags)
    })
  }

  _op_opendir (signal, path, fh, flags) {
    this.ops.opendir(path, flags, (err, fh, openFlags) => {
      return signal(err, fh, openFlags)
    })
  }

  _op_create (signal, path, mode, flags, uid, gid, pid) {
    this.ops.create(path, mode, flags, uid, gid, pid, (err, fh, openFlags) => {
      return signal(err, fh, openFlags)
    })
  }

  _op_utimens (signal, path, atimeSec, atimeNsec, mtimeSec, mtimeNsec) {
    this.ops.utimens(path, atimeSec, atimeNsec, mtimeSec, mtimeNsec, err => {
      return signal(err)
    })
  }

  _op_release (signal, path, fd) {
    this.ops.release(path, fd, err => {
      return signal(err)
    })
  }

  _op_releasedir (signal, path, fd) {
    this.ops.releasedir(path, fd, err => {
      return signal(err)
    })
  }

  _op_read (signal, path, fd, buf, len, offsetLow, offsetHigh) {
    this.ops.read(path, fd, buf, len, getDoubleArg(offsetLow, offsetHigh), (err, bytesRead) => {
      return signal(err, bytesRead || 0, buf.buffer)
    })
  }

  _op_write (signal, path, fd, buf, len, offsetLow, offsetHigh) {
    this.ops.write(path, fd, buf, len, getDoubleArg(offsetLow, offsetHigh), (err, bytesWritten) => {
      return signal(err, bytesWritten || 0, buf.buffer)
    })
  }

  _op_readdir (signal, path) {
    this.ops.readdir(path, (err, names, stats) => {
      if (err) return signal(err)
      if (stats) stats = stats.map(getStatArray)
      return signal(0, names, stats || [])
    })
  }

  _op_setxattr (signal, path, name, value, position, flags) {
    this.ops.setxattr(path, name, value, position, flags, err => {
      return signal(err, value.buffer)
    })
  }

  _op_getxattr (signal, path, name, valueBuf, position) {
    this.ops.getxattr(path, name, position, (err, value) => {
      if (!err) {
        if (!value) return signal(IS_OSX ? -93 : -61, valueBuf.buffer)
        // size 0 is a size query; a value that does not fit is ERANGE, never truncated
        if (valueBuf.length === 0) return signal(value.length, valueBuf.buffer)
        if (value.length > valueBuf.length) return signal(Fuse.ERANGE, valueBuf.buffer)
        value.copy(valueBuf)
        return signal(value.length, valueBuf.buffer)
      }
      return signal(err, valueBuf.buffer)
    })
  }

  _op_listxattr (signal, path, listBuf) {
    this.ops.listxattr(path, (err, list) => {
      if (list && !err) {
        let size = 0
        for (const name of list) size += Buffer.byteLength(name) + 1
        if (!listBuf.length) {
          if (IS_OSX) size += 128 // fuse yells if we do not signal room for some mac stuff also
          return signal(size, listBuf.buffer)
        }
        if (size > listBuf.length) return signal(Fuse.ERANGE, listBuf.buffer)

        let ptr = 0
        for (const name of list) {
          listBuf.write(name, ptr)
          ptr += Buffer.byteLength(name)
          listBuf[ptr++] = 0
        }

        return signal(ptr, listBuf.buffer)
      }
      return signal(err, listBuf.buffer)
    })
  }

  _op_removexattr (signal, path, name) {
    this.ops.removexattr(path, name, err => {
      return signal(err)
    })
  }

  _op_flush (signal, path, fd) {
    this.ops.flush(path, fd, err => {
      return signal(err)
    })
  }

  _op_fsync (signal, path, datasync, fd) {
    this.ops.fsync(path, datasync, fd, err => {
      return signal(err)
    })
  }

  _op_fsyncdir (signal, path, datasync, fd) {
    this.ops.fsyncdir(path, datasync, fd, err => {
      return signal(err)
    })
  }

  _op_truncate (signal, path, sizeLow, sizeHigh, uid, gid, pid) {
    const size = getDoubleArg(sizeLow, sizeHigh)
    this.ops.truncate(path, size, uid, gid, pid, err => {
      return signal(err)
    })
  }

  _op_ftruncate (signal, path, fd, sizeLow, sizeHigh) {
    const size = getDoubleArg(sizeLow, sizeHigh)
    this.ops.ftruncate(path, fd, size, err => {
      return signal(err)
    })
  }

  _op_fallocate (signal, path, fd, mode, offsetLow, offsetHigh, lengthLow, lengthHigh) {
    this.ops.fallocate(path, fd, mode, getDoubleArg(offsetLow, offsetHigh), getDoubleArg(lengthLow, lengthHigh), err => {
      return signal(err)
    })
  }

  _op_readlink (signal, path) {
    this.ops.readlink(path, (err, linkname) => {
      return signal(err, linkname)
    })
  }

  _op_chown (signal, path, uid, gid) {
    this.ops.chown(path, uid, gid, err => {
      return signal(err)
    })
  }

  _op_chmod (signal, path, mode) {
    this.ops.chmod(path, mode, err => {
      return signal(err)
    })
  }

  _op_mknod (signal, path, mode, dev, uid, gid) {
    this.ops.mknod(path, mode, dev, uid, gid, err => {
      return signal(err)
    })
  }

  _op_unlink (signal, path) {
    this.ops.unlink(path, err => {
      return signal(err)
    })
  }

  _op_rename (signal, src, dest, keepSource) {
    this.ops.rename(src, dest, keepSource, err => {
      return signal(err)
    })
  }

  _op_link (signal, src, dest) {
    this.ops.link(src, dest, err => {
      return signal(err)
    })
  }

  _op_symlink (signal, target, linkPath, uid, gid) {
    this.ops.symlink(target, linkPath, uid, gid, err => {
      return signal(err)
    })
  }

  _op_mkdir (signal, path, mode, uid, gid) {
    this.ops.mkdir(path, mode, uid, gid, err => {
      return signal(err)
    })
  }

  _op_rmdir (signal, path) {
    this.ops.rmdir(path, err => {
      return signal(err)
    })
  }

  // Public API

  mount (cb) {
    return this.open(cb)
  }

  unmount (cb) {
    return this.close(cb)
  }

  errno (code) {
    return (code && Fuse[code.toUpperCase()]) || -1
  }
}

// ferry: which native binary was loaded, and the hash of the native/ sources it was built from
Fuse.BINDING_PATH = BINDING_PATH
Fuse.SOURCE_HASH = binding.ferry_source_hash

// ferry: syscalls Node's fs lacks, run on the libuv threadpool (Linux only).
// cb(err, result): err is 0 or a negative errno. Bad argument types throw.
// ferry's native data path (native/ferry/data.c, napi-data.c); see ferry's native-notes/memory-model.md.
Fuse.data = binding.ferry_data
Fuse.io = binding.fuse_native_io_seek ? {
  SEEK_DATA: binding.io_SEEK_DATA,
  SEEK_HOLE: binding.io_SEEK_HOLE,
  XATTR_CREATE: binding.io_XATTR_CREATE,
  XATTR_REPLACE: binding.io_XATTR_REPLACE,
  FALLOC_FL_KEEP_SIZE: binding.io_FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE: binding.io_FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE: binding.io_FALLOC_FL_ZERO_RANGE,
  AT_REMOVEDIR: binding.io_AT_REMOVEDIR,
  // Paths below are relative to a root directory fd and resolved beneath it, never through a symlink, "..", or a
  // /proc magic link (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS); "" is the root.
  openBeneath: binding.fuse_native_io_open_beneath, // (root, path, flags, mode, cb(err, fd)): O_NOFOLLOW | O_CLOEXEC added
  getxattr: binding.fuse_native_io_getxattr, // (root, path, name, cb(err, Buffer)): of the object itself, a symlink not followed
  listxattr: binding.fuse_native_io_listxattr, // (root, path, cb(err, string[]))
  setxattr: binding.fuse_native_io_setxattr, // (root, path, name, value, flags, cb(err))
  removexattr: binding.fuse_native_io_removexattr, // (root, path, name, cb(err))
  mknodat: binding.fuse_native_io_mknodat, // (root, path, mode with type bits, rdev, cb(err)): sockets too
  mkdirat: binding.fuse_native_io_mkdirat, // (root, path, mode, cb(err))
  symlinkat: binding.fuse_native_io_symlinkat, // (target, root, path, cb(err))
  unlinkat: binding.fuse_native_io_unlinkat, // (root, path, flags, cb(err)): AT_REMOVEDIR for a directory
  renameat: binding.fuse_native_io_renameat, // (root, path, root2, path2, flags, cb(err)): renameat2's flags
  linkat: binding.fuse_native_io_linkat, // (root, path, root2, path2, cb(err)): a symlink is linked as itself
  readlinkat: binding.fuse_native_io_readlinkat, // (root, path, cb(err, Buffer))
  chownat: binding.fuse_native_io_chownat, // (root, path, uid, gid, cb(err)): -1 keeps; a symlink's own owner
  chmodat: binding.fuse_native_io_chmodat, // (root, path, mode, cb(err)): EOPNOTSUPP for a symlink
  utimensat: binding.fuse_native_io_utimensat, // (root, path, atimeSec, atimeNsec, mtimeSec, mtimeNsec, cb(err)): a symlink's own; nsec may be UTIME_NOW / UTIME_OMIT
  seek: binding.fuse_native_io_seek, // (fd, offset, whence, cb(err, offset))
  copyRange: binding.fuse_native_io_copy_range, // (fdIn, offIn, fdOut, offOut, length, cb(err, copied))
  copySparse: binding.fuse_native_io_copy_sparse, // (fdIn, directFdIn, offIn, fdOut, offOut, length, cb(err, bytesRead)): into a fresh file, all-zero 4 KiB blocks stay holes; the source read through its O_DIRECT twin where aligned (-1: none)
  fallocate: binding.fuse_native_io_fallocate, // (fd, mode, offset, length, cb(err)): the filesystem's errno as is
  directWrite: binding.fuse_native_io_direct_write, // (fd, directFd, data, offset, cb(err, written)): through the O_DIRECT fd when aligned, else the fallback (ferry's native/ferry/direct.h)
  directRead: binding.fuse_native_io_direct_read, // (fd, directFd, length, offset, cb(err, Buffer)): the same for a read
  directFallbacks: binding.fuse_native_io_direct_fallbacks, // (): requests that took the fallback, both data paths
  punchHole: (fd, offset, length, cb) => binding.fuse_native_io_fallocate(fd, binding.io_FALLOC_FL_PUNCH_HOLE | binding.io_FALLOC_FL_KEEP_SIZE, offset, length, cb) // (fd, offset, length, cb(err))
} : undefined

// utimens nsec values meaning "set to the current time" / "leave unchanged" (Linux)
Fuse.UTIME_NOW = (1 << 30) - 1
Fuse.UTIME_OMIT = (1 << 30) - 2

// bits for the third argument of the open/create/opendir callback
Fuse.OPEN_DIRECT_IO = 1
Fuse.OPEN_KEEP_CACHE = 2
Fuse.OPEN_NONSEEKABLE = 4

Fuse.EPERM = -1
Fuse.ENOENT = -2
Fuse.ESRCH = -3
Fuse.EINTR = -4
Fuse.EIO = -5
Fuse.ENXIO = -6
Fuse.E2BIG = -7
Fuse.ENOEXEC = -8
Fuse.EBADF = -9
Fuse.ECHILD = -10
Fuse.EAGAIN = -11
Fuse.ENOMEM = -12
Fuse.EACCES = -13
Fuse.EFAULT = -14
Fuse.ENOTBLK = -15
Fuse.EBUSY = -16
Fuse.EEXIST = -17
Fuse.EXDEV = -18
Fuse.ENODEV = -19
Fuse.ENOTDIR = -20
Fuse.EISDIR = -21
Fuse.EINVAL = -22
Fuse.ENFILE = -23
Fuse.EMFILE = -24
Fuse.ENOTTY = -25
Fuse.ETXTBSY = -26
Fuse.EFBIG = -27
Fuse.ENOSPC = -28
Fuse.ESPIPE = -29
Fuse.EROFS = -30
Fuse.EMLINK = -31
Fuse.EPIPE = -32
Fuse.EDOM = -33
Fuse.ERANGE = -34
Fuse.EDEADLK = -35
Fuse.ENAMETOOLONG = -36
Fuse.ENOLCK = -37
Fuse.ENOSYS = -38
Fuse.ENOTEMPTY = -39
Fuse.ELOOP = -40
Fuse.EWOULDBLOCK = -11
Fuse.ENOMSG = -42
Fuse.EIDRM = -43
Fuse.ECHRNG = -44
Fuse.EL2NSYNC = -45
Fuse.EL3HLT = -46
Fuse.EL3RST = -47
Fuse.ELNRNG = -48
Fuse.EUNATCH = -49
Fuse.ENOCSI = -50
Fuse.EL2HLT = -51
Fuse.EBADE = -52
Fuse.EBADR = -53
Fuse.EXFULL = -54
Fuse.ENOANO = -55
Fuse.EBADRQC = -56
Fuse.EBADSLT = -57
Fuse.EDEADLOCK = -35
Fuse.EBFONT = -59
Fuse.ENOSTR = -60
Fuse.ENODATA = -61
Fuse.ETIME = -62
Fuse.ENOSR = -63
Fuse.ENONET = -64
Fuse.ENOPKG = -65
Fuse.EREMOTE = -66
Fuse.ENOLINK = -67
Fuse.EADV = -68
Fuse.ESRMNT = -69
Fuse.ECOMM = -70
Fuse.EPROTO = -71
Fuse.EMULTIHOP = -72
Fuse.EDOTDOT = -73
Fuse.EBADMSG = -74
Fuse.EOVERFLOW = -75
Fuse.ENOTUNIQ = -76
Fuse.EBADFD = -77
Fuse.EREMCHG = -78
Fuse.ELIBACC = -79
Fuse.ELIBBAD = -80
Fuse.ELIBSCN = -81
Fuse.ELIBMAX = -82
Fuse.ELIBEXEC = -83
Fuse.EILSEQ = -84
Fuse.ERESTART = -85
Fuse.ESTRPIPE = -86
Fuse.EUSERS = -87
Fuse.ENOTSOCK = -88
Fuse.EDESTADDRREQ = -89
Fuse.EMSGSIZE = -90
Fuse.EPROTOTYPE = -91
Fuse.ENOPROTOOPT = -92
Fuse.EPROTONOSUPPORT = -93
Fuse.ESOCKTNOSUPPORT = -94
Fuse.EOPNOTSUPP = -95
Fuse.EPFNOSUPPORT = -96
Fuse.EAFNOSUPPORT = -97
Fuse.EADDRINUSE = -98
Fuse.EADDRNOTAVAIL = -99
Fuse.ENETDOWN = -100
Fuse.ENETUNREACH = -101
Fuse.ENETRESET = -102
Fuse.ECONNABORTED = -103
Fuse.ECONNRESET = -104
Fuse.ENOBUFS = -105
Fuse.EISCONN = -106
Fuse.ENOTCONN = -107
Fuse.ESHUTDOWN = -108
Fuse.ETOOMANYREFS = -109
Fuse.ETIMEDOUT = -110
Fuse.ECONNREFUSED = -111
Fuse.EHOSTDOWN = -112
Fuse.EHOSTUNREACH = -113
Fuse.EALREADY = -114
Fuse.EINPROGRESS = -115
Fuse.ESTALE = -116
Fuse.EUCLEAN = -117
Fuse.ENOTNAM = -118
Fuse.ENAVAIL = -119
Fuse.EISNAM = -120
Fuse.EREMOTEIO = -121
Fuse.EDQUOT = -122
Fuse.ENOMEDIUM = -123
Fuse.EMEDIUMTYPE = -124

// Forward configuration functions through the exported class.
Fuse.beforeMount = beforeMount
Fuse.beforeUnmount = beforeUnmount
Fuse.configure = configure
Fuse.unconfigure = unconfigure
Fuse.isConfigured = isConfigured

module.exports = Fuse

function validateMountOptions (list) {
  if (!Array.isArray(list)) throw new TypeError('mountOptions must be an array of strings')
  for (const o of list) {
    if (typeof o !== 'string' || o.length === 0 || o.includes(',')) {
      throw new TypeError('mountOptions entries must be non-empty strings without commas, got ' + (typeof o === 'string' ? JSON.stringify(o) : typeof o))
    }
  }
}

function getStatfsArray (statfs) {
  const ints = new Uint32Array(11)

  ints[0] = (statfs && statfs.bsize) || 0
  ints[1] = (statfs && statfs.frsize) || 0
  ints[2] = (statfs && statfs.blocks) || 0
  ints[3] = (statfs && statfs.bfree) || 0
  ints[4] = (statfs && statfs.bavail) || 0
  ints[5] = (statfs && statfs.files) || 0
  ints[6] = (statfs && statfs.ffree) || 0
  ints[7] = (statfs && statfs.favail) || 0
  ints[8] = (statfs && statfs.fsid) || 0
  ints[9] = (statfs && statfs.flag) || 0
  ints[10] = (statfs && statfs.namemax) || 0

  return ints
}

function getDoubleArg (a, b) {
  return a + b * 4294967296
}

// Number() of a number or a bigint field, 0 when missing
function toNum (v) {
  if (typeof v === 'bigint') return Number(BigInt.asUintN(32, v))
  return v || 0
}

// 64 bit unsigned value as two uint32 words, low word first. Numbers are exact
// up to 2^53, bigints are exact.
function setUint64 (arr, idx, v) {
  if (typeof v === 'bigint') {
    v = BigInt.asUintN(64, v)
    arr[idx] = Number(v & 0xffffffffn)
    arr[idx + 1] = Number(v >> 32n)
    return
  }
  v = Math.trunc(v) || 0
  if (v < 0) v = 0
  arr[idx] = v % 4294967296
  arr[idx + 1] = Math.floor(v / 4294967296)
}

// A time as three words: seconds as int64 two's complement (low, high), nanoseconds.
// Prefers the exact *Ns bigint, then *Ms, then the Date (or a number of ms).
// A missing time is "now", as upstream.
function setTime (arr, idx, stat, name) {
  const ns = stat && stat[name + 'Ns']
  if (typeof ns === 'bigint') {
    let sec = ns / 1000000000n
    let nsec = ns - sec * 1000000000n
    if (nsec < 0n) { sec -= 1n; nsec += 1000000000n }
    arr[idx] = Number(BigInt.asUintN(32, sec))
    arr[idx + 1] = Number(BigInt.asUintN(32, sec >> 32n))
    arr[idx + 2] = Number(nsec)
    return
  }
  let ms = stat && stat[name + 'Ms']
  if (typeof ms === 'bigint') ms = Number(ms)
  if (typeof ms !== 'number') {
    const t = stat && stat[name]
    ms = typeof t === 'number' ? t : (t ? t.getTime() : Date.now())
  }
  if (!Number.isFinite(ms)) ms = 0
  let sec = Math.floor(ms / 1000)
  let nsec = Math.round((ms - sec * 1000) * 1e6)
  if (nsec >= 1000000000) { sec += 1; nsec -= 1000000000 }
  arr[idx] = sec % 4294967296 // the Uint32Array store wraps negatives to two's complement
  arr[idx + 1] = Math.floor(sec / 4294967296)
  arr[idx + 2] = nsec
}

// Layout (uint32 words), read by populate_stat in fuse-native.c:
//  0 mode, 1 uid, 2 gid, 3-4 size, 5 dev, 6 nlink, 7-8 ino, 9 rdev, 10 blksize,
//  11-12 blocks, 13-15 atime, 16-18 mtime, 19-21 ctime (sec lo, sec hi, nsec)
function getStatArray (stat) {
  const ints = new Uint32Array(22)

  if (stat) {
    ints[0] = toNum(stat.mode)
    ints[1] = toNum(stat.uid)
    ints[2] = toNum(stat.gid)
    setUint64(ints, 3, stat.size)
    ints[5] = toNum(stat.dev)
    ints[6] = toNum(stat.nlink) || 1
    setUint64(ints, 7, stat.ino)
    ints[9] = toNum(stat.rdev)
    ints[10] = toNum(stat.blksize)
    setUint64(ints, 11, stat.blocks)
  } else {
    ints[6] = 1
  }
  setTime(ints, 13, stat, 'atime')
  setTime(ints, 16, stat, 'mtime')
  setTime(ints, 19, stat, 'ctime')

  return ints
}
