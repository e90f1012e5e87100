#define FUSE_USE_VERSION 29

#ifndef _GNU_SOURCE
#define _GNU_SOURCE // copy_file_range, fallocate, SEEK_DATA/SEEK_HOLE (Fuse.io)
#endif

#include <uv.h>
#include <node_api.h>
#include <napi-macros.h>

#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <assert.h>

#include <fuse.h>
#include <fuse_opt.h>
#include <fuse_common.h>
#include <fuse_lowlevel.h>
#include <fuse_kernel.h>

#include "ferry-data.h"

#include <unistd.h>
#include <sys/wait.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdatomic.h>

#ifdef __linux__
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/limits.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#endif

static int IS_ARRAY_BUFFER_DETACH_SUPPORTED = 0;

// Identifies a binary built with ferry's patches (patches/fuse-native+2.2.6+*.patch).
// Bump when the patched JS <-> C contract changes.
static const uint32_t ferry_patchset = 13;

napi_status napi_detach_arraybuffer(napi_env env, napi_value buf);

#define FUSE_NATIVE_CALLBACK(fn, blk)\
  napi_env env = ft->env;\
  napi_handle_scope scope;\
  napi_open_handle_scope(env, &scope);\
  napi_value ctx;\
  napi_get_reference_value(env, ft->ctx, &ctx);\
  napi_value callback;\
  napi_get_reference_value(env, fn, &callback);\
  blk\
  napi_close_handle_scope(env, scope);

#define FUSE_NATIVE_HANDLER(name, blk)\
  fuse_thread_locals_t *l = get_thread_locals();\
  l->op = op_##name;\
  l->op_fn = fuse_native_dispatch_##name;\
  blk\
  uv_async_send(&(l->async));\
  uv_sem_wait(&(l->sem));\
  return l->res;

#define FUSE_METHOD(name, callbackArgs, signalArgs, signature, callBlk, callbackBlk, signalBlk)\
  static void fuse_native_dispatch_##name (uv_async_t* handle, fuse_thread_locals_t* l, fuse_thread_t* ft) {\
    uint32_t op = op_##name;\
    FUSE_NATIVE_CALLBACK(ft->handlers[op], {\
      napi_value argv[callbackArgs + 2];\
      napi_get_reference_value(env, l->self, &(argv[0]));\
      napi_create_uint32(env, l->op, &(argv[1]));\
      callbackBlk\
      NAPI_MAKE_CALLBACK(env, NULL, ctx, callback, callbackArgs + 2, argv, NULL)\
    })\
  }\
  NAPI_METHOD(fuse_native_signal_##name) {\
    NAPI_ARGV(signalArgs + 2)\
    NAPI_ARGV_BUFFER_CAST(fuse_thread_locals_t *, l, 0);\
    NAPI_ARGV_INT32(res, 1);\
    signalBlk\
    l->res = res;\
    uv_sem_post(&(l->sem));\
    return NULL;\
  }\
  static int fuse_native_##name signature {\
    FUSE_NATIVE_HANDLER(name, callBlk)\
  }

#define FUSE_METHOD_VOID(name, callbackArgs, signalArgs, signature, callBlk, callbackBlk)\
  FUSE_METHOD(name, callbackArgs, signalArgs, signature, callBlk, callbackBlk, {})

// Caller's uid/gid and thread id, read on the FUSE thread (fuse_get_context is per thread).
#define FUSE_NATIVE_CALLER_CREDS\
  {\
    struct fuse_context *fc = fuse_get_context();\
    l->uid = fc->uid;\
    l->gid = fc->gid;\
    l->pid = fc->pid;\
  }

#define FUSE_UINT64_TO_INTS_ARGV(n, pos)\
  uint32_t low##pos = n % 4294967296;\
  uint32_t high##pos = (n - low##pos) / 4294967296;\
  napi_create_uint32(env, low##pos, &(argv[pos]));\
  napi_create_uint32(env, high##pos, &(argv[pos + 1]));


// Opcodes

static const uint32_t op_init = 0;
static const uint32_t op_error = 1;
static const uint32_t op_access = 2;
static const uint32_t op_statfs = 3;
static const uint32_t op_fgetattr = 4;
static const uint32_t op_getattr = 5;
static const uint32_t op_flush = 6;
static const uint32_t op_fsync = 7;
static const uint32_t op_fsyncdir = 8;
static const uint32_t op_readdir = 9;
static const uint32_t op_truncate = 10;
static const uint32_t op_ftruncate = 11;
static const uint32_t op_utimens = 12;
static const uint32_t op_readlink = 13;
static const uint32_t op_chown = 14;
static const uint32_t op_chmod = 15;
static const uint32_t op_mknod = 16;
static const uint32_t op_setxattr = 17;
static const uint32_t op_getxattr = 18;
static const uint32_t op_listxattr = 19;
static const uint32_t op_removexattr = 20;
static const uint32_t op_open = 21;
static const uint32_t op_opendir = 22;
static const uint32_t op_read = 23;
static const uint32_t op_write = 24;
static const uint32_t op_release = 25;
static const uint32_t op_releasedir = 26;
static const uint32_t op_create = 27;
static const uint32_t op_unlink = 28;
static const uint32_t op_rename = 29;
static const uint32_t op_link = 30;
static const uint32_t op_symlink = 31;
static const uint32_t op_mkdir = 32;
static const uint32_t op_rmdir = 33;
static const uint32_t op_fallocate = 34;

// Data structures

typedef struct {
  napi_env env;
  pthread_t thread;
  pthread_attr_t attr;
  napi_ref ctx;
  napi_ref malloc;

  // Operation handlers
  napi_ref handlers[35];

  struct fuse *fuse;
  struct fuse_chan *ch;
  char mnt[1024];
  char mntopts[1024];
  int mounted;

  uv_async_t async;
  uv_mutex_t mut;
  uv_sem_t sem;
} fuse_thread_t;

typedef struct {
  napi_ref self;

  // Opcode
  uint32_t op;
  void *op_fn;

  // Payloads
  const char *path;
  const char *dest;
  char *linkname;
  struct fuse_file_info *info;
  const void *buf;
  off_t offset;
  size_t len;
  mode_t mode;
  dev_t dev;
  uid_t uid;
  gid_t gid;
  pid_t pid;
  struct timespec atim;
  struct timespec mtim;
  int32_t res;

  // Extended attributes
  const char *name;
  const char *value;
  char *list;
  size_t size;
  uint32_t position;
  int flags;

  // Stat + Statfs
  struct stat *stat;
  struct statvfs *statvfs;

  // Readdir
  fuse_fill_dir_t readdir_filler;

  // Internal bookkeeping
  fuse_thread_t *fuse;
  uv_sem_t sem;
  uv_async_t async;

} fuse_thread_locals_t;

static pthread_key_t thread_locals_key;
static fuse_thread_locals_t* get_thread_locals();

// Helpers
// TODO: Extract into a separate file.

static uint64_t uint32s_to_uint64 (uint32_t **ints) {
  uint64_t low = *((*ints)++);
  uint64_t high = *((*ints)++);
  return high * 4294967296 + low;
}

// Three words: seconds as an int64 (two's complement, low word first), then nanoseconds.
static void uint32s_to_timespec (struct timespec* ts, uint32_t** ints) {
  uint64_t sec = uint32s_to_uint64(ints);
  ts->tv_sec = (time_t) (int64_t) sec;
  ts->tv_nsec = *((*ints)++);
}

static void populate_stat (uint32_t *ints, struct stat* stat) {
  stat->st_mode = *ints++;
  stat->st_uid = *ints++;
  stat->st_gid = *ints++;
  stat->st_size = uint32s_to_uint64(&ints);
  stat->st_dev = *ints++;
  stat->st_nlink = *ints++;
  stat->st_ino = uint32s_to_uint64(&ints);
  stat->st_rdev = *ints++;
  stat->st_blksize = *ints++;
  stat->st_blocks = uint32s_to_uint64(&ints);
#ifdef __APPLE__
  uint32s_to_timespec(&stat->st_atimespec, &ints);
  uint32s_to_timespec(&stat->st_mtimespec, &ints);
  uint32s_to_timespec(&stat->st_ctimespec, &ints);
#else
  uint32s_to_timespec(&stat->st_atim, &ints);
  uint32s_to_timespec(&stat->st_mtim, &ints);
  uint32s_to_timespec(&stat->st_ctim, &ints);
#endif
}

// open/create/opendir answer (err, fh, openFlags). On success the fh is stored
// as given (0 is a valid handle) and openFlags bits 1/2/4 set direct_io,
// keep_cache, nonseekable. Missing or non-number values count as 0.
static void set_open_result (napi_env env, fuse_thread_locals_t *l, int32_t res, napi_value fh_value, napi_value flags_value) {
  if (res != 0 || l->info == NULL) return;

  uint32_t fh = 0;
  uint32_t flags = 0;
  napi_get_value_uint32(env, fh_value, &fh);
  napi_get_value_uint32(env, flags_value, &flags);

  l->info->fh = fh;
  if (flags & 1) l->info->direct_io = 1;
  if (flags & 2) l->info->keep_cache = 1;
  if (flags & 4) l->info->nonseekable = 1;
}

static void populate_statvfs (uint32_t *ints, struct statvfs* statvfs) {
  statvfs->f_bsize = *ints++;
  statvfs->f_frsize = *ints++;
  statvfs->f_blocks = *ints++;
  statvfs->f_bfree = *ints++;
  statvfs->f_bavail = *ints++;
  statvfs->f_files = *ints++;
  statvfs->f_ffree = *ints++;
  statvfs->f_favail = *ints++;
  statvfs->f_fsid = *ints++;
  statvfs->f_flag = *ints++;
  statvfs->f_namemax = *ints++;
}

// Methods

FUSE_METHOD(statfs, 1, 1, (const char * path, struct statvfs *statvfs), {
  l->path = path;
  l->statvfs = statvfs;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
}, {
  NAPI_ARGV_BUFFER_CAST(uint32_t*, ints, 2)
  populate_statvfs(ints, l->statvfs);
})

FUSE_METHOD(getattr, 1, 1, (const char *path, struct stat *stat), {
  l->path = path;
  l->stat = stat;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
}, {
  NAPI_ARGV_BUFFER_CAST(uint32_t*, ints, 2)
  populate_stat(ints, l->stat);
})

FUSE_METHOD(fgetattr, 2, 1, (const char *path, struct stat *stat, struct fuse_file_info *info), {
  l->path = path;
  l->stat = stat;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_get_undefined(env, &(argv[3]));
  }
}, {
  NAPI_ARGV_BUFFER_CAST(uint32_t*, ints, 2)
  populate_stat(ints, l->stat);
})

FUSE_METHOD_VOID(access, 2, 0, (const char *path, int mode), {
  l->path = path;
  l->mode = mode;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
})

FUSE_METHOD(open, 5, 2, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
  FUSE_NATIVE_CALLER_CREDS
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->flags, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
  napi_create_uint32(env, l->uid, &(argv[4]));
  napi_create_uint32(env, l->gid, &(argv[5]));
  napi_create_uint32(env, (uint32_t) l->pid, &(argv[6]));
}, {
  set_open_result(env, l, res, argv[2], argv[3]);
})

