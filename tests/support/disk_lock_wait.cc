#include "tests/support/disk_lock_wait.h"

#include <fcntl.h>
#include <unistd.h>

#include <thread>

#include "base/fd.h"

namespace moss::test {

bool wait_until_disk_unlocked(const std::string& path, std::chrono::milliseconds limit) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return false;
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    struct flock l {};
    l.l_type = F_WRLCK;
    l.l_whence = SEEK_SET;
    if (::fcntl(fd.get(), F_OFD_GETLK, &l) != 0) return false;
    if (l.l_type == F_UNLCK) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace moss::test
