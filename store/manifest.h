// decode_manifest: the spore manifest's bytes (store/spore.capnp) to a checked view, or one
// sentence saying why they cannot be trusted. Pure: no I/O. Every reader of a manifest goes
// through it (restore, gc, pack, inspect), and fuzz/fuzz_spore_manifest.cc drives it.
#pragma once

#include <capnp/serialize.h>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/result.h"
#include "store/chunk_store.h"
#include "store/spore.capnp.h"

namespace moss::store {

constexpr size_t kMaxManifestBytes = 64u << 20;

struct MemoryRange {
  uint64_t guest_addr = 0, bytes = 0;
  std::vector<ChunkRef> chunks;
};

// A decoded manifest. `root()` reads every field; the memory map is also checked and copied
// into `ranges` (sorted, non-overlapping, inside the RAM ranges, chunk counts matching).
class Manifest {
 public:
  spore::Manifest::Reader root() const { return root_; }
  uint32_t chunk_bytes() const { return chunk_bytes_; }
  const std::vector<MemoryRange>& ranges() const { return ranges_; }
  bool has_parent() const { return has_parent_; }
  // The distinct stored (non-zero) chunks the memory map names.
  std::vector<ChunkId> stored_chunks() const;
  // The byte length of chunk `i` of `range`.
  size_t chunk_size(const MemoryRange& range, size_t i) const;

 private:
  friend Result<std::unique_ptr<Manifest>> decode_manifest(std::span<const uint8_t> bytes);
  friend Result<void> check_and_copy(spore::Manifest::Reader root, Manifest& m);
  kj::Array<capnp::word> words_;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
  spore::Manifest::Reader root_;
  uint32_t chunk_bytes_ = 0;
  std::vector<MemoryRange> ranges_;
  bool has_parent_ = false;
};

// Refuses: bytes that are not a whole Cap'n Proto message (truncated, malformed, too large or
// too deep), a format version other than sporeFormatVersion, a memory map whose ranges are
// unaligned, overlapping, outside the machine's RAM, or whose chunk count does not match
// their size, a zero chunk with a hash, and (without a parent) a map that misses RAM.
Result<std::unique_ptr<Manifest>> decode_manifest(std::span<const uint8_t> bytes);

// The flat bytes of a message (what SPORE/manifest holds).
std::vector<uint8_t> encode_message(capnp::MessageBuilder& message);

}  // namespace moss::store