FUSE_METHOD(opendir, 3, 2, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
    napi_create_uint32(env, l->info->flags, &(argv[4]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
    napi_create_uint32(env, 0, &(argv[4]));
  }
}, {
  set_open_result(env, l, res, argv[2], argv[3]);
})

FUSE_METHOD(create, 6, 2, (const char *path, mode_t mode, struct fuse_file_info *info), {
  l->path = path;
  l->mode = mode;
  l->info = info;
  FUSE_NATIVE_CALLER_CREDS
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  napi_create_uint32(env, l->info != NULL ? (uint32_t) l->info->flags : 0, &(argv[4]));
  napi_create_uint32(env, l->uid, &(argv[5]));
  napi_create_uint32(env, l->gid, &(argv[6]));
  napi_create_uint32(env, (uint32_t) l->pid, &(argv[7]));
}, {
  set_open_result(env, l, res, argv[2], argv[3]);
})

// JS gets (path, atimeSec, atimeNsec, mtimeSec, mtimeNsec). With flag_utime_omit_ok
// (set in fuse_native_mount) libfuse 2.9 sets tv_nsec to UTIME_NOW / UTIME_OMIT for
// "set to now" / "leave alone"; passed on as is.
FUSE_METHOD_VOID(utimens, 5, 0, (const char *path, const struct timespec tv[2]), {
  l->path = path;
  if (tv != NULL) {
    l->atim = tv[0];
    l->mtim = tv[1];
  } else {
    l->atim.tv_sec = l->mtim.tv_sec = 0;
    l->atim.tv_nsec = l->mtim.tv_nsec = UTIME_NOW;
  }
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_int64(env, (int64_t) l->atim.tv_sec, &(argv[3]));
  napi_create_uint32(env, (uint32_t) l->atim.tv_nsec, &(argv[4]));
  napi_create_int64(env, (int64_t) l->mtim.tv_sec, &(argv[5]));
  napi_create_uint32(env, (uint32_t) l->mtim.tv_nsec, &(argv[6]));
})

FUSE_METHOD_VOID(release, 2, 0, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
})

FUSE_METHOD_VOID(releasedir, 2, 0, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
})

FUSE_METHOD(read, 6, 2, (const char *path, char *buf, size_t len, off_t offset, struct fuse_file_info *info), {
  l->path = path;
  l->buf = buf;
  l->len = len;
  l->offset = offset;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->info->fh, &(argv[3]));
  napi_create_external_buffer(env, l->len, (char *) l->buf, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, l->len, &(argv[5]));
  FUSE_UINT64_TO_INTS_ARGV(l->offset, 6)
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[3]) == napi_ok);
})

FUSE_METHOD(write, 6, 2, (const char *path, const char *buf, size_t len, off_t offset, struct fuse_file_info *info), {
  l->path = path;
  l->buf = buf;
  l->len = len;
  l->offset = offset;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->info->fh, &(argv[3]));
  napi_create_external_buffer(env, l->len, (char *) l->buf, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, l->len, &(argv[5]));
  FUSE_UINT64_TO_INTS_ARGV(l->offset, 6)
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[3]) == napi_ok);
})

FUSE_METHOD(readdir, 1, 2, (const char *path, void *buf, fuse_fill_dir_t filler, off_t offset, struct fuse_file_info *info), {
  l->buf = buf;
  l->path = path;
  l->offset = offset;
  l->info = info;
  l->readdir_filler = filler;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
}, {
  uint32_t stats_length;
  uint32_t names_length;
  napi_get_array_length(env, argv[3], &stats_length);
  napi_get_array_length(env, argv[2], &names_length);

  napi_value raw_names = argv[2];
  napi_value raw_stats = argv[3];

  if (names_length != stats_length) {
    NAPI_FOR_EACH(raw_names, raw_name) {
      NAPI_UTF8(name, 1024, raw_name)
      int err = l->readdir_filler((char *) l->buf, name, NULL, 0);
      if (err == 1) {
        break;
      }
    }
  } else {
    NAPI_FOR_EACH(raw_names, raw_name) {
      NAPI_UTF8(name, 1024, raw_name)
      napi_value raw_stat;
      napi_get_element(env, raw_stats, i, &raw_stat);

      NAPI_BUFFER_CAST(uint32_t*, stats_array, raw_stat);
      struct stat st;
      memset(&st, 0, sizeof(st));
      populate_stat(stats_array, &st);

      // TODO: It turns out readdirplus likely won't work with FUSE 29...
      // Metadata caching between readdir/getattr will be enabled when we upgrade fuse-shared-library
      int err = l->readdir_filler((char *) l->buf, name, (struct stat *) &st, 0);
      if (err == 1) {
        break;
      }
    }
  }
})

#ifdef __APPLE__

FUSE_METHOD(setxattr, 5, 1, (const char *path, const char *name, const char *value, size_t size, int flags, uint32_t position), {
  l->path = path;
  l->name = name;
  l->value = value;
  l->size = size;
  l->flags = flags;
  l->position = position;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
  napi_create_external_buffer(env, l->size, (char *) l->value, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, l->position, &(argv[5]));
  napi_create_uint32(env, l->flags, &(argv[6]));
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[2]) == napi_ok);
})

FUSE_METHOD(getxattr, 4, 1, (const char *path, const char *name, char *value, size_t size, uint32_t position), {
  l->path = path;
  l->name = name;
  l->value = value;
  l->size = size;
  l->position = position;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
  napi_create_external_buffer(env, l->size, (char *) l->value, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, l->position, &(argv[5]));
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[2]) == napi_ok);
})

#else

FUSE_METHOD(setxattr, 5, 1, (const char *path, const char *name, const char *value, size_t size, int flags), {
  l->path = path;
  l->name = name;
  l->value = value;
  l->size = size;
  l->flags = flags;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
  napi_create_external_buffer(env, l->size, (char *) l->value, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, 0, &(argv[5])); // normalize apis between mac and linux
  napi_create_uint32(env, l->flags, &(argv[6]));
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[2]) == napi_ok);
})

