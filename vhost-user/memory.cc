#include "vhost-user/memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <string>
#include <utility>

#include "base/syscall.h"

namespace moss::vhost_user {
namespace {

bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  // Callers have checked that neither range wraps.
  return a < b + blen && b < a + alen;
}

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
  return buf;
}

}  // namespace

Result<Mapping> Mapping::map_shared(int fd, uint64_t offset, uint64_t len, const char* what) {
  struct stat st;
  MOSS_TRY_VOID(MOSS_SYS(::fstat(fd, &st)));
  if (!S_ISREG(st.st_mode)) {
    return make_error(std::string("the fd for ") + what + " is not a shared-memory file (memfd, tmpfs or hugetlbfs)");
  }
  // The peer keeps its own fd: a file it could truncate after we mapped it would fault us with
  // SIGBUS on the next access. Only a size sealed against shrinking is safe to map.
  int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0 || !(seals & F_SEAL_SHRINK)) {
    return make_error(std::string("the fd for ") + what +
                      " is not sealed against shrinking (F_SEAL_SHRINK), so its owner could truncate it under "
                      "this worker; use a sealed memfd (QEMU: memory-backend-memfd, whose seal=on is the default)");
  }
  uint64_t end;
  if (len == 0 || __builtin_add_overflow(offset, len, &end) || end > static_cast<uint64_t>(st.st_size)) {
    return make_error(std::string(what) + " (" + hex(len) + " bytes at offset " + hex(offset) +
                      ") does not fit in its " + std::to_string(st.st_size) + "-byte file");
  }
  // st_blksize is the mapping granularity for hugetlbfs; the page size otherwise.
  uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  if (st.st_blksize > 0 && static_cast<uint64_t>(st.st_blksize) > page) page = static_cast<uint64_t>(st.st_blksize);
  uint64_t aligned = offset & ~(page - 1);
  uint64_t skew = offset - aligned;
  uint64_t maplen = len + skew;
  if (maplen > SIZE_MAX) return make_error(std::string(what) + " is too large to map");
  MOSS_TRY(moss::Mapping map, moss::Mapping::map(static_cast<size_t>(maplen), PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                                                 static_cast<off_t>(aligned), what));
  return Mapping(std::move(map), static_cast<size_t>(skew));
}

Result<void> MemoryMap::add(const MemoryRegion& r, int fd) {
  uint64_t gend, uend;
  if (r.memory_size == 0 || __builtin_add_overflow(r.guest_phys_addr, r.memory_size, &gend) ||
      __builtin_add_overflow(r.userspace_addr, r.memory_size, &uend)) {
    return make_error("memory region at guest address " + hex(r.guest_phys_addr) + " has an invalid size " +
                      hex(r.memory_size));
  }
  for (const auto& o : regions_) {
    if (overlaps(r.guest_phys_addr, r.memory_size, o.desc.guest_phys_addr, o.desc.memory_size) ||
        overlaps(r.userspace_addr, r.memory_size, o.desc.userspace_addr, o.desc.memory_size)) {
      return make_error("memory region at guest address " + hex(r.guest_phys_addr) +
                        " overlaps a region already mapped");
    }
  }
  MOSS_TRY(Mapping m, Mapping::map_shared(fd, r.mmap_offset, r.memory_size, "a guest memory region"));
  regions_.push_back(Region{r, std::move(m)});
  rebuild();
  return {};
}

Result<void> MemoryMap::remove(const MemoryRegion& r) {
  for (auto it = regions_.begin(); it != regions_.end(); ++it) {
    if (it->desc.guest_phys_addr == r.guest_phys_addr && it->desc.userspace_addr == r.userspace_addr &&
        it->desc.memory_size == r.memory_size) {
      regions_.erase(it);
      rebuild();
      return {};
    }
  }
  return make_error("no mapped memory region matches the one at guest address " + hex(r.guest_phys_addr) +
                    " the frontend asked to remove");
}

void MemoryMap::clear() {
  regions_.clear();
  rebuild();
}

Result<uint64_t> MemoryMap::user_to_guest(uint64_t uaddr) const {
  for (const auto& o : regions_) {
    if (uaddr >= o.desc.userspace_addr && uaddr - o.desc.userspace_addr < o.desc.memory_size) {
      return o.desc.guest_phys_addr + (uaddr - o.desc.userspace_addr);
    }
  }
  return make_error("frontend address " + hex(uaddr) + " is in no shared memory region");
}

void MemoryMap::rebuild() {
  std::vector<GuestRegion> g;
  g.reserve(regions_.size());
  for (const auto& o : regions_) g.push_back(GuestRegion{o.desc.guest_phys_addr, o.desc.memory_size, o.map.data()});
  guest_ = GuestMemory(std::move(g));
}

}  // namespace moss::vhost_user
