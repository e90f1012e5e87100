// Fuse.io's N-API glue: checks and copies the arguments into a request on the JS thread, runs the syscall
// (io.c) as a napi_async_work on the libuv threadpool, so the JS thread that answers FUSE requests never
// blocks, and calls back on the JS thread: cb(0 or -errno, value). index.js wraps these exports as Fuse.io.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "napi-glue.h"
#include "io.h"
#include "direct.h"

#include <napi-macros.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>
#include <unistd.h>

#define IO_MAX_SAFE_INTEGER 9007199254740991LL

typedef struct {
  napi_async_work work;
  napi_ref cb;
  ferry_io_t io;
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
static napi_status io_arg_buffer (napi_env env, napi_value v, ferry_io_t *r) {
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

// The JS path's write data, copied into page-aligned memory: an aligned request then goes to the O_DIRECT fd as it is.
static napi_status io_arg_aligned_buffer (napi_env env, napi_value v, ferry_io_t *r) {
  bool is_buffer = false;
  void *buf, *mem;
  if (napi_is_buffer(env, v, &is_buffer) != napi_ok || !is_buffer) return napi_invalid_arg;
  if (napi_get_buffer_info(env, v, &buf, &r->len) != napi_ok) return napi_invalid_arg;
  if (posix_memalign(&mem, 4096, r->len ? r->len : 1) != 0) return napi_generic_failure;
  memcpy(mem, buf, r->len);
  r->data = mem;
  return napi_ok;
}

// Runs on the JS thread: build the result in its own handle scope, free the
// request, then call cb (Node has already entered the work's async context).
static void io_complete (napi_env env, napi_status status, void *data) {
  io_req_t *req = (io_req_t *) data;
  ferry_io_t *r = &req->io;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);

  napi_value argv[2], cb, recv;
  size_t argc = 1;
  int err = status == napi_ok ? r->err : -ECANCELED;

  if (err == 0 && r->res_type == FERRY_IO_RES_NUMBER) {
    if (napi_create_int64(env, r->result, &argv[1]) == napi_ok) argc = 2;
  } else if (err == 0 && r->res_type == FERRY_IO_RES_BUFFER) {
    if (napi_create_buffer_copy(env, r->len, r->data, NULL, &argv[1]) == napi_ok) argc = 2;
  } else if (err == 0 && r->res_type == FERRY_IO_RES_NAMES) {
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
  if (err == 0 && r->res_type != FERRY_IO_RES_NONE && argc == 1) err = -ENOMEM;

  napi_create_int32(env, err, &argv[0]);
  napi_get_reference_value(env, req->cb, &cb);
  napi_get_undefined(env, &recv);
  napi_delete_reference(env, req->cb);
  napi_delete_async_work(env, req->work);
  free(r->data);
  free(req);

  // A throwing cb becomes an uncaught exception, as for fs callbacks.
  napi_call_function(env, recv, cb, argc, argv, NULL);
  napi_close_handle_scope(env, scope);
}

// Checks the callback, then queues the request; bad arguments throw a TypeError.
static napi_value io_queue (napi_env env, io_req_t *req, bool ok, napi_value cb, const char *name, napi_async_execute_callback exec) {
  napi_valuetype type;
  napi_value resource_name;
  ok = ok && napi_typeof(env, cb, &type) == napi_ok && type == napi_function;
  if (!ok) {
    free(req->io.data);
    free(req);
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "Fuse.io: invalid arguments");
    return NULL;
  }
  napi_status s = napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name);
  if (s == napi_ok) s = napi_create_reference(env, cb, 1, &req->cb);
  if (s == napi_ok) s = napi_create_async_work(env, NULL, resource_name, exec, io_complete, req, &req->work);
  if (s == napi_ok) s = napi_queue_async_work(env, req->work);
  if (s != napi_ok) {
    if (req->work != NULL) napi_delete_async_work(env, req->work);
    if (req->cb != NULL) napi_delete_reference(env, req->cb);
    free(req->io.data);
    free(req);
    napi_throw_error(env, NULL, "Fuse.io: cannot queue work");
  }
  return NULL;
}