FUSE_METHOD(getxattr, 4, 1, (const char *path, const char *name, char *value, size_t size), {
  l->path = path;
  l->name = name;
  l->value = value;
  l->size = size;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
  napi_create_external_buffer(env, l->size, (char *) l->value, NULL, NULL, &(argv[4]));
  napi_create_uint32(env, 0, &(argv[5]));
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[2]) == napi_ok);
})

#endif

FUSE_METHOD(listxattr, 2, 1, (const char *path, char *list, size_t size), {
  l->path = path;
  l->list = list;
  l->size = size;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_external_buffer(env, l->size, l->list, NULL, NULL, &(argv[3]));
}, {
  if (IS_ARRAY_BUFFER_DETACH_SUPPORTED == 1) assert(napi_detach_arraybuffer(env, argv[2]) == napi_ok);
})

FUSE_METHOD_VOID(removexattr, 2, 0, (const char *path, const char *name), {
  l->path = path;
  l->name = name;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->name, NAPI_AUTO_LENGTH, &(argv[3]));
})

FUSE_METHOD_VOID(flush, 2, 0, (const char *path, struct fuse_file_info *info), {
  l->path = path;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
})

FUSE_METHOD_VOID(fsync, 3, 0, (const char *path, int datasync, struct fuse_file_info *info), {
  l->path = path;
  l->mode = datasync;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[4]));
  } else {
    napi_create_uint32(env, 0, &(argv[4]));
  }
})

FUSE_METHOD_VOID(fsyncdir, 3, 0, (const char *path, int datasync, struct fuse_file_info *info), {
  l->path = path;
  l->mode = datasync;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[4]));
  } else {
    napi_create_uint32(env, 0, &(argv[4]));
  }
})


// JS gets (path, size as two uint32 words, uid, gid, pid): a truncate by path has no handle that says who.
FUSE_METHOD_VOID(truncate, 6, 0, (const char *path, off_t size), {
  l->path = path;
  l->offset = size;
  FUSE_NATIVE_CALLER_CREDS
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  FUSE_UINT64_TO_INTS_ARGV(l->offset, 3)
  napi_create_uint32(env, l->uid, &(argv[5]));
  napi_create_uint32(env, l->gid, &(argv[6]));
  napi_create_uint32(env, (uint32_t) l->pid, &(argv[7]));
})

FUSE_METHOD_VOID(ftruncate, 4, 0, (const char *path, off_t size, struct fuse_file_info *info), {
  l->path = path;
  l->offset = size;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
  FUSE_UINT64_TO_INTS_ARGV(l->offset, 4)
})

// JS gets (path, fh, mode, offset, length), offset and length as two uint32 words each.
FUSE_METHOD_VOID(fallocate, 7, 0, (const char *path, int mode, off_t offset, off_t length, struct fuse_file_info *info), {
  l->path = path;
  l->flags = mode;
  l->offset = offset;
  l->len = (size_t) length;
  l->info = info;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  if (l->info != NULL) {
    napi_create_uint32(env, l->info->fh, &(argv[3]));
  } else {
    napi_create_uint32(env, 0, &(argv[3]));
  }
  napi_create_uint32(env, (uint32_t) l->flags, &(argv[4]));
  FUSE_UINT64_TO_INTS_ARGV(l->offset, 5)
  FUSE_UINT64_TO_INTS_ARGV(l->len, 7)
})

FUSE_METHOD(readlink, 1, 1, (const char *path, char *linkname, size_t len), {
  l->path = path;
  l->linkname = linkname;
  l->len = len;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
}, {
  NAPI_ARGV_UTF8(linkname, l->len, 2)
  strncpy(l->linkname, linkname, l->len);
})

FUSE_METHOD_VOID(chown, 3, 0, (const char *path, uid_t uid, gid_t gid), {
  l->path = path;
  l->uid = uid;
  l->gid = gid;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->uid, &(argv[3]));
  napi_create_uint32(env, l->gid, &(argv[4]));
})

FUSE_METHOD_VOID(chmod, 2, 0, (const char *path, mode_t mode), {
  l->path = path;
  l->mode = mode;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
})

FUSE_METHOD_VOID(mknod, 5, 0, (const char *path, mode_t mode, dev_t dev), {
  l->path = path;
  l->mode = mode;
  l->dev = dev;
  FUSE_NATIVE_CALLER_CREDS
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  napi_create_uint32(env, l->dev, &(argv[4]));
  napi_create_uint32(env, l->uid, &(argv[5]));
  napi_create_uint32(env, l->gid, &(argv[6]));
})

FUSE_METHOD_VOID(unlink, 1, 0, (const char *path), {
  l->path = path;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
})

FUSE_METHOD_VOID(rename, 2, 0, (const char *path, const char *dest), {
  l->path = path;
  l->dest = dest;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->dest, NAPI_AUTO_LENGTH, &(argv[3]));
})

FUSE_METHOD_VOID(link, 2, 0, (const char *path, const char *dest), {
  l->path = path;
  l->dest = dest;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->dest, NAPI_AUTO_LENGTH, &(argv[3]));
})

FUSE_METHOD_VOID(symlink, 4, 0, (const char *path, const char *dest), {
  l->path = path;
  l->dest = dest;
  FUSE_NATIVE_CALLER_CREDS
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_string_utf8(env, l->dest, NAPI_AUTO_LENGTH, &(argv[3]));
  napi_create_uint32(env, l->uid, &(argv[4]));
  napi_create_uint32(env, l->gid, &(argv[5]));
})

FUSE_METHOD_VOID(mkdir, 4, 0, (const char *path, mode_t mode), {
  l->path = path;
  l->mode = mode;
  FUSE_NATIVE_CALLER_CREDS
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
  napi_create_uint32(env, l->mode, &(argv[3]));
  napi_create_uint32(env, l->uid, &(argv[4]));
  napi_create_uint32(env, l->gid, &(argv[5]));
})

FUSE_METHOD_VOID(rmdir, 1, 0, (const char *path), {
  l->path = path;
}, {
  napi_create_string_utf8(env, l->path, NAPI_AUTO_LENGTH, &(argv[2]));
})

static void fuse_native_dispatch_init (uv_async_t* handle, fuse_thread_locals_t* l, fuse_thread_t* ft) {\
  FUSE_NATIVE_CALLBACK(ft->handlers[op_init], {
    napi_value argv[2];

    napi_get_reference_value(env, l->self, &(argv[0]));
    napi_create_uint32(env, l->op, &(argv[1]));

    NAPI_MAKE_CALLBACK(env, NULL, ctx, callback, 2, argv, NULL);
  })
}

NAPI_METHOD(fuse_native_signal_init) {
  NAPI_ARGV(2)
  NAPI_ARGV_BUFFER_CAST(fuse_thread_locals_t *, l, 0);
  NAPI_ARGV_INT32(res, 1);
  l->res = res;
  uv_sem_post(&(l->sem));
  return NULL;
}

static void * fuse_native_init (struct fuse_conn_info *conn) {
  fuse_thread_locals_t *l = get_thread_locals();

  l->op = op_init;
  l->op_fn = fuse_native_dispatch_init;

  uv_async_send(&(l->async));
  uv_sem_wait(&(l->sem));

  return l->fuse;
}

// read/write try ferry's native data path first (ferry-data.c); what it does
// not handle goes to the JS handler as before.
static int ferry_read (const char *path, char *buf, size_t len, off_t offset, struct fuse_file_info *info) {
  int res = ferry_data_read(path, buf, len, offset, info->fh);
  return res != FERRY_DATA_PASS ? res : fuse_native_read(path, buf, len, offset, info);
}

static int ferry_write (const char *path, const char *buf, size_t len, off_t offset, struct fuse_file_info *info) {
  int res = ferry_data_write(path, buf, len, offset, info->fh);
  return res != FERRY_DATA_PASS ? res : fuse_native_write(path, buf, len, offset, info);
}

// Top-level dispatcher

static void fuse_native_dispatch (uv_async_t* handle) {
  fuse_thread_locals_t *l = (fuse_thread_locals_t *) handle->data;
  fuse_thread_t *ft = l->fuse;
  void (*fn)(uv_async_t *, fuse_thread_locals_t *, fuse_thread_t *) = l->op_fn;

  fn(handle, l, ft);
}

