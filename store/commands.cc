#include "store/commands.h"

#include <unistd.h>

#include <cstdio>

#include "store/pack.h"
#include "store/spore.h"

namespace moss::store {
namespace {

Result<ChunkStore> open_store(const std::string& store_dir) {
  std::string dir = store_dir;
  if (dir.empty()) {
    MOSS_TRY(dir, default_store_dir());
  }
  return ChunkStore::open(dir);
}

double mib(uint64_t bytes) { return bytes / 1048576.0; }

// "\rpacking: 42% (1.2 of 3.0 MiB)" on a terminal; nothing otherwise.
Progress terminal_progress(const char* verb) {
  if (!::isatty(STDERR_FILENO)) return {};
  return [verb](uint64_t done, uint64_t total) {
    std::fprintf(stderr, "\r%s: %3.0f%% (%.1f of %.1f MiB)", verb, total ? 100.0 * done / total : 100.0, mib(done),
                 mib(total));
    if (done == total) std::fputc('\n', stderr);
  };
}

}  // namespace

Result<void> store_gc_command(const std::string& store_dir) {
  MOSS_TRY(ChunkStore store, open_store(store_dir));
  MOSS_TRY(GcStats s, store.gc(chunks_of_manifest));
  std::printf("store %s: kept %llu spores and %llu chunks; dropped %llu spores that are gone or changed; deleted %llu "
              "chunks (%.1f MiB) and %llu temporary files\n",
              store.dir().c_str(), (unsigned long long)s.roots_kept, (unsigned long long)s.chunks_kept,
              (unsigned long long)s.roots_dropped, (unsigned long long)s.chunks_deleted, mib(s.bytes_freed),
              (unsigned long long)s.temp_files_deleted);
  return {};
}

Result<void> pack_command(const std::string& spore, const std::string& out_file, const std::string& store_dir) {
  MOSS_TRY(ChunkStore store, open_store(store_dir));
  MOSS_TRY_VOID(pack_spore(store, spore, out_file, terminal_progress("packing")));
  std::printf("packed %s into %s\n", spore.c_str(), out_file.c_str());
  return {};
}

Result<void> unpack_command(const std::string& pack_file, const std::string& out_dir, const std::string& store_dir) {
  MOSS_TRY(ChunkStore store, open_store(store_dir));
  MOSS_TRY_VOID(unpack_spore(store, pack_file, out_dir, terminal_progress("unpacking")));
  std::printf("unpacked %s into %s (chunks in %s)\n", pack_file.c_str(), out_dir.c_str(), store.dir().c_str());
  return {};
}

Result<void> inspect_command(const std::string& spore) {
  MOSS_TRY(Spore s, read_spore(spore));
  std::fputs(manifest_json(*s.manifest).c_str(), stdout);
  return {};
}

}  // namespace moss::store
