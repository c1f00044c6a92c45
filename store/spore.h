// Spores on disk: SPORE/ (0700) holding SPORE/manifest (0600, store/spore.capnp), its memory
// as chunks in a ChunkStore.
//
// Writing is crash-safe and all or nothing: under the store's shared lock, the chunks are
// written and committed (ChunkBatch), the spore is recorded in the store's roots (so gc keeps
// its chunks), then the manifest is written into a temp directory beside SPORE, fsynced, and
// the directory renamed to SPORE. A spore therefore exists only once it is complete; a writer
// killed before the rename leaves a root whose spore is absent and chunks nobody references,
// which the next gc removes.
#pragma once

#include <capnp/message.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "base/result.h"
#include "store/chunk_store.h"
#include "store/manifest.h"

namespace moss::store {

// Guest RAM at a guest-physical address.
struct RamRegion {
  uint64_t guest_addr = 0;
  std::span<const uint8_t> bytes;
};
struct RamRegionMut {
  uint64_t guest_addr = 0;
  std::span<uint8_t> bytes;
};

struct SporeWritten {
  ChunkId manifest_id;       // XXH3-128 of SPORE/manifest (the spore's id).
  uint64_t chunks = 0;       // Chunks in the memory map.
  uint64_t zero_chunks = 0;
  uint64_t new_chunks = 0;   // Chunks this write added to the store (the rest were there).
  uint64_t new_bytes = 0;    // Their compressed bytes.
};

struct WriteOptions {
  uint32_t chunk_bytes = kChunkBytes;
  int zstd_level = kZstdLevel;
  unsigned threads = 2;
  SyncMode sync = SyncMode::kSyncfs;
  // Called between steps, for tests that kill a writer mid-write ("chunks", "root").
  std::function<void(const char* step)> after_step;
};

// Writes the spore at `path` (which must not exist). `message` holds a spore::Manifest with
// everything but formatVersion and memory, which this fills from `ram`; machine.ramRanges
// must describe `ram`. The result is checked with decode_manifest before anything is renamed.
Result<SporeWritten> write_spore(ChunkStore& store, const std::string& path, capnp::MessageBuilder& message,
                                 std::span<const RamRegion> ram, const WriteOptions& options = {});

// Writes a spore whose chunks are already in the store (unpack): the manifest bytes as given,
// after decode_manifest accepts them and every chunk they name is present. The caller holds
// the store's shared lock, taken before it added the chunks.
Result<SporeWritten> write_spore_manifest(ChunkStore& store, const std::string& path,
                                          std::span<const uint8_t> manifest_bytes);

struct Spore {
  std::string path;
  std::vector<uint8_t> bytes;  // SPORE/manifest as read.
  std::unique_ptr<Manifest> manifest;
  ChunkId id() const { return ChunkId::of(bytes); }
};

// Reads and checks SPORE/manifest; errors name the spore.
Result<Spore> read_spore(const std::string& path);

// Fills `ram` from the spore's chunks, verifying each. Zero chunks are written as zeros, or,
// when `ram_is_zero` (a fresh memfd), skipped: their pages are never touched, so a restored
// guest's untouched memory costs the host nothing, as it did before the suspend. `ram` must
// cover the manifest's memory ranges. Errors name the chunk and the spore.
Result<void> load_ram(const ChunkStore& store, const Spore& spore, std::span<const RamRegionMut> ram,
                      bool ram_is_zero = false);

// The chunk list of manifest bytes, for ChunkStore::gc.
Result<std::vector<ChunkId>> chunks_of_manifest(std::span<const uint8_t> manifest_bytes);

// The absolute, normalised form of a spore path (what roots record).
Result<std::string> absolute_path(const std::string& path);

}  // namespace moss::store
