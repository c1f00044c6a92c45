// Guest CIDs for virtio-vsock: each of a user's running VMs holds one none of the user's other
// VMs holds.
//
// A CID is held by an flock on <runtime dir>/cids/<cid>.lock for the VM's lifetime (released
// by the kernel when the broker exits, however it exits), so allocation needs no daemon and
// cannot race: the lowest CID whose lock can be taken wins. The lease directory is the user's
// own (inside the private runtime directory, mode 0700), not shared with other users: with
// hybrid vsock a CID is seen only by its guest and by the user's own programs on the VM's Unix
// socket, and nothing host-wide (there is no vhost-vsock) needs it to be unique beyond that,
// so another user can neither exhaust the CIDs nor squat the directory (docs/ARCHITECTURE.md).
#pragma once

#include <cstdint>
#include <string>

#include "base/fd.h"
#include "base/result.h"
#include "broker/private_dir.h"

namespace moss::cid {

constexpr uint32_t kFirstGuestCid = 3;  // 0-2 are reserved (hypervisor, local, host).
constexpr uint32_t kMaxGuestCid = 65535;

// The lease directory's name in the runtime directory.
inline constexpr char kLeaseDir[] = "cids";

class Lease {
 public:
  // The lowest free CID in the lease directory `dir` (a privdir::Dir: this user's alone).
  static Result<Lease> take(const privdir::Dir& dir);
  Lease(Lease&&) = default;
  Lease& operator=(Lease&&) = default;
  ~Lease();  // Removes the lock file if it is still ours, then releases the CID.

  uint32_t cid() const { return cid_; }

 private:
  Lease() = default;
  uint32_t cid_ = 0;
  privdir::Dir dir_;
  std::string name_;
  UniqueFd lock_;
};

}  // namespace moss::cid