static void fuse_native_async_init (uv_async_t* handle) {
  fuse_thread_t *ft = (fuse_thread_t *) handle->data;
  fuse_thread_locals_t *l;

  FUSE_NATIVE_CALLBACK(ft->malloc, {
    napi_value argv[1];
    napi_create_uint32(ft->env, (uint32_t) sizeof(fuse_thread_locals_t), &(argv[0]));

    napi_value buf;
    NAPI_MAKE_CALLBACK(ft->env, NULL, ctx, callback, 1, argv, &buf);

    size_t l_len;

    napi_get_buffer_info(env, buf, (void **) &l, &l_len);
    napi_create_reference(env, buf, 1, &(l->self));
  })


  int err = uv_async_init(uv_default_loop(), &(l->async), (uv_async_cb) fuse_native_dispatch);
  assert(err >= 0);

  uv_unref((uv_handle_t *) &(l->async));

  uv_sem_init(&(l->sem), 0);
  l->async.data = l;
  ft->async.data = l;
  l->fuse = ft;

  uv_sem_post(&(ft->sem));
}

static fuse_thread_locals_t* get_thread_locals () {
  struct fuse_context *ctx = fuse_get_context();
  fuse_thread_t *ft = (fuse_thread_t *) ctx->private_data;

  void *data = pthread_getspecific(thread_locals_key);

  if (data != NULL) {
    return (fuse_thread_locals_t *) data;
  }

  // Need to lock the mutation of l->async.
  uv_mutex_lock(&(ft->mut));
  ft->async.data = ft;

  // Notify the main thread to uv_async_init l->async.
  uv_async_send(&(ft->async));
  uv_sem_wait(&(ft->sem));

  fuse_thread_locals_t *l = (fuse_thread_locals_t*) ft->async.data;

  pthread_setspecific(thread_locals_key, (void *) l);
  uv_mutex_unlock(&(ft->mut));

  return l;
}

// ferry: the request loop, in place of libfuse 2.9's fuse_loop_mt. That one
// starts a worker whenever none is idle and ends one as soon as more than 10
// are idle: under 16 reads in flight it created ~90 threads a second here,
// and each new thread that calls into JS costs fuse-native a uv_async handle
// (and a Buffer) that is never freed, which every later wakeup of the JS
// thread scans. Here workers never end before the session does (libfuse
// 3.12's default), and the pool grows only when every worker has stayed busy
// for FERRY_LOOP_GROW_NS: a worker that has replied but not yet come back
// (preempted on a busy machine) is not a reason to add one. Workers held by a
// long op (a frozen subtree waits in JS) still let the pool grow, so that
// other files keep being served, up to FERRY_LOOP_MAX.
#define FERRY_LOOP_MAX 256
#define FERRY_LOOP_GROW_NS 1000000
#define FERRY_OPENS_MAX 256
#define FERRY_FOPEN_PARALLEL_DIRECT_WRITES (1 << 6)

typedef struct {
  struct fuse_session *se;
  struct fuse_chan *ch;
  pthread_mutex_t lock;
  pthread_cond_t wake; // to the loop's own thread: no worker idle, or one left
  int workers, gone;       // under lock
  atomic_int idle;         // workers waiting for a request: atomic, so a request takes no lock
  pthread_t threads[FERRY_LOOP_MAX];
  struct fuse_chan *reply_ch; // replies go through here (see ferry_reply_send)
  pthread_mutex_t opens_mu;
  atomic_int nopens;
  uint64_t opens[FERRY_OPENS_MAX]; // uniques of OPEN and CREATE requests awaiting their reply
} ferry_loop_t;

static void ferry_note_open (ferry_loop_t *loop, uint64_t unique) {
  pthread_mutex_lock(&loop->opens_mu);
  int n = atomic_load(&loop->nopens);
  // Full: this open keeps the kernel's one-writer-at-a-time, which is only slower.
  if (n < FERRY_OPENS_MAX) {
    loop->opens[n] = unique;
    atomic_store(&loop->nopens, n + 1);
  }
  pthread_mutex_unlock(&loop->opens_mu);
}

static bool ferry_take_open (ferry_loop_t *loop, uint64_t unique) {
  if (atomic_load(&loop->nopens) == 0) return false;
  bool found = false;
  pthread_mutex_lock(&loop->opens_mu);
  int n = atomic_load(&loop->nopens);
  for (int i = 0; i < n && !found; i++) {
    if (loop->opens[i] == unique) {
      loop->opens[i] = loop->opens[n - 1];
      atomic_store(&loop->nopens, n - 1);
      found = true;
    }
  }
  pthread_mutex_unlock(&loop->opens_mu);
  return found;
}

// Every reply passes here on its way to the kernel. A successful OPEN or CREATE
// reply with FOPEN_DIRECT_IO also gets FOPEN_PARALLEL_DIRECT_WRITES (Linux 6.2,
// unknown to libfuse 2.9): without it the kernel holds the inode lock across
// each write's round trip, so writes to one file reach us one at a time.
static int ferry_reply_send (struct fuse_chan *ch, const struct iovec iov[], size_t count) {
  ferry_loop_t *loop = (ferry_loop_t *) fuse_chan_data(ch);
  // fuse_reply_none sends nothing (count 0): it only lets go of the request.
  const struct fuse_out_header *out = count > 0 ? (const struct fuse_out_header *) iov[0].iov_base : NULL;
  if (out != NULL && iov[0].iov_len >= sizeof(*out) && ferry_take_open(loop, out->unique) && out->error == 0 && count >= 2 && count <= 4) {
    const struct iovec *last = &iov[count - 1];
    char arg[512];
    // struct fuse_open_out ends the reply (CREATE puts its entry first): fh, open_flags, padding.
    if (last->iov_len >= sizeof(struct fuse_open_out) && last->iov_len <= sizeof(arg)) {
      memcpy(arg, last->iov_base, last->iov_len);
      struct fuse_open_out *open_out = (struct fuse_open_out *) (arg + last->iov_len - sizeof(struct fuse_open_out));
      if (open_out->open_flags & FOPEN_DIRECT_IO) {
        open_out->open_flags |= FERRY_FOPEN_PARALLEL_DIRECT_WRITES;
        struct iovec copy[4];
        memcpy(copy, iov, count * sizeof(struct iovec));
        copy[count - 1].iov_base = arg;
        return fuse_chan_send(loop->ch, copy, count);
      }
    }
  }
  return fuse_chan_send(loop->ch, iov, count);
}

static void *ferry_loop_worker (void *arg);

// With loop->lock held.
static void ferry_loop_spawn (ferry_loop_t *loop) {
  // Signals stay with Node's threads.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int err = pthread_create(&loop->threads[loop->workers], NULL, ferry_loop_worker, loop);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (err != 0) return;
  loop->workers++;
  atomic_fetch_add(&loop->idle, 1);
}

static void *ferry_loop_worker (void *arg) {
  ferry_loop_t *loop = (ferry_loop_t *) arg;
  size_t size = fuse_chan_bufsize(loop->ch);
  char *mem = malloc(size);
  // Cancelled (at unmount) only while waiting for a request, never mid-request.
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
  long served_ns = -1; // how long the last request took to answer (-1: it got no reply)
  while (mem != NULL && !fuse_session_exited(loop->se)) {
    if (served_ns >= 0) ferry_data_poll(fuse_chan_fd(loop->ch), served_ns);
    struct fuse_chan *ch = loop->ch;
    struct fuse_buf buf = { .mem = mem, .size = size };
    int res;
    pthread_cleanup_push(free, mem);
    pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
    res = fuse_session_receive_buf(loop->se, &buf, &ch);
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    pthread_cleanup_pop(0);
    if (res == -EINTR) continue;
    if (res <= 0) break;
    // FORGETs take no time and get no reply: a burst of them must not grow the pool.
    const struct fuse_in_header *in = (buf.flags & FUSE_BUF_IS_FD) ? NULL : (const struct fuse_in_header *) mem;
    uint32_t opcode = in != NULL ? in->opcode : 0;
    bool counted = opcode != FUSE_FORGET && opcode != FUSE_BATCH_FORGET;
    if ((opcode == FUSE_OPEN || opcode == FUSE_CREATE) && loop->reply_ch != NULL) ferry_note_open(loop, in->unique);
    // The last idle worker wakes the loop's thread, under its lock: it cannot miss the wakeup.
    if (counted && atomic_fetch_sub(&loop->idle, 1) == 1) {
      pthread_mutex_lock(&loop->lock);
      pthread_cond_signal(&loop->wake);
      pthread_mutex_unlock(&loop->lock);
    }
    struct timespec began, ended;
    clock_gettime(CLOCK_MONOTONIC, &began);
    fuse_session_process_buf(loop->se, &buf, loop->reply_ch != NULL ? loop->reply_ch : ch);
    clock_gettime(CLOCK_MONOTONIC, &ended);
    if (counted) atomic_fetch_add(&loop->idle, 1);
    served_ns = counted ? (ended.tv_sec - began.tv_sec) * 1000000000L + (ended.tv_nsec - began.tv_nsec) : -1;
  }
  free(mem);
  // Unmounted (the read gave ENODEV, which also ends the session) or failed.
  fuse_session_exit(loop->se);
  pthread_mutex_lock(&loop->lock);
  loop->gone++;
  pthread_cond_signal(&loop->wake);
  pthread_mutex_unlock(&loop->lock);
  return NULL;
}

