#include "base/disk_lock.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "base/log.h"

namespace moss {
namespace {

// QEMU's lock bytes (block/file-posix.c): RAW_LOCK_PERM_BASE + permission is held by a user
// that has the permission, RAW_LOCK_SHARED_BASE + permission by one that does not share it.
constexpr off_t kPermBase = 100;
constexpr off_t kSharedBase = 200;
constexpr off_t kConsistentRead = 0;  // BLK_PERM_CONSISTENT_READ (bit 0)
constexpr off_t kWrite = 1;           // BLK_PERM_WRITE (bit 1)
constexpr off_t kResize = 3;          // BLK_PERM_RESIZE (bit 3)

struct flock range(short type, off_t start, off_t len) {
  struct flock l {};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_start = start;
  l.l_len = len;  // 0: to the end of the file, however it grows.
  return l;
}

enum class Outcome { kLocked, kHeldByAnother, kNoLocksHere };

Result<Outcome> set_lock(int fd, short type, off_t start, off_t len, const std::string& what) {
  struct flock l = range(type, start, len);
  while (::fcntl(fd, F_OFD_SETLK, &l) != 0) {
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EACCES) return Outcome::kHeldByAnother;
    if (errno == ENOLCK || errno == EOPNOTSUPP || errno == EINVAL) return Outcome::kNoLocksHere;
    return sys_error("lock", what);
  }
  return Outcome::kLocked;
}

Error in_use(const std::string& what) {
  return make_error(what + " is in use by another process (another moss or QEMU holds a lock on it), and a disk may "
                    "have one writer or several read-only users, not both", EBUSY);
}

void warn_no_locks(const std::string& what) {
  LOG_WARN("%s is on a file system without file locks; nothing stops another process from writing it", what.c_str());
}

}  // namespace

Result<void> lock_disk(int fd, bool read_only, const std::string& what) {
  if (!read_only) {
    MOSS_TRY(Outcome got, set_lock(fd, F_WRLCK, 0, 0, what));
    if (got == Outcome::kHeldByAnother) return in_use(what);
    if (got == Outcome::kNoLocksHere) warn_no_locks(what);
    return {};
  }
  for (off_t byte : {kPermBase + kConsistentRead, kSharedBase + kWrite, kSharedBase + kResize}) {
    MOSS_TRY(Outcome got, set_lock(fd, F_RDLCK, byte, 1, what));
    if (got == Outcome::kHeldByAnother) return in_use(what);
    if (got == Outcome::kNoLocksHere) {
      warn_no_locks(what);
      return {};
    }
  }
  // Held by someone else: a writer, a resizer, or a user that lets no one else read.
  for (off_t byte : {kPermBase + kWrite, kPermBase + kResize, kSharedBase + kConsistentRead}) {
    struct flock l = range(F_WRLCK, byte, 1);
    if (::fcntl(fd, F_OFD_GETLK, &l) != 0) {
      return sys_error("test the locks on", what);
    }
    if (l.l_type != F_UNLCK) return in_use(what);
  }
  return {};
}

}  // namespace moss
