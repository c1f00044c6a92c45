#include "devices/null/request.h"

#include <cstring>

namespace moss::null {

Answer answer_request(const virtio::DescriptorChain& chain, const blk::DiskGeometry& disk, bool zero_reads) {
  blk::Parsed p = blk::parse_request(chain, disk);
  Answer a;
  if (!p.request) {
    if (p.error->status_byte.empty()) return a;
    p.error->status_byte[0] = p.error->status;
    a.status = p.error->status;
    a.used_len = 1;
    return a;
  }
  blk::Request& r = *p.request;
  a.type = r.type;
  a.data_bytes = r.data_bytes;
  uint64_t written = 0;
  if (r.type == blk::Type::kIn || r.type == blk::Type::kGetId) {
    // A null disk reads as zeros, and has no ID: an empty (all-NUL) serial.
    const uint64_t want = r.type == blk::Type::kGetId ? std::min<uint64_t>(r.data_bytes, blk::kIdBytes) : r.data_bytes;
    for (auto seg : r.in_data) {
      if (written == want) break;
      uint64_t n = std::min<uint64_t>(seg.size(), want - written);
      if (zero_reads || r.type == blk::Type::kGetId) std::memset(seg.data(), 0, n);
      written += n;
    }
  }
  r.status[0] = blk::kOk;
  a.status = blk::kOk;
  a.used_len = static_cast<uint32_t>(written + 1);  // The parser bounds data_bytes below 4 GiB.
  return a;
}

}  // namespace moss::null
