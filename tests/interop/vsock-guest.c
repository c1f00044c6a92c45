/* The interop test's program inside the Linux guest (built static at test time by
 * qemu-linux-vsock-test.sh). Every result is one console line starting "moss-interop:".
 *   vsock-guest PORT HOST_PORT
 * 1. Listens on vsock port PORT; a host program reaches it through moss-vsock ("CONNECT PORT").
 *    Echoes every byte of the one connection it accepts until EOF, then closes.
 * 2. Connects to the host (CID 2) port HOST_PORT (moss-vsock's "<uds>_HOST_PORT"), sends
 *    "hello from cid N", and prints the line the host program answers. */
#include <errno.h>
#include <linux/vm_sockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static void fail(const char* what) {
  printf("moss-interop: FAIL %s: %s\n", what, strerror(errno));
  fflush(stdout);
  exit(1);
}

int main(int argc, char** argv) {
  if (argc != 3) {
    printf("moss-interop: FAIL usage: vsock-guest PORT HOST_PORT\n");
    return 2;
  }
  unsigned port = (unsigned)strtoul(argv[1], NULL, 10), host_port = (unsigned)strtoul(argv[2], NULL, 10);
  setvbuf(stdout, NULL, _IOLBF, 0);

  int l = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (l < 0) fail("socket(AF_VSOCK)");
  struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_port = port, .svm_cid = VMADDR_CID_ANY};
  if (bind(l, (struct sockaddr*)&addr, sizeof addr) != 0) fail("bind");
  if (listen(l, 1) != 0) fail("listen");
  unsigned cid = 0;
  int dev = -1;
  /* The local CID, as the device's config space gave it. */
  FILE* f = fopen("/dev/vsock", "r");
  if (f) {
    dev = fileno(f);
    if (ioctl(dev, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) != 0) cid = 0;
    fclose(f);
  }
  printf("moss-interop: listening on vsock port %u, local cid %u\n", port, cid);

  int c = accept(l, NULL, NULL);
  if (c < 0) fail("accept");
  static char buf[65536];
  unsigned long long total = 0;
  for (;;) {
    ssize_t n = read(c, buf, sizeof buf);
    if (n < 0) fail("read");
    if (n == 0) break;
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(c, buf + off, (size_t)(n - off));
      if (w <= 0) fail("write");
      off += w;
    }
    total += (unsigned long long)n;
  }
  close(c);
  printf("moss-interop: echoed %llu bytes\n", total);

  int s = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (s < 0) fail("socket(AF_VSOCK) for the host");
  struct sockaddr_vm host = {.svm_family = AF_VSOCK, .svm_port = host_port, .svm_cid = VMADDR_CID_HOST};
  if (connect(s, (struct sockaddr*)&host, sizeof host) != 0) fail("connect to the host");
  char hello[64];
  int len = snprintf(hello, sizeof hello, "hello from cid %u\n", cid);
  if (write(s, hello, (size_t)len) != len) fail("write to the host");
  char line[128];
  size_t got = 0;
  while (got + 1 < sizeof line) {
    ssize_t n = read(s, line + got, 1);
    if (n < 0) fail("read from the host");
    if (n == 0 || line[got] == '\n') break;
    got++;
  }
  line[got] = '\0';
  close(s);
  printf("moss-interop: host says %s\n", line);
  printf("moss-interop: done\n");
  return 0;
}