static void ferry_loop_run (struct fuse *fuse, struct fuse_chan *ch) {
  ferry_loop_t *loop = (ferry_loop_t *) calloc(1, sizeof(ferry_loop_t));
  if (loop == NULL || fuse_start_cleanup_thread(fuse) != 0) {
    free(loop);
    return;
  }
  loop->se = fuse_get_session(fuse);
  loop->ch = ch;
  pthread_mutex_init(&loop->lock, NULL);
  pthread_mutex_init(&loop->opens_mu, NULL);
  static struct fuse_chan_ops reply_ops = { .send = ferry_reply_send };
  // Without it (out of memory) replies go straight to the channel, with the kernel's serialized writes.
  loop->reply_ch = fuse_chan_new(&reply_ops, fuse_chan_fd(ch), fuse_chan_bufsize(ch), loop);
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&loop->wake, &attr);
  pthread_condattr_destroy(&attr);

  pthread_mutex_lock(&loop->lock);
  ferry_loop_spawn(loop);
  while (loop->workers > 0 && loop->gone == 0) {
    if (atomic_load(&loop->idle) > 0 || loop->workers == FERRY_LOOP_MAX) {
      pthread_cond_wait(&loop->wake, &loop->lock);
      continue;
    }
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += FERRY_LOOP_GROW_NS;
    if (until.tv_nsec >= 1000000000) { until.tv_sec++; until.tv_nsec -= 1000000000; }
    while (atomic_load(&loop->idle) == 0 && loop->gone == 0 &&
           pthread_cond_timedwait(&loop->wake, &loop->lock, &until) != ETIMEDOUT) {}
    if (atomic_load(&loop->idle) == 0 && loop->gone == 0) ferry_loop_spawn(loop);
  }
  // The others are still waiting in read(2) on /dev/fuse, or finishing a request.
  int workers = loop->workers;
  pthread_mutex_unlock(&loop->lock);
  for (int i = 0; i < workers; i++) pthread_cancel(loop->threads[i]);
  for (int i = 0; i < workers; i++) pthread_join(loop->threads[i], NULL);
  fuse_stop_cleanup_thread(fuse);
  if (loop->reply_ch != NULL) fuse_chan_destroy(loop->reply_ch);
  pthread_mutex_destroy(&loop->opens_mu);
  pthread_cond_destroy(&loop->wake);
  pthread_mutex_destroy(&loop->lock);
  free(loop);
}

static void* start_fuse_thread (void *data) {
  fuse_thread_t *ft = (fuse_thread_t *) data;
  ferry_loop_run(ft->fuse, ft->ch);

  fuse_unmount(ft->mnt, ft->ch);
  fuse_session_remove_chan(ft->ch);
  fuse_destroy(ft->fuse);

  return NULL;
}

NAPI_METHOD(fuse_native_mount) {
  NAPI_ARGV(7)

  NAPI_ARGV_UTF8(mnt, 1024, 0);
  NAPI_ARGV_UTF8(mntopts, 1024, 1);
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 2);
  napi_create_reference(env, argv[3], 1, &(ft->ctx));
  napi_create_reference(env, argv[4], 1, &(ft->malloc));
  napi_value handlers = argv[5];
  NAPI_ARGV_BUFFER_CAST(uint32_t *, implemented, 6)

  for (int i = 0; i < 35; i++) {
    ft->handlers[i] = NULL;
  }

  NAPI_FOR_EACH(handlers, handler) {
    napi_create_reference(env, handler, 1, &ft->handlers[i]);
  }

  ft->env = env;

  struct fuse_operations ops = { };
  if (implemented[op_access]) ops.access = fuse_native_access;
  if (implemented[op_truncate]) ops.truncate = fuse_native_truncate;
  if (implemented[op_ftruncate]) ops.ftruncate = fuse_native_ftruncate;
  if (implemented[op_fallocate]) ops.fallocate = fuse_native_fallocate;
  if (implemented[op_getattr]) ops.getattr = fuse_native_getattr;
  if (implemented[op_fgetattr]) ops.fgetattr = fuse_native_fgetattr;
  if (implemented[op_flush]) ops.flush = fuse_native_flush;
  if (implemented[op_fsync]) ops.fsync = fuse_native_fsync;
  if (implemented[op_fsyncdir]) ops.fsyncdir = fuse_native_fsyncdir;
  if (implemented[op_readdir]) ops.readdir = fuse_native_readdir;
  if (implemented[op_readlink]) ops.readlink = fuse_native_readlink;
  if (implemented[op_chown]) ops.chown = fuse_native_chown;
  if (implemented[op_chmod]) ops.chmod = fuse_native_chmod;
  if (implemented[op_mknod]) ops.mknod = fuse_native_mknod;
  if (implemented[op_setxattr]) ops.setxattr = fuse_native_setxattr;
  if (implemented[op_getxattr]) ops.getxattr = fuse_native_getxattr;
  if (implemented[op_listxattr]) ops.listxattr = fuse_native_listxattr;
  if (implemented[op_removexattr]) ops.removexattr = fuse_native_removexattr;
  if (implemented[op_statfs]) ops.statfs = fuse_native_statfs;
  if (implemented[op_open]) ops.open = fuse_native_open;
  if (implemented[op_opendir]) ops.opendir = fuse_native_opendir;
  if (implemented[op_read]) ops.read = ferry_read;
  if (implemented[op_write]) ops.write = ferry_write;
  if (implemented[op_release]) ops.release = fuse_native_release;
  if (implemented[op_releasedir]) ops.releasedir = fuse_native_releasedir;
  if (implemented[op_create]) ops.create = fuse_native_create;
  if (implemented[op_utimens]) ops.utimens = fuse_native_utimens;
  // Without this flag libfuse 2.9 only calls utimens when atime AND mtime are
  // both set (touch -m / -a are silently dropped) and resolves "now" itself.
  if (implemented[op_utimens]) ops.flag_utime_omit_ok = 1;
  if (implemented[op_unlink]) ops.unlink = fuse_native_unlink;
  if (implemented[op_rename]) ops.rename = fuse_native_rename;
  if (implemented[op_link]) ops.link = fuse_native_link;
  if (implemented[op_symlink]) ops.symlink = fuse_native_symlink;
  if (implemented[op_mkdir]) ops.mkdir = fuse_native_mkdir;
  if (implemented[op_rmdir]) ops.rmdir = fuse_native_rmdir;
  if (implemented[op_init]) ops.init = fuse_native_init;

  int _argc = (strcmp(mntopts, "-o") <= 0) ? 1 : 2;
  char *_argv[] = {
    (char *) "fuse_bindings_dummy",
    (char *) mntopts
  };

  struct fuse_args args = FUSE_ARGS_INIT(_argc, _argv);
  struct fuse_chan *ch = fuse_mount(mnt, &args);

  if (ch == NULL) {
    napi_throw_error(env, "fuse failed", "fuse failed");
    return NULL;
  }

  struct fuse *fuse = fuse_new(ch, &args, &ops, sizeof(struct fuse_operations), ft);

  if (fuse == NULL) {
    // e.g. an option libfuse does not know: do not leave a mount behind that nobody serves
    fuse_unmount(mnt, ch);
    napi_throw_error(env, "fuse failed", "fuse failed");
    return NULL;
  }

  uv_mutex_init(&(ft->mut));
  uv_sem_init(&(ft->sem), 0);

  strncpy(ft->mnt, mnt, 1024);
  strncpy(ft->mntopts, mntopts, 1024);
  ft->fuse = fuse;
  ft->ch = ch;
  ft->mounted++;

  int err = uv_async_init(uv_default_loop(), &(ft->async), (uv_async_cb) fuse_native_async_init);

  if (fuse == NULL || err < 0) {
    napi_throw_error(env, "fuse failed", "fuse failed");
    return NULL;
  }

  pthread_attr_init(&(ft->attr));
  pthread_create(&(ft->thread), &(ft->attr), start_fuse_thread, ft);

  return NULL;
}

NAPI_METHOD(fuse_native_unmount) {
  NAPI_ARGV(2)
  NAPI_ARGV_UTF8(mnt, 1024, 0);
  NAPI_ARGV_BUFFER_CAST(fuse_thread_t *, ft, 1);

  if (ft != NULL && ft->mounted) {
    // TODO: Investigate why the FUSE thread is not always killed after fusermount.
    // pthread_join(ft->thread, NULL);
  }

  // TODO: fix the async holding the loop
  uv_unref((uv_handle_t *) &(ft->async));
  ft->mounted--;

  return NULL;
}

