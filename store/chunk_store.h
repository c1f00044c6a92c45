// The chunk store: guest RAM of spores as content-addressed, zstd-compressed chunks that every
// spore in the store shares (the same chunk is stored once, an all-zero chunk never).
//
// Layout of STORE (0700; every file 0600):
//   chunks/XX/<32 hex>  one zstd frame (content size in its header) of a chunk whose XXH3-128
//                       is the 32 hex digits; XX is its first two.
//   roots/<32 hex>      one per spore written: "<spore path>\n<manifest XXH3-128>\n"; the name is
//                       the XXH3-128 of the spore path, so rewriting a path replaces its root.
//   tmp/                chunks and roots being written (temp names; renamed when synced).
//   lock                writers hold a shared flock for a whole write, gc an exclusive one, so
//                       gc never deletes the chunks of a spore being written; kill -9 of a
//                       writer releases its flock and gc then removes what it left.
//
// Crash safety: a chunk is written to tmp/ and made durable, then renamed into place, and the
// renames made durable: by default with one syncfs(2) before the renames and one after (as
// OSTree does), or with an fsync per file and per touched directory (bench/store measures
// both).
// A chunk file is therefore complete or absent; reads still verify size and hash.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"

namespace moss::store {

// The chunk size and zstd level, chosen by bench/store (docs/ARCHITECTURE.md "Spores and the
// chunk store").
constexpr uint32_t kChunkBytes = 256 * 1024;
constexpr int kZstdLevel = 1;

// XXH3-128 of a chunk's uncompressed bytes.
struct ChunkId {
  uint64_t hi = 0, lo = 0;
  static ChunkId of(std::span<const uint8_t> bytes);
  std::string hex() const;  // 32 lowercase hex digits, high half first.
  static Result<ChunkId> parse(const std::string& hex);
  bool operator==(const ChunkId&) const = default;
  auto operator<=>(const ChunkId&) const = default;
};

// A chunk of a memory map: all zero (not stored) or the stored chunk `id`.
struct ChunkRef {
  bool zero = false;
  ChunkId id;
  bool operator==(const ChunkRef&) const = default;
};

bool is_all_zero(std::span<const uint8_t> bytes);

// Decompresses a chunk's zstd frame, checking that it holds exactly `size` bytes whose
// XXH3-128 is `id`; errors name the chunk and `owner` (a spore or a pack).
Result<std::vector<uint8_t>> decompress_chunk(const ChunkId& id, size_t size, std::span<const uint8_t> frame,
                                              const std::string& owner);

// $XDG_DATA_HOME/moss/store, else $HOME/.local/share/moss/store; an error if neither is set.
Result<std::string> default_store_dir();

// A flock on STORE/lock, released on destruction (or when the process dies).
class StoreLock {
 public:
  StoreLock() = default;
  explicit StoreLock(UniqueFd fd) : fd_(std::move(fd)) {}
  bool held() const { return fd_.valid(); }

 private:
  UniqueFd fd_;
};

struct GcStats {
  uint64_t roots_kept = 0, roots_dropped = 0;
  uint64_t chunks_kept = 0, chunks_deleted = 0, bytes_freed = 0;
  uint64_t temp_files_deleted = 0;
};

class ChunkStore {
 public:
  // Opens STORE, creating it and its subdirectories 0700 when absent.
  static Result<ChunkStore> open(const std::string& dir);
  const std::string& dir() const { return dir_; }

  Result<StoreLock> lock_shared() const;     // For writers: held for the whole write.
  Result<StoreLock> lock_exclusive() const;  // For gc.

  std::string chunk_path(const ChunkId& id) const;
  bool has(const ChunkId& id) const;

  // Reads a chunk, checking that it decompresses to exactly `size` bytes whose hash is `id`.
  // `owner` names the spore in errors: "chunk 3f2a… of SPORE is corrupt: ...".
  Result<std::vector<uint8_t>> read(const ChunkId& id, size_t size, const std::string& owner) const;
  // The chunk's compressed file as stored (for pack).
  Result<std::vector<uint8_t>> read_compressed(const ChunkId& id, const std::string& owner) const;

  // Records a spore in roots/ (crash-safe); gc keeps the chunks of the manifest at
  // `spore_path` while it still hashes to `manifest_id`.
  Result<void> add_root(const std::string& spore_path, const ChunkId& manifest_id);
  Result<void> remove_root(const std::string& spore_path);

  // Takes the exclusive lock itself. `chunks_of_manifest` lists the chunks a manifest's bytes
  // name, or fails when they are not a manifest (store/spore.h provides it). Roots whose spore
  // is gone or whose manifest changed are dropped; a root or manifest gc cannot read or
  // decode (e.g. a newer format) makes it fail before it deletes anything.
  using ManifestChunks = std::function<Result<std::vector<ChunkId>>(std::span<const uint8_t> manifest)>;
  Result<GcStats> gc(const ManifestChunks& chunks_of_manifest);

 private:
  explicit ChunkStore(std::string dir) : dir_(std::move(dir)) {}
  std::string dir_;
};

// Writes chunks into a store as one crash-safe batch: add() hashes, skips zero and known
// chunks, compresses and writes the rest under tmp/; commit() makes them durable and renames
// them into place. Destroying an uncommitted batch removes its temp files. The caller holds
// the store's shared lock from before the first add() until its root is written.
// How a batch makes its chunks durable before renaming them into place.
enum class SyncMode {
  kSyncfs,     // syncfs(2) of the store's filesystem before the renames and after them.
  kFsyncEach,  // fsync(2) each chunk file as it is written (on the compressing threads), then
               // each touched shard directory after the renames.
};

class ChunkBatch {
 public:
  explicit ChunkBatch(ChunkStore& store, int zstd_level = kZstdLevel, SyncMode sync = SyncMode::kSyncfs);
  ~ChunkBatch();
  ChunkBatch(const ChunkBatch&) = delete;
  ChunkBatch& operator=(const ChunkBatch&) = delete;

  // Hashes and stores the chunks of `bytes` (split every `chunk_bytes`, the last may be
  // short), compressing on up to `threads` threads; returns one ChunkRef per chunk.
  Result<std::vector<ChunkRef>> add(std::span<const uint8_t> bytes, uint32_t chunk_bytes = kChunkBytes,
                                    unsigned threads = 2);
  // Stores an already compressed chunk (from a pack) after checking that it decompresses to
  // `size` bytes hashing to `id`; `owner` names it in errors.
  Result<void> add_compressed(const ChunkId& id, size_t size, std::span<const uint8_t> compressed,
                              const std::string& owner);
  Result<void> commit();

  uint64_t chunks_written() const;
  uint64_t bytes_written() const;

 private:
  struct State;
  ChunkStore& store_;
  int level_;
  SyncMode sync_;
  std::unique_ptr<State> s_;
};

}  // namespace moss::store
