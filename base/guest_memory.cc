#include "base/guest_memory.h"

#include <cinttypes>
#include <cstdio>

namespace moss {

uint64_t GuestMemory::total_size() const {
  uint64_t total = 0;
  for (const auto& r : regions_) total += r.size;
  return total;
}

Result<std::span<uint8_t>> GuestMemory::slice(uint64_t gpa, uint64_t len) const {
  uint64_t end;
  if (__builtin_add_overflow(gpa, len, &end)) {
    return make_error("guest address range overflows 64 bits");
  }
  for (const auto& r : regions_) {
    if (gpa >= r.gpa && end <= r.gpa + r.size) {
      return std::span<uint8_t>(r.host + (gpa - r.gpa), len);
    }
  }
  char buf[96];
  std::snprintf(buf, sizeof buf, "guest range 0x%" PRIx64 "+0x%" PRIx64 " is outside guest memory", gpa, len);
  return make_error(buf);
}

Result<void> GuestMemory::write(uint64_t gpa, std::span<const uint8_t> bytes) const {
  MOSS_TRY(auto dst, slice(gpa, bytes.size()));
  if (!bytes.empty()) std::memcpy(dst.data(), bytes.data(), bytes.size());
  return {};
}

Result<void> GuestMemory::read(uint64_t gpa, std::span<uint8_t> out) const {
  MOSS_TRY(auto src, slice(gpa, out.size()));
  if (!out.empty()) std::memcpy(out.data(), src.data(), out.size());
  return {};
}

}  // namespace moss
