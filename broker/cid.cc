#include "broker/cid.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "base/syscall.h"

namespace moss::cid {
namespace {

bool same_file(int fd, const std::string& path) {
  struct stat a, b;
  return fstat(fd, &a) == 0 && stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

}  // namespace

std::string default_dir() {
  if (const char* d = std::getenv("MOSS_CID_DIR"); d && *d) return d;
  return access("/run", W_OK) == 0 ? "/run/moss-cids" : "/tmp/moss-cids";
}

Result<Lease> Lease::take(const std::string& dir) {
  if (mkdir(dir.c_str(), 01777) == 0) {
    chmod(dir.c_str(), 01777);  // Past the umask: every user's VMs share the directory.
  } else if (errno != EEXIST) {
    return make_error("cannot create the CID directory " + dir + ": " + strerror(errno), errno);
  }
  for (uint32_t cid = kFirstGuestCid; cid <= kMaxGuestCid; cid++) {
    std::string path = dir + "/" + std::to_string(cid) + ".lock";
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);  // Another user's file.
    if (fd < 0) continue;
    UniqueFd lock(fd);
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) continue;  // Held by a running VM.
    // Its previous holder may have unlinked it between our open and flock: then nobody else
    // would see our lock. Try this CID again.
    if (!same_file(fd, path)) {
      cid--;
      continue;
    }
    Lease l;
    l.cid_ = cid;
    l.path_ = path;
    l.lock_ = std::move(lock);
    return l;
  }
  return make_error("every vsock CID from 3 to 65535 is held by a running VM");
}

Lease::~Lease() {
  if (!lock_) return;
  // Only the file's owner may unlink it in a sticky directory; others leave it (harmless).
  if (same_file(lock_.get(), path_)) unlink(path_.c_str());
  lock_.reset();
}

}  // namespace moss::cid
