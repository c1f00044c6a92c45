// Guest CIDs for virtio-vsock: each running VM on the host holds one no other holds.
//
// A CID is held by an flock on <dir>/<cid>.lock for the VM's lifetime (released by the kernel
// when the broker exits, however it exits), so allocation needs no daemon and cannot race:
// the lowest CID whose lock can be taken wins. The directory is host-wide (not per user):
// /run/moss-cids when we can write /run, else /tmp/moss-cids, sticky and world-writable so
// every user's VMs share one namespace; $MOSS_CID_DIR overrides it (tests).
#pragma once

#include <cstdint>
#include <string>

#include "base/fd.h"
#include "base/result.h"

namespace moss::cid {

constexpr uint32_t kFirstGuestCid = 3;  // 0-2 are reserved (hypervisor, local, host).
constexpr uint32_t kMaxGuestCid = 65535;

std::string default_dir();

class Lease {
 public:
  // The lowest free CID in `dir` (created if missing).
  static Result<Lease> take(const std::string& dir);
  Lease(Lease&&) = default;
  Lease& operator=(Lease&&) = default;
  ~Lease();  // Removes the lock file if it is still ours, then releases the CID.

  uint32_t cid() const { return cid_; }

 private:
  Lease() = default;
  uint32_t cid_ = 0;
  std::string path_;
  UniqueFd lock_;
};

}  // namespace moss::cid
