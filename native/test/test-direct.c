// direct.c: which requests go to the O_DIRECT fd and which take the counted fallback, and the bytes of each.
#define _GNU_SOURCE
#include "test.h"
#include "direct.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void test_direct_routes (void) {
  int fd = test_tmpfile();
  CHECK(fd >= 0);
  char proc[32];
  snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
  int dfd = open(proc, O_RDWR | O_DIRECT | O_CLOEXEC);
  if (dfd < 0 && errno == EINVAL) { // $TMPDIR on a filesystem without O_DIRECT: nothing to test here
    close(fd);
    return;
  }
  CHECK(dfd >= 0);
  ferry_direct_t d;
  ferry_direct_init(&d, fd, dfd);
  CHECK(d.off_align > 0 && d.off_align <= 4096 && d.mem_align > 0);

  char *mem = NULL;
  CHECK(posix_memalign((void **) &mem, 4096, 3 * 8192) == 0);
  char *odd = mem + 8192 + 80; // where libfuse 2.9 puts a WRITE payload: aligned requests need the bounce
  for (int i = 0; i < 8192; i++) odd[i] = (char) (i * 7 + 1);
  uint64_t base = atomic_load(&ferry_direct_fallbacks);

  CHECK(ferry_direct_pwrite(&d, odd, 8192, 0) == 8192);
  CHECK(atomic_load(&ferry_direct_fallbacks) == base);
  CHECK(ferry_direct_pwrite(&d, "unaligned", 9, 300) == 9); // offset and length unaligned
  CHECK(atomic_load(&ferry_direct_fallbacks) == base + 1);

  char *back = mem; // aligned: read directly
  CHECK(ferry_direct_pread(&d, back, 8192, 0) == 8192);
  CHECK(memcmp(back + 300, "unaligned", 9) == 0);
  CHECK(memcmp(back, odd, 300) == 0 && memcmp(back + 309, odd + 309, 8192 - 309) == 0);
  CHECK(atomic_load(&ferry_direct_fallbacks) == base + 1);
  char small[16];
  CHECK(ferry_direct_pread(&d, small, 9, 300) == 9); // unaligned: the fallback
  CHECK(memcmp(small, "unaligned", 9) == 0);
  CHECK(atomic_load(&ferry_direct_fallbacks) == base + 2);
  CHECK(ferry_direct_pread(&d, odd, 4096, 4096) == 4096); // aligned request, unaligned buffer: the bounce
  CHECK(memcmp(odd, back + 4096, 4096) == 0);
  CHECK(atomic_load(&ferry_direct_fallbacks) == base + 2);
  free(mem);
  close(dfd);
  close(fd);
}