#ifdef __linux__
// Fuse.io: syscalls Node's fs lacks (l*xattr, lseek SEEK_DATA/SEEK_HOLE,
// copy_file_range with explicit offsets, fallocate, utimensat, mknod). Each call is a
// napi_async_work: the syscall runs on the libuv threadpool, so the JS thread
// that answers FUSE requests never blocks. Results: cb(0 or -errno, value).

#define IO_MAX_SAFE_INTEGER 9007199254740991LL
#define IO_COPY_BUF (1 << 20)

typedef enum { IO_RES_NONE, IO_RES_NUMBER, IO_RES_BUFFER, IO_RES_NAMES } io_res_t;

typedef struct {
  napi_async_work work;
  napi_ref cb;
  io_res_t res_type;
  int err; // 0 or -errno; set early by argument checks or by execute
  char path[PATH_MAX];
  char name[XATTR_NAME_MAX + 1];
  char *data; // xattr value / name list, owned by the request
  size_t len;
  int64_t fd_in, fd_out, whence, flags;
  int64_t off_in, off_out, length;
  int64_t sec[2], nsec[2]; // utimensat: atime, mtime
  int64_t result;
} io_req_t;

// The JS string may be gone when the threadpool runs, so copy it into the request.
static napi_status io_arg_string (napi_env env, napi_value v, char *dst, size_t cap, int *err) {
  size_t len;
  napi_status s = napi_get_value_string_utf8(env, v, NULL, 0, &len);
  if (s != napi_ok) return s;
  if (len >= cap) {
    if (*err == 0) *err = -ENAMETOOLONG;
    return napi_ok;
  }
  napi_get_value_string_utf8(env, v, dst, cap, &len);
  if (strlen(dst) != len && *err == 0) *err = -EINVAL; // embedded NUL
  return napi_ok;
}

// JS numbers are doubles: accept only integers in [min, max] (offsets up to 2^53 - 1).
static napi_status io_arg_int (napi_env env, napi_value v, int64_t min, int64_t max, int64_t *out) {
  double d;
  napi_status s = napi_get_value_double(env, v, &d);
  if (s != napi_ok) return s;
  if (!(d >= (double) min && d <= (double) max) || d != (double) (int64_t) d) return napi_invalid_arg;
  *out = (int64_t) d;
  return napi_ok;
}

// The value is copied too: the caller may reuse its Buffer before the syscall runs.
static napi_status io_arg_buffer (napi_env env, napi_value v, io_req_t *r) {
  bool is_buffer = false;
  void *buf;
  if (napi_is_buffer(env, v, &is_buffer) != napi_ok || !is_buffer) return napi_invalid_arg;
  if (napi_get_buffer_info(env, v, &buf, &r->len) != napi_ok) return napi_invalid_arg;
  if (r->len > XATTR_SIZE_MAX) {
    if (r->err == 0) r->err = -E2BIG;
    return napi_ok;
  }
  r->data = malloc(r->len ? r->len : 1);
  if (r->data == NULL) return napi_generic_failure;
  memcpy(r->data, buf, r->len);
  return napi_ok;
}

// lgetxattr/llistxattr: size query, then read. A value that grew in between
// gives ERANGE, so ask again (bounded). The buffer is one byte larger than the
// size so that a value that grew from empty cannot pass as a size query.
static void io_xattr_read_exec (napi_env env, void *data) {
  io_req_t *r = (io_req_t *) data;
  if (r->err) return;
  for (int tries = 0; tries < 16; tries++) {
    ssize_t size = r->res_type == IO_RES_NAMES
      ? llistxattr(r->path, NULL, 0)
      : lgetxattr(r->path, r->name, NULL, 0);
    if (size < 0) { r->err = -errno; return; }
    free(r->data);
    r->data = malloc(size + 1);
    if (r->data == NULL) { r->err = -ENOMEM; return; }
    ssize_t n = r->res_type == IO_RES_NAMES
      ? llistxattr(r->path, r->data, size + 1)
      : lgetxattr(r->path, r->name, r->data, size + 1);
    if (n >= 0) { r->len = n; return; }
    if (errno != ERANGE) { r->err = -errno; return; }
  }
  r->err = -ERANGE;
}

// lsetxattr: flags (XATTR_CREATE / XATTR_REPLACE) are passed through.
static void io_lsetxattr_exec (napi_env env, void *data) {
  io_req_t *r = (io_req_t *) data;
  if (r->err == 0 && lsetxattr(r->path, r->name, r->data, r->len, (int) r->flags) < 0) r->err = -errno;
}

// lremovexattr: does not follow symlinks, like the other l*xattr calls.
static void io_lremovexattr_exec (napi_env env, void *data) {
  io_req_t *r = (io_req_t *) data;
  if (r->err == 0 && lremovexattr(r->path, r->name) < 0) r->err = -errno;
}

// lseek for SEEK_DATA / SEEK_HOLE (ENXIO: no data at or after the offset). Moves the fd's position.
static void io_seek_exec (napi_env env, void *data) {
  io_req_t *r = (io_req_t *) data;
  off_t off = lseek((int) r->fd_in, (off_t) r->off_in, (int) r->whence);
  if (off < 0) r->err = -errno;
  else r->result = off;
}

// fallocate(2) with the mode as given (index.js's punchHole is PUNCH_HOLE | KEEP_SIZE); the filesystem's own
// errno comes back, e.g. EOPNOTSUPP for a mode it lacks.
static void io_fallocate_exec (napi_env env, void *data) {
  io_req_t *r = (io_req_t *) data;
  int res;
  do {
    res = fallocate((int) r->fd_in, (int) r->flags, (off_t) r->off_in, (off_t) r->length);
  } while (res < 0 && errno == EINTR);
  if (res < 0) r->err = -errno;
}

// utimensat(AT_FDCWD, path, times, flags): nanoseconds exact; UTIME_NOW and UTIME_OMIT go to the kernel as they
// are, so "now" is the kernel's clock and an omitted time is never read and written back.
static void io_utimensat_exec (napi_env env, void *data) {
  io_req_t *r = (io_req_t *) data;
  struct timespec ts[2] = {
    { .tv_sec = (time_t) r->sec[0], .tv_nsec = (long) r->nsec[0] },
    { .tv_sec = (time_t) r->sec[1], .tv_nsec = (long) r->nsec[1] },
  };
  if (r->err == 0 && utimensat(AT_FDCWD, r->path, ts, (int) r->flags) < 0) r->err = -errno;
}

// pread/pwrite fallback for copy_file_range. Refuses what copy_file_range
// refuses for a reason: read-only or O_APPEND outputs (pwrite would ignore the
// offset) and overlapping ranges in one file (a forward copy would corrupt them).
static int64_t io_copy_rw (io_req_t *r) {
  int in = (int) r->fd_in, out = (int) r->fd_out;
  struct stat si, so;
  int fl = fcntl(out, F_GETFL);
  if (fl < 0 || fstat(in, &si) < 0 || fstat(out, &so) < 0) return -errno;
  if ((fl & O_APPEND) || (fl & O_ACCMODE) == O_RDONLY) return -EBADF;
  if (si.st_dev == so.st_dev && si.st_ino == so.st_ino &&
      r->off_in < r->off_out + r->length && r->off_out < r->off_in + r->length) return -EINVAL;

  char *buf = malloc(IO_COPY_BUF);
  if (buf == NULL) return -ENOMEM;
  int64_t done = 0;
  while (done < r->length) {
    size_t want = r->length - done < IO_COPY_BUF ? (size_t) (r->length - done) : IO_COPY_BUF;
    ssize_t n = pread(in, buf, want, r->off_in + done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) { done = -errno; break; }
    if (n == 0) break; // EOF
    for (ssize_t w = 0; w < n; ) {
      ssize_t m = pwrite(out, buf + w, n - w, r->off_out + done + w);
      if (m < 0 && errno == EINTR) continue;
      if (m < 0) { free(buf); return -errno; }
      w += m;
    }
    done += n;
  }
  free(buf);
  return done;
}

