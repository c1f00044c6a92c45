/* The interop test's host program (built at test time by qemu-linux-vsock-test.sh): the host
 * side of hybrid vsock through moss-vsock.
 *   vsock-host UDS_PATH PORT BYTES HOST_PORT SECONDS
 * 1. Listens on UDS_PATH_HOST_PORT for the guest's connection (step 3).
 * 2. Connects to UDS_PATH, sends "CONNECT PORT\n" and expects "OK <n>\n" (retrying while the
 *    guest is not listening yet: the worker then closes the connection), sends BYTES
 *    pseudo-random bytes, shuts down its write side, and checks that the guest echoes exactly
 *    them back.
 * 3. Accepts the guest's connection, reads its line and answers "hello guest".
 * Prints "host: ..." lines; exits 0 on success, 1 with "host: FAIL ..." otherwise. Every wait
 * ends after SECONDS in all. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static time_t deadline;

static void fail(const char* what) {
  printf("host: FAIL %s%s%s\n", what, errno ? ": " : "", errno ? strerror(errno) : "");
  exit(1);
}

static int left_ms(void) {
  time_t now = time(NULL);
  return now >= deadline ? 0 : (int)(deadline - now) * 1000;
}

static int wait_fd(int fd, short events) {
  struct pollfd p = {fd, events, 0};
  return poll(&p, 1, left_ms()) == 1;
}

static struct sockaddr_un address(const char* path) {
  struct sockaddr_un a;
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof a.sun_path) fail("socket path too long");
  strcpy(a.sun_path, path);
  return a;
}

static unsigned char byte_at(unsigned long long i) {
  unsigned long long x = (i + 1) * 0x9e3779b97f4a7c15ull;
  x ^= x >> 29;
  return (unsigned char)(x * 0xbf58476d1ce4e5b9ull >> 56);
}

/* Reads a line (without '\n') into buf; 0 on EOF before a newline. */
static int read_line(int fd, char* buf, size_t size) {
  size_t n = 0;
  while (n + 1 < size) {
    if (!wait_fd(fd, POLLIN)) fail("no line in time");
    ssize_t r = read(fd, buf + n, 1);
    if (r <= 0) return 0;
    if (buf[n] == '\n') break;
    n++;
  }
  buf[n] = '\0';
  return 1;
}

int main(int argc, char** argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: vsock-host UDS_PATH PORT BYTES HOST_PORT SECONDS\n");
    return 2;
  }
  const char* uds = argv[1];
  unsigned long long bytes = strtoull(argv[3], NULL, 10);
  deadline = time(NULL) + atoi(argv[5]);
  setvbuf(stdout, NULL, _IOLBF, 0);

  char listen_path[200];
  snprintf(listen_path, sizeof listen_path, "%s_%s", uds, argv[4]);
  int l = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un la = address(listen_path);
  unlink(listen_path);
  if (l < 0 || bind(l, (struct sockaddr*)&la, sizeof la) != 0 || listen(l, 1) != 0) fail("listening for the guest");

  /* Host-initiated: CONNECT, retried until the guest listens. */
  int s = -1;
  char line[128];
  int tries = 0;
  for (;;) {
    s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = address(uds);
    if (s < 0 || connect(s, (struct sockaddr*)&a, sizeof a) != 0) fail("connecting to moss-vsock");
    char req[64];
    int n = snprintf(req, sizeof req, "CONNECT %s\n", argv[2]);
    if (write(s, req, (size_t)n) != n) fail("sending CONNECT");
    tries++;
    if (read_line(s, line, sizeof line)) break;
    close(s);
    if (left_ms() == 0) fail("the guest never accepted the connection");
    usleep(300 * 1000);
  }
  if (strncmp(line, "OK ", 3) != 0) fail("moss-vsock did not answer OK");
  printf("host: %s (after %d attempt%s)\n", line, tries, tries == 1 ? "" : "s");

  /* BYTES out, the same BYTES back, both at once. */
  unsigned long long sent = 0, got = 0;
  int write_open = 1;
  static unsigned char buf[65536];
  while (got < bytes || write_open) {
    struct pollfd p = {s, (short)(POLLIN | (write_open ? POLLOUT : 0)), 0};
    if (poll(&p, 1, left_ms()) != 1) fail("the echo stalled");
    if ((p.revents & POLLOUT) && write_open) {
      size_t n = 0;
      while (n < sizeof buf && sent + n < bytes) buf[n] = byte_at(sent + n), n++;
      if (n > 0) {
        ssize_t w = write(s, buf, n);
        if (w < 0) fail("writing to the guest");
        sent += (unsigned long long)w;
      }
      if (sent == bytes) {
        shutdown(s, SHUT_WR);
        write_open = 0;
      }
    }
    if (p.revents & (POLLIN | POLLHUP)) {
      ssize_t r = read(s, buf, sizeof buf);
      if (r < 0) fail("reading the echo");
      if (r == 0) break;
      for (ssize_t i = 0; i < r; i++) {
        if (buf[i] != byte_at(got + (unsigned long long)i)) {
          errno = 0;
          fail("the echo differs from what was sent");
        }
      }
      got += (unsigned long long)r;
    }
  }
  errno = 0;
  if (got != bytes) fail("the echo is short");
  printf("host: echo of %llu bytes matches\n", got);
  close(s);

  /* Guest-initiated: the guest's connection to HOST_PORT. */
  if (!wait_fd(l, POLLIN)) fail("the guest did not connect to the host");
  int g = accept(l, NULL, NULL);
  if (g < 0) fail("accepting the guest");
  if (!read_line(g, line, sizeof line)) fail("the guest sent no line");
  printf("host: guest says %s\n", line);
  const char* reply = "hello guest\n";
  if (write(g, reply, strlen(reply)) != (ssize_t)strlen(reply)) fail("answering the guest");
  close(g);
  unlink(listen_path);
  printf("host: done\n");
  return 0;
}
