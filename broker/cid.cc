#include "broker/cid.h"

#include <fcntl.h>
#include <sys/file.h>

#include <cerrno>

namespace moss::cid {

Result<Lease> Lease::take(const privdir::Dir& dir) {
  for (uint32_t cid = kFirstGuestCid; cid <= kMaxGuestCid; cid++) {
    std::string name = std::to_string(cid) + ".lock";
    MOSS_TRY(UniqueFd lock, dir.open_file(name, O_RDWR | O_CREAT, 0600));
    if (flock(lock.get(), LOCK_EX | LOCK_NB) != 0) continue;  // Held by a running VM.
    // Its previous holder may have unlinked it between our open and flock: then nobody else
    // would see our lock. Try this CID again.
    if (!dir.same_file(lock.get(), name)) {
      cid--;
      continue;
    }
    Lease l;
    MOSS_TRY(l.dir_, dir.dup());
    l.cid_ = cid;
    l.name_ = name;
    l.lock_ = std::move(lock);
    return l;
  }
  return make_error("every vsock CID from 3 to 65535 is held by one of your running VMs");
}

Lease::~Lease() {
  if (!lock_) return;
  if (dir_.same_file(lock_.get(), name_)) dir_.remove(name_);
  lock_.reset();
}

}  // namespace moss::cid