// copy_file_range with explicit offsets (file positions stay put) until length
// or EOF. If the first call fails with an "unsupported here" error (e.g. EXDEV
// across filesystems) or returns 0 (some special files), fall back to
// pread/pwrite, which reports any genuine error (bad fd, bad offset) again.
static void io_copy_range_exec (napi_env env, void *data) {
  io_req_t *r = (io_req_t *) data;
  loff_t in = r->off_in, out = r->off_out;
  int64_t done = 0;
  while (done < r->length) {
    ssize_t n = copy_file_range((int) r->fd_in, &in, (int) r->fd_out, &out, r->length - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (done == 0 && (n == 0 || (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
        errno == EOPNOTSUPP || errno == EBADF || errno == EPERM)))) {
      done = io_copy_rw(r);
      break;
    }
    if (n < 0) { done = -errno; break; }
    if (n == 0) break; // EOF
    done += n;
  }
  if (done < 0) r->err = (int) done;
  else r->result = done;
}

// Into a fresh (all-hole) destination: read IO_SPARSE_PIECE at a time, as cp
// does, and write only the IO_SPARSE_BLOCK blocks holding a non-zero byte, so
// all-zero blocks stay holes (cp --sparse=always). Result: bytes read.
#define IO_SPARSE_PIECE (128 << 10)
#define IO_SPARSE_BLOCK 4096
static const char io_zero_block[IO_SPARSE_BLOCK];

static int io_pwrite_all (int fd, const char *buf, size_t len, off_t off) {
  for (size_t w = 0; w < len; ) {
    ssize_t m = pwrite(fd, buf + w, len - w, off + w);
    if (m < 0 && errno == EINTR) continue;
    if (m < 0) return -errno;
    w += m;
  }
  return 0;
}

// Write-behind: every IO_WB_STEP bytes, start the writeback of what was just written and wait for the
// range written IO_WB_LAG bytes earlier. The copy then goes at the pace the destination stores data,
// with bounded dirty memory, and the fsync that ends the pass finds little left: a guest's I/O no longer
// queues behind a whole file's flush. Offsets are absolute, so chunks copied one after the other
// continue one pipeline.
#define IO_WB_STEP (1 << 20)
#define IO_WB_LAG (8 << 20)

// A writeback error reported here is consumed for this open file (errseq): a later fsync of the copy
// would not see it again, so it must fail the copy.
static int io_write_behind (int fd, off_t from, off_t to) {
  if (sync_file_range(fd, from, to - from, SYNC_FILE_RANGE_WRITE) < 0) return -errno;
  if (from < IO_WB_LAG) return 0;
  unsigned int wait = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER;
  if (sync_file_range(fd, from - IO_WB_LAG, to - from, wait) < 0) return -errno;
  return 0;
}

static void io_copy_sparse_exec (napi_env env, void *data) {
  io_req_t *r = (io_req_t *) data;
  char *buf = malloc(IO_SPARSE_PIECE);
  if (buf == NULL) { r->err = -ENOMEM; return; }
  // As cp does: a larger readahead window on this (the copier's own) open file; ignored where unsupported.
  posix_fadvise((int) r->fd_in, 0, 0, POSIX_FADV_SEQUENTIAL);
  int64_t done = 0;
  off_t wb_from = r->off_out;
  while (done < r->length) {
    size_t want = r->length - done < IO_SPARSE_PIECE ? (size_t) (r->length - done) : IO_SPARSE_PIECE;
    ssize_t n = pread((int) r->fd_in, buf, want, r->off_in + done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) { r->err = -errno; break; }
    if (n == 0) break; // EOF
    ssize_t run = -1; // start of the current run of non-zero blocks
    for (ssize_t at = 0; at <= n; at += IO_SPARSE_BLOCK) {
      size_t len = at < n ? (n - at < IO_SPARSE_BLOCK ? (size_t) (n - at) : IO_SPARSE_BLOCK) : 0;
      bool zero = len == 0 || memcmp(buf + at, io_zero_block, len) == 0;
      if (!zero && run < 0) run = at;
      if (zero && run >= 0) {
        int e = io_pwrite_all((int) r->fd_out, buf + run, at - run, r->off_out + done + run);
        if (e < 0) { r->err = e; free(buf); return; }
        run = -1;
      }
    }
    if (run >= 0) {
      int e = io_pwrite_all((int) r->fd_out, buf + run, n - run, r->off_out + done + run);
      if (e < 0) { r->err = e; break; }
    }
    done += n;
    off_t written_to = r->off_out + done;
    if (written_to - wb_from >= IO_WB_STEP || done == r->length) {
      int e = io_write_behind((int) r->fd_out, wb_from, written_to);
      if (e < 0) { r->err = e; break; }
      wb_from = written_to;
    }
  }
  free(buf);
  if (r->err == 0) r->result = done;
}

// Runs on the JS thread: build the result in its own handle scope, free the
// request, then call cb (Node has already entered the work's async context).
static void io_complete (napi_env env, napi_status status, void *data) {
  io_req_t *r = (io_req_t *) data;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);

  napi_value argv[2], cb, recv;
  size_t argc = 1;
  int err = status == napi_ok ? r->err : -ECANCELED;

  if (err == 0 && r->res_type == IO_RES_NUMBER) {
    if (napi_create_int64(env, r->result, &argv[1]) == napi_ok) argc = 2;
  } else if (err == 0 && r->res_type == IO_RES_BUFFER) {
    if (napi_create_buffer_copy(env, r->len, r->data, NULL, &argv[1]) == napi_ok) argc = 2;
  } else if (err == 0 && r->res_type == IO_RES_NAMES) {
    if (napi_create_array(env, &argv[1]) == napi_ok) argc = 2;
    uint32_t i = 0;
    for (size_t p = 0; argc == 2 && p < r->len; i++) {
      size_t n = strnlen(r->data + p, r->len - p);
      napi_value name;
      if (napi_create_string_utf8(env, r->data + p, n, &name) != napi_ok ||
          napi_set_element(env, argv[1], i, name) != napi_ok) argc = 1;
      p += n + 1;
    }
  }
  if (err == 0 && r->res_type != IO_RES_NONE && argc == 1) err = -ENOMEM;

  napi_create_int32(env, err, &argv[0]);
  napi_get_reference_value(env, r->cb, &cb);
  napi_get_undefined(env, &recv);
  napi_delete_reference(env, r->cb);
  napi_delete_async_work(env, r->work);
  free(r->data);
  free(r);

  // A throwing cb becomes an uncaught exception, as for fs callbacks.
  napi_call_function(env, recv, cb, argc, argv, NULL);
  napi_close_handle_scope(env, scope);
}

// Checks the callback, then queues the request; bad arguments throw a TypeError.
static napi_value io_queue (napi_env env, io_req_t *r, bool ok, napi_value cb, const char *name, napi_async_execute_callback exec) {
  napi_valuetype type;
  napi_value resource_name;
  ok = ok && napi_typeof(env, cb, &type) == napi_ok && type == napi_function;
  if (!ok) {
    free(r->data);
    free(r);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "Fuse.io: invalid arguments");
    return NULL;
  }
  napi_status s = napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name);
  if (s == napi_ok) s = napi_create_reference(env, cb, 1, &r->cb);
  if (s == napi_ok) s = napi_create_async_work(env, NULL, resource_name, exec, io_complete, r, &r->work);
  if (s == napi_ok) s = napi_queue_async_work(env, r->work);
  if (s != napi_ok) {
    if (r->work != NULL) napi_delete_async_work(env, r->work);
    if (r->cb != NULL) napi_delete_reference(env, r->cb);
    free(r->data);
    free(r);
    napi_throw_error(env, NULL, "Fuse.io: cannot queue work");
  }
  return NULL;
}

