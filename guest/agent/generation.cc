// The guest side of GENERATION (see generation.h).
#include "guest/agent/generation.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <linux/random.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

namespace moss::agent {

Result<void> mix_entropy(int random_fd, std::string_view bytes) {
  // struct rand_pool_info (two ints, then a flexible array of u32) with room for
  // kMaxEntropyBytes, laid out by hand in aligned storage.
  if (bytes.size() > kMaxEntropyBytes) return Error("too many entropy bytes to mix");
  alignas(rand_pool_info) unsigned char req[sizeof(rand_pool_info) + kMaxEntropyBytes];
  memset(req, 0, sizeof(req));
  rand_pool_info head;
  head.entropy_count = static_cast<int>(bytes.size() * 8);
  head.buf_size = static_cast<int>(bytes.size());
  memcpy(req, &head, sizeof(head));
  memcpy(req + offsetof(rand_pool_info, buf), bytes.data(), bytes.size());
  if (ioctl(random_fd, RNDADDENTROPY, req) != 0) return sys_error("mix the host's entropy into", "the kernel pool");
  return {};
}

Result<void> publish_generation(const char* dir, uint64_t generation) {
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) return sys_error("create the directory", dir);
  std::string final_path = std::string(dir) + "/generation";
  std::string tmp_path = std::string(dir) + "/.generation.tmp";
  int fd = open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return sys_error("create", tmp_path);
  std::string line = std::to_string(generation) + "\n";
  bool ok = fchmod(fd, 0644) == 0;
  size_t done = 0;
  while (ok && done < line.size()) {
    ssize_t w = write(fd, line.data() + done, line.size() - done);
    if (w < 0 && errno == EINTR) continue;
    ok = w > 0;
    if (ok) done += static_cast<size_t>(w);
  }
  int e = errno;
  if (close(fd) != 0 && ok) {
    ok = false;
    e = errno;
  }
  if (!ok) {
    unlink(tmp_path.c_str());
    return sys_error_code(e, "write", tmp_path);
  }
  if (rename(tmp_path.c_str(), final_path.c_str()) != 0) {
    e = errno;
    unlink(tmp_path.c_str());
    return sys_error_code(e, "replace", final_path);
  }
  return {};
}

Result<void> apply_generation(const Frame& g) {
  int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return sys_error("open", "/dev/urandom");
  Result<void> mixed = mix_entropy(fd, g.data);
  close(fd);
  if (!mixed.ok()) return mixed;
  if (g.realtime_ns > 0) {
    timespec ts;
    ts.tv_sec = static_cast<time_t>(g.realtime_ns / 1000000000);
    ts.tv_nsec = static_cast<long>(g.realtime_ns % 1000000000);
    if (clock_settime(CLOCK_REALTIME, &ts) != 0) return sys_error("step", "the realtime clock");
  }
  return publish_generation(kGenerationDir, g.generation);
}

}  // namespace moss::agent
