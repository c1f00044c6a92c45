// libFuzzer target: the pack decoder (store/pack.h), which reads a file that may come from
// another host. Whatever it accepts names exactly the stored chunks of its manifest, once
// each, with their sizes, and every span lies inside the input.
#include <cstddef>
#include <cstdint>
#include <set>
#include <span>

#include "store/pack.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const uint8_t> in(data, size);
  auto p = moss::store::decode_pack(in);
  if (!p.ok()) {
    if (p.error().message.empty() || p.error().message.find('\n') != std::string::npos) __builtin_trap();
    return 0;
  }
  auto inside = [&](std::span<const uint8_t> s) { return s.data() >= data && s.data() + s.size() <= data + size; };
  if (!inside(p->manifest_bytes) || !p->manifest) __builtin_trap();
  auto wanted = p->manifest->stored_chunks();
  std::set<moss::store::ChunkId> want(wanted.begin(), wanted.end()), got;
  for (const auto& c : p->chunks) {
    if (!inside(c.frame) || !got.insert(c.id).second) __builtin_trap();
    if (c.size == 0 || c.size > p->manifest->chunk_bytes()) __builtin_trap();
  }
  if (got != want) __builtin_trap();
  return 0;
}