#define IO_METHOD(fn, nargs, res, exec, parse)\
  NAPI_METHOD(fuse_native_io_##fn) {\
    NAPI_ARGV(nargs)\
    io_req_t *r = (io_req_t *) calloc(1, sizeof(io_req_t));\
    if (r == NULL) { napi_throw_error(env, NULL, "Fuse.io: out of memory"); return NULL; }\
    r->res_type = res;\
    bool ok = true;\
    parse\
    return io_queue(env, r, ok, argv[nargs - 1], "Fuse.io." #fn, exec);\
  }

#define IO_PATH(i) ok = ok && io_arg_string(env, argv[i], r->path, sizeof(r->path), &r->err) == napi_ok;
#define IO_NAME(i) ok = ok && io_arg_string(env, argv[i], r->name, sizeof(r->name), &r->err) == napi_ok;
#define IO_INT(i, field, min, max) ok = ok && io_arg_int(env, argv[i], min, max, &r->field) == napi_ok;
#define IO_FD(i, field) IO_INT(i, field, 0, INT32_MAX)
#define IO_OFF(i, field) IO_INT(i, field, 0, IO_MAX_SAFE_INTEGER)

IO_METHOD(lgetxattr, 3, IO_RES_BUFFER, io_xattr_read_exec, { IO_PATH(0) IO_NAME(1) })
IO_METHOD(llistxattr, 2, IO_RES_NAMES, io_xattr_read_exec, { IO_PATH(0) })
IO_METHOD(lsetxattr, 5, IO_RES_NONE, io_lsetxattr_exec, {
  IO_PATH(0) IO_NAME(1)
  ok = ok && io_arg_buffer(env, argv[2], r) == napi_ok;
  IO_INT(3, flags, INT32_MIN, INT32_MAX)
})
IO_METHOD(lremovexattr, 3, IO_RES_NONE, io_lremovexattr_exec, { IO_PATH(0) IO_NAME(1) })
IO_METHOD(seek, 4, IO_RES_NUMBER, io_seek_exec, { IO_FD(0, fd_in) IO_OFF(1, off_in) IO_INT(2, whence, INT32_MIN, INT32_MAX) })
IO_METHOD(copy_range, 6, IO_RES_NUMBER, io_copy_range_exec, {
  IO_FD(0, fd_in) IO_OFF(1, off_in) IO_FD(2, fd_out) IO_OFF(3, off_out) IO_OFF(4, length)
})
IO_METHOD(copy_sparse, 6, IO_RES_NUMBER, io_copy_sparse_exec, {
  IO_FD(0, fd_in) IO_OFF(1, off_in) IO_FD(2, fd_out) IO_OFF(3, off_out) IO_OFF(4, length)
})
IO_METHOD(fallocate, 5, IO_RES_NONE, io_fallocate_exec, { IO_FD(0, fd_in) IO_INT(1, flags, 0, INT32_MAX) IO_OFF(2, off_in) IO_OFF(3, length) })
// Seconds may be negative; the kernel checks the nanoseconds (EINVAL unless 0..999999999, UTIME_NOW or UTIME_OMIT).
IO_METHOD(utimensat, 7, IO_RES_NONE, io_utimensat_exec, {
  IO_PATH(0)
  IO_INT(1, sec[0], -IO_MAX_SAFE_INTEGER, IO_MAX_SAFE_INTEGER) IO_INT(2, nsec[0], 0, INT32_MAX)
  IO_INT(3, sec[1], -IO_MAX_SAFE_INTEGER, IO_MAX_SAFE_INTEGER) IO_INT(4, nsec[1], 0, INT32_MAX)
  IO_INT(5, flags, 0, INT32_MAX)
})

// mknod(2) for every node type, sockets included (coreutils' mknod makes none). The FUSE request's rdev is
// the kernel's encoding, which glibc's dev_t matches for every major below 4096.
static void io_mknod_exec (napi_env env, void *data) {
  io_req_t *r = (io_req_t *) data;
  if (r->err == 0 && mknod(r->path, (mode_t) r->flags, (dev_t) r->off_in) < 0) r->err = -errno;
}
IO_METHOD(mknod, 4, IO_RES_NONE, io_mknod_exec, { IO_PATH(0) IO_INT(1, flags, 0, INT32_MAX) IO_OFF(2, off_in) })
#endif

NAPI_INIT() {
  const napi_node_version* version;
  assert(napi_get_node_version(env, &version) == napi_ok);

  if (version->major > 12 || (version->major == 12 && version->minor >= 16)) {
    IS_ARRAY_BUFFER_DETACH_SUPPORTED = 1;
  }

  pthread_key_create(&(thread_locals_key), NULL); // TODO: add destructor

  NAPI_EXPORT_SIZEOF(fuse_thread_t)
  NAPI_EXPORT_UINT32(ferry_patchset)
  ferry_data_export(env, exports);

#ifdef __linux__
  NAPI_EXPORT_FUNCTION(fuse_native_io_lgetxattr)
  NAPI_EXPORT_FUNCTION(fuse_native_io_lsetxattr)
  NAPI_EXPORT_FUNCTION(fuse_native_io_llistxattr)
  NAPI_EXPORT_FUNCTION(fuse_native_io_lremovexattr)
  NAPI_EXPORT_FUNCTION(fuse_native_io_seek)
  NAPI_EXPORT_FUNCTION(fuse_native_io_copy_range)
  NAPI_EXPORT_FUNCTION(fuse_native_io_copy_sparse)
  NAPI_EXPORT_FUNCTION(fuse_native_io_fallocate)
  NAPI_EXPORT_FUNCTION(fuse_native_io_utimensat)
  NAPI_EXPORT_FUNCTION(fuse_native_io_mknod)
  {
    uint32_t io_SEEK_DATA = SEEK_DATA, io_SEEK_HOLE = SEEK_HOLE;
    uint32_t io_XATTR_CREATE = XATTR_CREATE, io_XATTR_REPLACE = XATTR_REPLACE;
    NAPI_EXPORT_UINT32(io_SEEK_DATA)
    NAPI_EXPORT_UINT32(io_SEEK_HOLE)
    NAPI_EXPORT_UINT32(io_XATTR_CREATE)
    NAPI_EXPORT_UINT32(io_XATTR_REPLACE)
    uint32_t io_FALLOC_FL_KEEP_SIZE = FALLOC_FL_KEEP_SIZE, io_FALLOC_FL_PUNCH_HOLE = FALLOC_FL_PUNCH_HOLE;
    uint32_t io_FALLOC_FL_ZERO_RANGE = FALLOC_FL_ZERO_RANGE, io_AT_SYMLINK_NOFOLLOW = AT_SYMLINK_NOFOLLOW;
    NAPI_EXPORT_UINT32(io_FALLOC_FL_KEEP_SIZE)
    NAPI_EXPORT_UINT32(io_FALLOC_FL_PUNCH_HOLE)
    NAPI_EXPORT_UINT32(io_FALLOC_FL_ZERO_RANGE)
    NAPI_EXPORT_UINT32(io_AT_SYMLINK_NOFOLLOW)
  }
#endif

  NAPI_EXPORT_FUNCTION(fuse_native_mount)
  NAPI_EXPORT_FUNCTION(fuse_native_unmount)

  NAPI_EXPORT_FUNCTION(fuse_native_signal_getattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_init)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_access)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_statfs)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_fgetattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_getattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_flush)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_fsync)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_fsyncdir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_readdir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_truncate)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_ftruncate)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_utimens)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_readlink)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_chown)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_chmod)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_mknod)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_setxattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_getxattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_listxattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_removexattr)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_open)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_opendir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_read)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_write)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_release)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_releasedir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_create)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_unlink)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_rename)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_link)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_symlink)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_mkdir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_rmdir)
  NAPI_EXPORT_FUNCTION(fuse_native_signal_fallocate)

  NAPI_EXPORT_UINT32(op_getattr)
  NAPI_EXPORT_UINT32(op_init)
  NAPI_EXPORT_UINT32(op_error)
  NAPI_EXPORT_UINT32(op_access)
  NAPI_EXPORT_UINT32(op_statfs)
  NAPI_EXPORT_UINT32(op_fgetattr)
  NAPI_EXPORT_UINT32(op_getattr)
  NAPI_EXPORT_UINT32(op_flush)
  NAPI_EXPORT_UINT32(op_fsync)
  NAPI_EXPORT_UINT32(op_fsyncdir)
  NAPI_EXPORT_UINT32(op_readdir)
  NAPI_EXPORT_UINT32(op_truncate)
  NAPI_EXPORT_UINT32(op_ftruncate)
  NAPI_EXPORT_UINT32(op_utimens)
  NAPI_EXPORT_UINT32(op_readlink)
  NAPI_EXPORT_UINT32(op_chown)
  NAPI_EXPORT_UINT32(op_chmod)
  NAPI_EXPORT_UINT32(op_mknod)
  NAPI_EXPORT_UINT32(op_setxattr)
  NAPI_EXPORT_UINT32(op_getxattr)
  NAPI_EXPORT_UINT32(op_listxattr)
  NAPI_EXPORT_UINT32(op_removexattr)
  NAPI_EXPORT_UINT32(op_open)
  NAPI_EXPORT_UINT32(op_opendir)
  NAPI_EXPORT_UINT32(op_read)
  NAPI_EXPORT_UINT32(op_write)
  NAPI_EXPORT_UINT32(op_release)
  NAPI_EXPORT_UINT32(op_releasedir)
  NAPI_EXPORT_UINT32(op_create)
  NAPI_EXPORT_UINT32(op_unlink)
  NAPI_EXPORT_UINT32(op_rename)
  NAPI_EXPORT_UINT32(op_link)
  NAPI_EXPORT_UINT32(op_symlink)
  NAPI_EXPORT_UINT32(op_mkdir)
  NAPI_EXPORT_UINT32(op_rmdir)
  NAPI_EXPORT_UINT32(op_fallocate)
}
