// libFuzzer target: the spore manifest decoder (store/manifest.h), which reads SPORE/manifest,
// bytes from disk or from another host's pack. Whatever it accepts must hold the memory map's
// invariants, and every field of the view must be readable without a throw (inspect reads
// them all).
#include <cstddef>
#include <cstdint>
#include <span>

#include "store/manifest.h"
#include "store/pack.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto m = moss::store::decode_manifest(std::span<const uint8_t>(data, size));
  if (!m.ok()) {
    if (m.error().message.empty() || m.error().message.find('\n') != std::string::npos) __builtin_trap();
    return 0;
  }
  const auto& man = **m;
  uint64_t cb = man.chunk_bytes(), prev_end = 0;
  if (cb < 4096 || (cb & (cb - 1))) __builtin_trap();
  for (const auto& r : man.ranges()) {
    if (r.bytes == 0 || r.guest_addr < prev_end || r.guest_addr % 4096 || r.bytes % 4096) __builtin_trap();
    if (r.chunks.size() != (r.bytes + cb - 1) / cb) __builtin_trap();
    for (size_t i = 0; i < r.chunks.size(); ++i) {
      if (man.chunk_size(r, i) == 0 || man.chunk_size(r, i) > cb) __builtin_trap();
      if (r.chunks[i].zero && (r.chunks[i].id.hi || r.chunks[i].id.lo)) __builtin_trap();
    }
    prev_end = r.guest_addr + r.bytes;
  }
  (void)moss::store::manifest_json(man);  // Throws (and so aborts) if a field were unreadable.
  return 0;
}
