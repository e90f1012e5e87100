// What the fuse-native binding (native/fuse-native/fuse-native.c) takes from ferry's C: the exports of
// Fuse.data (napi-data.c) and Fuse.io (napi-io.c), both run on the JS thread at module load.
#ifndef FERRY_NAPI_GLUE_H
#define FERRY_NAPI_GLUE_H

#include <node_api.h>

void ferry_data_export (napi_env env, napi_value exports);
void ferry_io_export (napi_env env, napi_value exports);

#endif