// fuse_native_io_<fn>(args..., cb): parse fills req->io (r) from argv; ferry_io_<call> runs on the threadpool.
#define IO_METHOD(fn, nargs, res, call, parse)\
  static void io_exec_##fn (napi_env env, void *data) {\
    (void) env;\
    call(&((io_req_t *) data)->io);\
  }\
  static NAPI_METHOD(fuse_native_io_##fn) {\
    NAPI_ARGV(nargs)\
    io_req_t *req = (io_req_t *) calloc(1, sizeof(io_req_t));\
    if (req == NULL) { napi_throw_error(env, NULL, "Fuse.io: out of memory"); return NULL; }\
    ferry_io_t *r = &req->io;\
    r->res_type = res;\
    bool ok = true;\
    parse\
    return io_queue(env, req, ok, argv[nargs - 1], "Fuse.io." #fn, io_exec_##fn);\
  }

#define IO_PATH(i) ok = ok && io_arg_string(env, argv[i], r->path, sizeof(r->path), &r->err) == napi_ok;
#define IO_NAME(i) ok = ok && io_arg_string(env, argv[i], r->name, sizeof(r->name), &r->err) == napi_ok;
#define IO_INT(i, field, min, max) ok = ok && io_arg_int(env, argv[i], min, max, &r->field) == napi_ok;
#define IO_FD(i, field) IO_INT(i, field, 0, INT32_MAX)
#define IO_OFF(i, field) IO_INT(i, field, 0, IO_MAX_SAFE_INTEGER)

#define IO_ROOT(i, field) IO_INT(i, field, 0, INT32_MAX)
#define IO_PATH2(i) ok = ok && io_arg_string(env, argv[i], r->path2, sizeof(r->path2), &r->err) == napi_ok;
#define IO_ID(i, field) IO_INT(i, field, -1, UINT32_MAX - 1)

IO_METHOD(open_beneath, 5, FERRY_IO_RES_NUMBER, ferry_io_open_beneath, {
  IO_ROOT(0, root) IO_PATH(1) IO_INT(2, flags, 0, INT32_MAX) IO_INT(3, mode, 0, 07777)
})
IO_METHOD(getxattr, 4, FERRY_IO_RES_BUFFER, ferry_io_xattr_read, { IO_ROOT(0, root) IO_PATH(1) IO_NAME(2) })
IO_METHOD(listxattr, 3, FERRY_IO_RES_NAMES, ferry_io_xattr_read, { IO_ROOT(0, root) IO_PATH(1) })
IO_METHOD(setxattr, 6, FERRY_IO_RES_NONE, ferry_io_setxattr, {
  IO_ROOT(0, root) IO_PATH(1) IO_NAME(2)
  ok = ok && io_arg_buffer(env, argv[3], r) == napi_ok;
  IO_INT(4, flags, INT32_MIN, INT32_MAX)
})
IO_METHOD(removexattr, 4, FERRY_IO_RES_NONE, ferry_io_removexattr, { IO_ROOT(0, root) IO_PATH(1) IO_NAME(2) })
IO_METHOD(mknodat, 5, FERRY_IO_RES_NONE, ferry_io_mknodat, { IO_ROOT(0, root) IO_PATH(1) IO_INT(2, mode, 0, INT32_MAX) IO_OFF(3, off_in) })
IO_METHOD(mkdirat, 4, FERRY_IO_RES_NONE, ferry_io_mkdirat, { IO_ROOT(0, root) IO_PATH(1) IO_INT(2, mode, 0, 07777) })
IO_METHOD(symlinkat, 4, FERRY_IO_RES_NONE, ferry_io_symlinkat, { IO_PATH2(0) IO_ROOT(1, root) IO_PATH(2) })
IO_METHOD(unlinkat, 4, FERRY_IO_RES_NONE, ferry_io_unlinkat, { IO_ROOT(0, root) IO_PATH(1) IO_INT(2, flags, 0, INT32_MAX) })
IO_METHOD(renameat, 6, FERRY_IO_RES_NONE, ferry_io_renameat, {
  IO_ROOT(0, root) IO_PATH(1) IO_ROOT(2, root2) IO_PATH2(3) IO_INT(4, flags, 0, INT32_MAX)
})
IO_METHOD(linkat, 5, FERRY_IO_RES_NONE, ferry_io_linkat, { IO_ROOT(0, root) IO_PATH(1) IO_ROOT(2, root2) IO_PATH2(3) })
IO_METHOD(readlinkat, 3, FERRY_IO_RES_BUFFER, ferry_io_readlinkat, { IO_ROOT(0, root) IO_PATH(1) })
IO_METHOD(chownat, 5, FERRY_IO_RES_NONE, ferry_io_chownat, { IO_ROOT(0, root) IO_PATH(1) IO_ID(2, uid) IO_ID(3, gid) })
IO_METHOD(chmodat, 4, FERRY_IO_RES_NONE, ferry_io_chmodat, { IO_ROOT(0, root) IO_PATH(1) IO_INT(2, mode, 0, 07777) })
// Seconds may be negative; the kernel checks the nanoseconds (EINVAL unless 0..999999999, UTIME_NOW or UTIME_OMIT).
IO_METHOD(utimensat, 7, FERRY_IO_RES_NONE, ferry_io_utimensat, {
  IO_ROOT(0, root) IO_PATH(1)
  IO_INT(2, sec[0], -IO_MAX_SAFE_INTEGER, IO_MAX_SAFE_INTEGER) IO_INT(3, nsec[0], 0, INT32_MAX)
  IO_INT(4, sec[1], -IO_MAX_SAFE_INTEGER, IO_MAX_SAFE_INTEGER) IO_INT(5, nsec[1], 0, INT32_MAX)
})
IO_METHOD(seek, 4, FERRY_IO_RES_NUMBER, ferry_io_seek, { IO_FD(0, fd_in) IO_OFF(1, off_in) IO_INT(2, whence, INT32_MIN, INT32_MAX) })
IO_METHOD(copy_range, 6, FERRY_IO_RES_NUMBER, ferry_io_copy_range, {
  IO_FD(0, fd_in) IO_OFF(1, off_in) IO_FD(2, fd_out) IO_OFF(3, off_out) IO_OFF(4, length)
})
IO_METHOD(copy_sparse, 7, FERRY_IO_RES_NUMBER, ferry_io_copy_sparse, {
  IO_FD(0, fd_in) IO_INT(1, fd_direct, -1, INT32_MAX) IO_OFF(2, off_in) IO_FD(3, fd_out) IO_OFF(4, off_out) IO_OFF(5, length)
})
IO_METHOD(direct_write, 5, FERRY_IO_RES_NUMBER, ferry_io_direct_write, {
  IO_FD(0, fd_in) IO_FD(1, fd_out) ok = ok && io_arg_aligned_buffer(env, argv[2], r) == napi_ok; IO_OFF(3, off_in)
})
IO_METHOD(direct_read, 5, FERRY_IO_RES_BUFFER, ferry_io_direct_read, { IO_FD(0, fd_in) IO_FD(1, fd_out) IO_INT(2, length, 0, 1 << 26) IO_OFF(3, off_in) })
IO_METHOD(fallocate, 5, FERRY_IO_RES_NONE, ferry_io_fallocate, { IO_FD(0, fd_in) IO_INT(1, flags, 0, INT32_MAX) IO_OFF(2, off_in) IO_OFF(3, length) })

// directFallbacks() -> requests on O_DIRECT handles that took the fallback (both data paths count here).
static NAPI_METHOD(fuse_native_io_direct_fallbacks) {
  (void) info;
  napi_value n;
  napi_create_double(env, (double) atomic_load(&ferry_direct_fallbacks), &n);
  return n;
}

void ferry_io_export (napi_env env, napi_value exports) {
  NAPI_EXPORT_FUNCTION(fuse_native_io_open_beneath)
  NAPI_EXPORT_FUNCTION(fuse_native_io_getxattr)
  NAPI_EXPORT_FUNCTION(fuse_native_io_listxattr)
  NAPI_EXPORT_FUNCTION(fuse_native_io_setxattr)
  NAPI_EXPORT_FUNCTION(fuse_native_io_removexattr)
  NAPI_EXPORT_FUNCTION(fuse_native_io_mknodat)
  NAPI_EXPORT_FUNCTION(fuse_native_io_mkdirat)
  NAPI_EXPORT_FUNCTION(fuse_native_io_symlinkat)
  NAPI_EXPORT_FUNCTION(fuse_native_io_unlinkat)
  NAPI_EXPORT_FUNCTION(fuse_native_io_renameat)
  NAPI_EXPORT_FUNCTION(fuse_native_io_linkat)
  NAPI_EXPORT_FUNCTION(fuse_native_io_readlinkat)
  NAPI_EXPORT_FUNCTION(fuse_native_io_chownat)
  NAPI_EXPORT_FUNCTION(fuse_native_io_chmodat)
  NAPI_EXPORT_FUNCTION(fuse_native_io_utimensat)
  NAPI_EXPORT_FUNCTION(fuse_native_io_seek)
  NAPI_EXPORT_FUNCTION(fuse_native_io_copy_range)
  NAPI_EXPORT_FUNCTION(fuse_native_io_copy_sparse)
  NAPI_EXPORT_FUNCTION(fuse_native_io_fallocate)
  NAPI_EXPORT_FUNCTION(fuse_native_io_direct_write)
  NAPI_EXPORT_FUNCTION(fuse_native_io_direct_read)
  NAPI_EXPORT_FUNCTION(fuse_native_io_direct_fallbacks)
  uint32_t io_SEEK_DATA = SEEK_DATA, io_SEEK_HOLE = SEEK_HOLE;
  uint32_t io_XATTR_CREATE = XATTR_CREATE, io_XATTR_REPLACE = XATTR_REPLACE;
  NAPI_EXPORT_UINT32(io_SEEK_DATA)
  NAPI_EXPORT_UINT32(io_SEEK_HOLE)
  NAPI_EXPORT_UINT32(io_XATTR_CREATE)
  NAPI_EXPORT_UINT32(io_XATTR_REPLACE)
  uint32_t io_FALLOC_FL_KEEP_SIZE = FALLOC_FL_KEEP_SIZE, io_FALLOC_FL_PUNCH_HOLE = FALLOC_FL_PUNCH_HOLE;
  uint32_t io_FALLOC_FL_ZERO_RANGE = FALLOC_FL_ZERO_RANGE, io_AT_REMOVEDIR = AT_REMOVEDIR;
  NAPI_EXPORT_UINT32(io_FALLOC_FL_KEEP_SIZE)
  NAPI_EXPORT_UINT32(io_FALLOC_FL_PUNCH_HOLE)
  NAPI_EXPORT_UINT32(io_FALLOC_FL_ZERO_RANGE)
  NAPI_EXPORT_UINT32(io_AT_REMOVEDIR)
}
