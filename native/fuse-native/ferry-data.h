// ferry's native data path (patch 010): read/write on registered file
// handles answered on libfuse's worker threads. See ferry-data.c.
#ifndef FERRY_DATA_H
#define FERRY_DATA_H

#include <node_api.h>
#include <stdint.h>
#include <sys/types.h>

// "Not handled here": the op goes on to the JavaScript handler.
#define FERRY_DATA_PASS INT32_MIN

int ferry_data_read (const char *path, char *buf, size_t len, off_t offset, uint64_t fh);
int ferry_data_write (const char *path, const char *buf, size_t len, off_t offset, uint64_t fh);
// Before a worker sleeps in read(2) on the FUSE device `fd`: maybe watch it a while (see ferry-data.c).
void ferry_data_poll (int fd, long served_ns);
void ferry_data_export (napi_env env, napi_value exports);

#endif
