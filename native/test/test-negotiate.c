// What the request loop negotiates (negotiate.h): the receive buffer, the INIT reply, the SETATTR rewrite.
#include "test.h"
#include "negotiate.h"

#include <string.h>

// Every byte of the buffer is usable (ASan would catch one past it), a 1 MiB WRITE fits after its headers,
// and the WRITE payload starts on a page.
void test_negotiate_recv_buffer (void) {
  char *mem = ferry_recv_alloc();
  CHECK(mem != NULL);
  memset(mem, 0xa5, FERRY_RECV_SIZE);
  CHECK(((uintptr_t) (mem + FERRY_WRITE_PAYLOAD_OFFSET) & (ferry_page_size() - 1)) == 0);
  CHECK(FERRY_WRITE_PAYLOAD_OFFSET + (size_t) FERRY_MAX_WRITE <= FERRY_RECV_SIZE);
  ferry_recv_free(mem);
  ferry_recv_free(NULL);
}

// libfuse 2.9's 24-byte reply (minor 19, max_write 128 KiB): what the kernel gets instead.
static const ferry_init_out_t libfuse_reply = { .major = 7, .minor = 19, .max_readahead = 131072, .flags = 0x31, .max_write = 131072 };

// Offered: the layout grows to 64 bytes with max_pages and 1 MiB writes, async direct I/O with 32 background
// requests, suid/sgid left to ferry; libfuse's own fields stay.
void test_negotiate_init_offered (void) {
  ferry_init_out_t out;
  memset(&out, 0xff, sizeof(out));
  ferry_init_reply(&out, &libfuse_reply, 0xffffffffu, 0xffffffffu);
  CHECK(out.major == 7 && out.minor == 19 && out.max_readahead == 131072);
  CHECK((out.flags & 0x31) == 0x31);
  CHECK(out.flags & FERRY_INIT_MAX_PAGES);
  CHECK(out.flags & FERRY_INIT_ASYNC_DIO);
  CHECK(out.flags & FERRY_INIT_HANDLE_KILLPRIV_V2);
  CHECK(out.max_background == FERRY_MAX_BACKGROUND && out.congestion_threshold == FERRY_CONGESTION_THRESHOLD);
  CHECK(out.max_pages == FERRY_MAX_PAGES && out.max_write == FERRY_MAX_WRITE);
  // Shared maps of direct_io opens: only this bit of flags2, which INIT_EXT makes count.
  CHECK((out.flags & FERRY_INIT_EXT) && out.flags2 == FERRY_INIT2_DIRECT_IO_ALLOW_MMAP);
  CHECK(out.time_gran == 0 && out.max_stack_depth == 0 && out.map_alignment == 0);
}

// Not offered (an older kernel): no flag it did not offer, and libfuse's max_write, which its buffers fit.
void test_negotiate_init_not_offered (void) {
  ferry_init_out_t out;
  ferry_init_reply(&out, &libfuse_reply, 0x31, 0);
  CHECK(out.flags == 0x31 && out.flags2 == 0);
  // flags2 without INIT_EXT is not an offer (a kernel before 7.36 sends no flags2).
  ferry_init_reply(&out, &libfuse_reply, 0x31, FERRY_INIT2_DIRECT_IO_ALLOW_MMAP);
  CHECK(out.flags == 0x31 && out.flags2 == 0);
  uint32_t in[16] = { 7, 45, 131072, FERRY_INIT_EXT, FERRY_INIT2_DIRECT_IO_ALLOW_MMAP };
  CHECK(ferry_init_offered2(in, 64) == FERRY_INIT2_DIRECT_IO_ALLOW_MMAP && ferry_init_offered2(in, 16) == 0);
  CHECK(out.max_pages == 0 && out.max_write == 131072);
}

// A SETATTR that sets nothing (chown(-1, -1) under KILLPRIV_V2) becomes a chown to (-1, -1); any other stays.
void test_negotiate_setattr_as_chown (void) {
  uint32_t valid = FERRY_FATTR_FH, uid = 7, gid = 8;
  CHECK(ferry_setattr_as_chown(&valid, &uid, &gid));
  CHECK(valid == (FERRY_FATTR_FH | FERRY_FATTR_UID | FERRY_FATTR_GID) && uid == UINT32_MAX && gid == UINT32_MAX);
  valid = 0;
  CHECK(ferry_setattr_as_chown(&valid, &uid, &gid));
  uint32_t others[] = { 1u << 0, FERRY_FATTR_UID | FERRY_FATTR_KILL_SUIDGID, 1u << 3 | FERRY_FATTR_LOCKOWNER | FERRY_FATTR_KILL_SUIDGID, 1u << 4, 1u << 8 };
  for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
    valid = others[i];
    uid = gid = 5;
    CHECK(!ferry_setattr_as_chown(&valid, &uid, &gid));
    CHECK(valid == others[i] && uid == 5 && gid == 5);
  }
}
