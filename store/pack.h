// Pack: one file holding a spore's manifest and every chunk it needs, to move a spore between
// stores and hosts; unpack: such a file into a store and a spore directory; inspect: a
// manifest as JSON.
//
// Format (little-endian):
//   header  "MOSSPACK" (8 bytes), version u32 (kPackVersion), reserved u32 (0)
//   records type u32, reserved u32 (0), length u64, XXH3-128 of the payload (hi u64, lo u64),
//           payload of `length` bytes:
//     1 manifest  the spore's manifest bytes; first, exactly once
//     2 chunk     chunk id (hi u64, lo u64), uncompressed size u64, the chunk's zstd frame
//     3 end       the number of chunk records (u64); last, and the file ends with it
// decode_pack checks all of it, and that the chunks are exactly those the manifest names.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "store/chunk_store.h"
#include "store/manifest.h"

namespace moss::store {

constexpr uint32_t kPackVersion = 1;
constexpr char kPackMagic[8] = {'M', 'O', 'S', 'S', 'P', 'A', 'C', 'K'};

struct PackChunk {
  ChunkId id;
  uint64_t size = 0;                 // Uncompressed.
  std::span<const uint8_t> frame;    // Points into the decoded bytes.
};

struct PackContents {
  std::span<const uint8_t> manifest_bytes;
  std::unique_ptr<Manifest> manifest;
  std::vector<PackChunk> chunks;
};

// Pure: refuses a bad magic or version, a truncated or overlong record, a payload whose hash
// does not match, records out of order, a missing end, bytes after it, a chunk the manifest
// does not name or names with another size, a duplicate, and a stored chunk the pack lacks.
// Chunk frames are checked only by their record hash here; unpack verifies each chunk's own
// hash as it stores it.
Result<PackContents> decode_pack(std::span<const uint8_t> bytes);

using Progress = std::function<void(uint64_t done, uint64_t total)>;

// Writes `out_file` (temp name + rename; 0600) from the spore at `spore_path`, whose chunks
// are in `store` and are verified as they are packed.
Result<void> pack_spore(const ChunkStore& store, const std::string& spore_path, const std::string& out_file,
                        const Progress& progress = {});

// Unpacks `pack_file` into `store` and a new spore at `spore_path`. All or nothing: a bad pack
// leaves no spore (chunks it added are unreferenced and go at the next gc).
Result<void> unpack_spore(ChunkStore& store, const std::string& pack_file, const std::string& spore_path,
                          const Progress& progress = {});

// The manifest as JSON (capnp's JsonCodec; Data fields as hex strings).
std::string manifest_json(const Manifest& manifest);

}  // namespace moss::store
