// The backend's view of guest memory: the regions the frontend shared (SET_MEM_TABLE,
// ADD_MEM_REG), each mmap'd from the fd it sent, plus the translation of frontend user
// addresses (which ring addresses are) to guest physical addresses.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "base/fd.h"
#include "base/guest_memory.h"
#include "base/mapping.h"
#include "base/result.h"
#include "vhost-user/message.h"

namespace moss::vhost_user {

// One mmap'd range of a file a peer sent (base's Mapping, which unmaps it, and where the
// requested offset starts in it).
class Mapping {
 public:
  Mapping() = default;

  // Maps [offset, offset+len) of `fd` shared and read-write. The file must be a regular file
  // (memfd, hugetlbfs, tmpfs) at least that long and sealed against shrinking (F_SEAL_SHRINK):
  // touching a mapping past the end of its file raises SIGBUS, so a short file, or one its
  // owner could still truncate, is refused here rather than crashing us later.
  static Result<Mapping> map_shared(int fd, uint64_t offset, uint64_t len, const char* what);

  uint8_t* data() const { return map_.bytes() + skew_; }
  size_t size() const { return map_.size() - skew_; }

 private:
  Mapping(moss::Mapping map, size_t skew) : map_(std::move(map)), skew_(skew) {}
  moss::Mapping map_;
  size_t skew_ = 0;  // mmap wants a page-aligned offset; data() starts this far in.
};

class MemoryMap {
 public:
  // Maps one region from `fd` (the fd may be closed afterwards). Refuses empty regions,
  // overflowing ranges, and regions whose guest or user range overlaps one already mapped.
  Result<void> add(const MemoryRegion& region, int fd);
  // Unmaps the region with this guest address, user address and size (mmap_offset ignored).
  Result<void> remove(const MemoryRegion& region);
  void clear();

  size_t size() const { return regions_.size(); }
  // Valid until the next add/remove/clear.
  const GuestMemory& guest_memory() const { return guest_; }
  // The guest physical address of a frontend user address.
  Result<uint64_t> user_to_guest(uint64_t uaddr) const;

 private:
  struct Region {
    MemoryRegion desc;
    Mapping map;
  };
  void rebuild();

  std::vector<Region> regions_;
  GuestMemory guest_;
};

}  // namespace moss::vhost_user
