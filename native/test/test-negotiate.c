// What the request loop negotiates (negotiate.h): the receive buffer's size and placement.
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
