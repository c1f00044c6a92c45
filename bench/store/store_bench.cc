// The chunk store's costs, to choose its chunk size and zstd level (docs/ARCHITECTURE.md,
// "Spores and the chunk store"): MB/s of XXH3-128 + zstd over realistic guest RAM at each
// chunk size and level, one thread and two; the compressed size; MB/s of the read path
// (decompress + verify the hash); and dedup between two "spores" that differ in a few % of
// their pages. The peer, in the same run: the zstd CLI over the same bytes.
//
// Guest RAM model (a guest after boot is mostly untouched memory): runs of 1..64 pages, each
// run zero (45%), program text and data copied from this host's /usr/lib and /usr/bin (40%),
// or random bytes (15%: encrypted or compressed data, page cache of such files).
//
// Then the whole write path of store/ (write_spore: files under tmp/, one syncfs, renames, a
// directory fsync per shard) into a fresh store, and the read path (read_spore + load_ram),
// at each chunk size with zstd -1, on the filesystem of --store-dir.
//
// Usage: store_bench --out FILE [--mib N] [--store-dir DIR]
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include <filesystem>

#include "store/spore.h"
#include "store/test_support.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_set>
#include <vector>

namespace {

constexpr size_t kPage = 4096;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Program bytes: regular files from the directories, up to `want` bytes.
std::vector<uint8_t> host_program_bytes(size_t want) {
  std::vector<uint8_t> out;
  for (const char* dir : {"/usr/lib/x86_64-linux-gnu", "/usr/bin", "/usr/lib"}) {
    DIR* d = opendir(dir);
    if (!d) continue;
    while (dirent* e = readdir(d)) {
      if (out.size() >= want) break;
      std::string p = std::string(dir) + "/" + e->d_name;
      struct stat st;
      if (stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 65536) continue;
      int fd = open(p.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) continue;
      size_t n = std::min<size_t>(st.st_size, want - out.size());
      size_t at = out.size();
      out.resize(at + n);
      ssize_t r = pread(fd, out.data() + at, n, 0);
      out.resize(at + (r > 0 ? r : 0));
      close(fd);
    }
    closedir(d);
  }
  return out;
}

std::vector<uint8_t> guest_ram(size_t bytes, uint64_t seed) {
  std::vector<uint8_t> ram(bytes, 0);
  std::vector<uint8_t> text = host_program_bytes(bytes);
  std::mt19937_64 rng(seed);
  size_t text_at = 0;
  for (size_t page = 0; page < bytes / kPage;) {
    size_t run = std::min<size_t>(1 + rng() % 64, bytes / kPage - page);
    unsigned kind = rng() % 100;
    uint8_t* p = ram.data() + page * kPage;
    if (kind < 45) {
      // zero
    } else if (kind < 85 && !text.empty()) {
      for (size_t i = 0; i < run * kPage; ++i) p[i] = text[(text_at + i) % text.size()];
      text_at = (text_at + run * kPage) % text.size();
    } else {
      for (size_t i = 0; i < run * kPage; i += 8) {
        uint64_t v = rng();
        std::memcpy(p + i, &v, 8);
      }
    }
    page += run;
  }
  return ram;
}

bool all_zero(const uint8_t* p, size_t n) {
  static const uint8_t zero[kPage] = {};
  for (size_t i = 0; i < n; i += kPage)
    if (std::memcmp(p + i, zero, std::min(kPage, n - i)) != 0) return false;
  return true;
}

struct Row {
  size_t chunk;
  int level;
  double mbps_1t, mbps_2t, read_mbps;
  uint64_t stored_bytes, nonzero_chunks, chunks;
};

// Hash + compress every non-zero chunk with `threads` threads; returns seconds and totals.
double write_pass(const std::vector<uint8_t>& ram, size_t chunk, int level, unsigned threads, uint64_t* stored,
                  uint64_t* nonzero, std::vector<std::vector<uint8_t>>* frames) {
  size_t n = ram.size() / chunk;
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> total{0}, nz{0};
  if (frames) frames->assign(n, {});
  auto t0 = Clock::now();
  auto work = [&] {
    ZSTD_CCtx* cctx = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
    std::vector<uint8_t> out(ZSTD_compressBound(chunk));
    for (size_t i; (i = next.fetch_add(1)) < n;) {
      const uint8_t* p = ram.data() + i * chunk;
      if (all_zero(p, chunk)) continue;
      XXH128_hash_t h = XXH3_128bits(p, chunk);
      (void)h;
      size_t c = ZSTD_compress2(cctx, out.data(), out.size(), p, chunk);
      total += c;
      ++nz;
      if (frames) (*frames)[i].assign(out.data(), out.data() + c);
    }
    ZSTD_freeCCtx(cctx);
  };
  std::vector<std::thread> ts;
  for (unsigned t = 1; t < threads; ++t) ts.emplace_back(work);
  work();
  for (auto& t : ts) t.join();
  double s = seconds_since(t0);
  *stored = total;
  *nonzero = nz;
  return s;
}

double read_pass(const std::vector<std::vector<uint8_t>>& frames, size_t chunk) {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  std::vector<uint8_t> out(chunk);
  volatile uint64_t sink = 0;
  auto t0 = Clock::now();
  for (const auto& f : frames) {
    if (f.empty()) continue;
    size_t d = ZSTD_decompressDCtx(dctx, out.data(), out.size(), f.data(), f.size());
    sink = sink + d + XXH3_128bits(out.data(), chunk).low64;
  }
  double s = seconds_since(t0);
  ZSTD_freeDCtx(dctx);
  return s;
}

// Fraction of the second image's non-zero chunks already stored by the first.
struct Dedup {
  uint64_t chunks2, shared, new_bytes;
};
Dedup dedup(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, size_t chunk) {
  std::unordered_set<std::string> seen;
  auto key = [](const uint8_t* p, size_t n) {
    XXH128_hash_t h = XXH3_128bits(p, n);
    return std::string(reinterpret_cast<const char*>(&h), sizeof h);
  };
  for (size_t i = 0; i + chunk <= a.size(); i += chunk)
    if (!all_zero(a.data() + i, chunk)) seen.insert(key(a.data() + i, chunk));
  Dedup d{0, 0, 0};
  for (size_t i = 0; i + chunk <= b.size(); i += chunk) {
    if (all_zero(b.data() + i, chunk)) continue;
    ++d.chunks2;
    if (seen.count(key(b.data() + i, chunk))) ++d.shared;
    else d.new_bytes += chunk;
  }
  return d;
}

double peer_zstd(const std::string& file, int level) {
  std::string cmd = "zstd -q -T1 -" + std::to_string(level) + " -c " + file + " > /dev/null";
  auto t0 = Clock::now();
  if (std::system(cmd.c_str()) != 0) return -1;
  return seconds_since(t0);
}

struct StoreRow {
  size_t chunk;
  unsigned threads;
  moss::store::SyncMode sync;
  double write_s, read_s;
  uint64_t files, bytes;
};

// write_spore into a fresh store under `dir`, then load it back; seconds of each.
StoreRow store_pass(const std::vector<uint8_t>& ram, size_t chunk, unsigned threads, moss::store::SyncMode sync,
                    const std::string& dir) {
  namespace fs = std::filesystem;
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto store = moss::store::ChunkStore::open(dir + "/store").value();
  capnp::MallocMessageBuilder message;
  moss::store::testing::fill_manifest(message.initRoot<moss::spore::Manifest>(), ram.size());
  moss::store::RamRegion region{0, ram};
  moss::store::WriteOptions options;
  options.chunk_bytes = static_cast<uint32_t>(chunk);
  options.zstd_level = 1;
  options.threads = threads;
  options.sync = sync;
  auto t0 = Clock::now();
  auto w = moss::store::write_spore(store, dir + "/s.spore", message, {&region, 1}, options);
  double write_s = seconds_since(t0);
  if (!w.ok()) {
    std::fprintf(stderr, "write_spore: %s\n", w.error().message.c_str());
    std::exit(1);
  }
  std::vector<uint8_t> back(ram.size());
  moss::store::RamRegionMut dest{0, back};
  t0 = Clock::now();
  auto spore = moss::store::read_spore(dir + "/s.spore");
  auto loaded = spore.ok() ? moss::store::load_ram(store, *spore, {&dest, 1}) : moss::Result<void>(spore.error());
  double read_s = seconds_since(t0);
  if (!loaded.ok() || back != ram) {
    std::fprintf(stderr, "load_ram failed or differs\n");
    std::exit(1);
  }
  StoreRow r{chunk, threads, sync, write_s, read_s, w->new_chunks, w->new_bytes};
  fs::remove_all(dir);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  std::string out_path, store_dir = "/var/tmp";
  size_t mib = 256;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--out" && i + 1 < argc) out_path = argv[++i];
    else if (a == "--mib" && i + 1 < argc) mib = std::stoul(argv[++i]);
    else if (a == "--store-dir" && i + 1 < argc) store_dir = argv[++i];
    else {
      std::fprintf(stderr, "usage: store_bench --out FILE [--mib N]\n");
      return 2;
    }
  }
  if (out_path.empty()) {
    std::fprintf(stderr, "usage: store_bench --out FILE [--mib N]\n");
    return 2;
  }
  auto loadavg = [] {
    std::string s;
    if (FILE* f = std::fopen("/proc/loadavg", "r")) {
      char buf[64] = {};
      if (std::fgets(buf, sizeof buf, f)) s.assign(buf, std::strcspn(buf, " "));
      std::fclose(f);
    }
    return s;
  };
  const std::string load_before = loadavg();
  const size_t bytes = mib << 20;
  std::vector<uint8_t> ram = guest_ram(bytes, 1);
  size_t zero_pages = 0;
  for (size_t i = 0; i < bytes; i += kPage) zero_pages += all_zero(ram.data() + i, kPage);

  // The second spore: the same VM a little later. Scattered: 1% of pages rewritten one by
  // one (worst case); clustered: 3% of pages rewritten in runs of 64 pages (a process's heap,
  // a file read into page cache).
  std::vector<uint8_t> scattered = ram, clustered = ram;
  std::mt19937_64 rng(2);
  for (size_t k = 0; k < bytes / kPage / 100; ++k) {
    size_t page = rng() % (bytes / kPage);
    for (size_t i = 0; i < kPage; i += 8) {
      uint64_t v = rng();
      std::memcpy(scattered.data() + page * kPage + i, &v, 8);
    }
  }
  for (size_t k = 0; k < bytes / kPage * 3 / 100 / 64; ++k) {
    size_t page = (rng() % (bytes / kPage / 64)) * 64;
    for (size_t i = 0; i < 64 * kPage; i += 8) {
      uint64_t v = rng();
      std::memcpy(clustered.data() + page * kPage + i, &v, 8);
    }
  }

  std::vector<Row> rows;
  for (size_t chunk : {size_t(64) << 10, size_t(256) << 10, size_t(1) << 20, size_t(2) << 20}) {
    for (int level : {1, 3}) {
      Row r{chunk, level, 0, 0, 0, 0, 0, bytes / chunk};
      std::vector<std::vector<uint8_t>> frames;
      uint64_t s, nz;
      double best1 = 1e9, best2 = 1e9;
      for (int rep = 0; rep < 3; ++rep) {
        best1 = std::min(best1, write_pass(ram, chunk, level, 1, &s, &nz, rep == 0 ? &frames : nullptr));
        best2 = std::min(best2, write_pass(ram, chunk, level, 2, &s, &nz, nullptr));
      }
      r.mbps_1t = bytes / best1 / 1e6;
      r.mbps_2t = bytes / best2 / 1e6;
      r.stored_bytes = s;
      r.nonzero_chunks = nz;
      double rd = 1e9;
      for (int rep = 0; rep < 3; ++rep) rd = std::min(rd, read_pass(frames, chunk));
      r.read_mbps = bytes / rd / 1e6;
      rows.push_back(r);
      std::fprintf(stderr, "chunk %zu KiB level %d: %.0f MB/s (1 thread), %.0f MB/s (2), read %.0f MB/s\n",
                   chunk >> 10, level, r.mbps_1t, r.mbps_2t, r.read_mbps);
    }
  }

  std::vector<StoreRow> store_rows;
  std::string scratch = store_dir + "/moss-store-bench-" + std::to_string(getpid());
  using moss::store::SyncMode;
  const std::tuple<size_t, unsigned, SyncMode> kStoreRuns[] = {
      {64 << 10, 1, SyncMode::kSyncfs},   {64 << 10, 2, SyncMode::kSyncfs},  {64 << 10, 2, SyncMode::kFsyncEach},
      {256 << 10, 2, SyncMode::kSyncfs},  {256 << 10, 2, SyncMode::kFsyncEach},
      {1 << 20, 2, SyncMode::kSyncfs},    {2 << 20, 2, SyncMode::kSyncfs}};
  for (auto [chunk, threads, sync] : kStoreRuns) {
    {
      StoreRow best{chunk, threads, sync, 1e9, 1e9, 0, 0};
      for (int rep = 0; rep < 2; ++rep) {
        StoreRow r = store_pass(ram, chunk, threads, sync, scratch);
        best.write_s = std::min(best.write_s, r.write_s);
        best.read_s = std::min(best.read_s, r.read_s);
        best.files = r.files;
        best.bytes = r.bytes;
      }
      store_rows.push_back(best);
      std::fprintf(stderr, "store %zu KiB, %u threads, %s: write %.0f MB/s, read %.0f MB/s, %llu files\n", chunk >> 10,
                   threads, sync == SyncMode::kSyncfs ? "syncfs" : "fsync each", bytes / best.write_s / 1e6, bytes / best.read_s / 1e6, (unsigned long long)best.files);
    }
  }
  std::string fs_type = "unknown";
  {
    std::string cmd = "stat -f -c %T " + store_dir + " 2>/dev/null";
    if (FILE* p = popen(cmd.c_str(), "r")) {
      char buf[64] = {};
      if (fgets(buf, sizeof buf, p)) fs_type = std::string(buf, strcspn(buf, "\n"));
      pclose(p);
    }
  }

  // The peer: zstd's CLI over the same bytes, from tmpfs, one thread.
  std::string tmp = "/dev/shm/moss-store-bench-" + std::to_string(getpid());
  {
    FILE* f = std::fopen(tmp.c_str(), "wb");
    if (f) {
      std::fwrite(ram.data(), 1, ram.size(), f);
      std::fclose(f);
    }
  }
  double z1 = 1e9, z3 = 1e9;
  for (int rep = 0; rep < 3; ++rep) {
    z1 = std::min(z1, peer_zstd(tmp, 1));
    z3 = std::min(z3, peer_zstd(tmp, 3));
  }
  unlink(tmp.c_str());

  FILE* out = std::fopen(out_path.c_str(), "w");
  if (!out) {
    std::perror(out_path.c_str());
    return 1;
  }
  char date[32];
  time_t now = time(nullptr);
  strftime(date, sizeof date, "%Y-%m-%d", gmtime(&now));
  utsname u;
  uname(&u);
  std::fprintf(out, "# The chunk store: hashing, compression and dedup by chunk size and zstd level\n\n");
  std::fprintf(out, "Measured %s directly on this host, Linux %s, %u CPUs, zstd %s, xxHash %u. Generated by "
                    "`bench/store/store_bench.cc` (`bench/store/run-store-bench.sh`).\n\n",
               date, u.release, std::thread::hardware_concurrency(), ZSTD_versionString(), XXH_versionNumber());
  std::fprintf(out, "- Host load (1-minute load average, /proc/loadavg): %s at the start, %s at the end. On a "
                    "busy host the figures are lower bounds, and the 2-thread ones gain little.\n",
               load_before.c_str(), loadavg().c_str());
  std::fprintf(out, "- Guest RAM: %zu MiB built of runs of 1..64 pages: zero (45%%), program bytes from this host's "
                    "/usr/lib and /usr/bin (40%%), random (15%%); %.1f%% of its pages are zero.\n",
               mib, 100.0 * zero_pages / (bytes / kPage));
  std::fprintf(out, "- Write: for each chunk: skip it if all zero, else XXH3-128 of its bytes and zstd at the level "
                    "(one ZSTD_CCtx per thread); MB/s is 10^6 bytes of guest RAM per second, best of 3, no I/O.\n");
  std::fprintf(out, "- Read: decompress every stored chunk and hash it again (the verify of a restore), one thread.\n");
  std::fprintf(out, "- Stored: the sum of the compressed chunks (zero chunks are not stored).\n\n");
  std::fprintf(out, "## Hash + compress\n\n");
  std::fprintf(out, "| chunk | zstd level | write MB/s, 1 thread | write MB/s, 2 threads | read + verify MB/s | stored MiB | of RAM |\n");
  std::fprintf(out, "|---|---|---|---|---|---|---|\n");
  for (const Row& r : rows) {
    std::fprintf(out, "| %zu KiB | %d | %.0f | %.0f | %.0f | %.1f | %.1f%% |\n", r.chunk >> 10, r.level, r.mbps_1t,
                 r.mbps_2t, r.read_mbps, r.stored_bytes / 1048576.0, 100.0 * r.stored_bytes / bytes);
  }
  std::fprintf(out, "| zstd CLI -T1 over the whole image (peer) | 1 | %.0f | - | - | - | - |\n", bytes / z1 / 1e6);
  std::fprintf(out, "| zstd CLI -T1 over the whole image (peer) | 3 | %.0f | - | - | - | - |\n", bytes / z3 / 1e6);
  std::fprintf(out, "\n## The store's whole write and read path\n\n");
  std::fprintf(out, "write_spore into a fresh store in %s (%s): chunk files under tmp/; made durable with one "
                    "syncfs before the renames and one after, or an fsync of each file and each touched shard "
                    "directory; the root, the manifest; then read_spore + load_ram (every "
                    "chunk read, decompressed and verified), page cache warm. zstd -1, best of 2.\n\n",
               store_dir.c_str(), fs_type.c_str());
  std::fprintf(out, "| chunk | compression threads | durability | write MB/s | read MB/s | chunk files | stored MiB |\n");
  std::fprintf(out, "|---|---|---|---|---|---|---|\n");
  for (const StoreRow& r : store_rows) {
    std::fprintf(out, "| %zu KiB | %u | %s | %.0f | %.0f | %llu | %.1f |\n", r.chunk >> 10, r.threads,
                 r.sync == moss::store::SyncMode::kSyncfs ? "one syncfs" : "fsync each", bytes / r.write_s / 1e6,
                 bytes / r.read_s / 1e6, (unsigned long long)r.files, r.bytes / 1048576.0);
  }
  std::fprintf(out, "\n## Dedup between two spores of one VM\n\n");
  std::fprintf(out, "The second image is the first with pages rewritten with random bytes: scattered, 1%% of the "
                    "pages one at a time (the worst case); clustered, 3%% of the pages in runs of 64 (256 KiB).\n\n");
  std::fprintf(out, "| chunk | changes | non-zero chunks | already stored | new bytes to store (MiB) |\n");
  std::fprintf(out, "|---|---|---|---|---|\n");
  for (size_t chunk : {size_t(64) << 10, size_t(256) << 10, size_t(1) << 20, size_t(2) << 20}) {
    for (auto [name, img] : {std::pair{"scattered 1%", &scattered}, std::pair{"clustered 3%", &clustered}}) {
      Dedup d = dedup(ram, *img, chunk);
      std::fprintf(out, "| %zu KiB | %s | %llu | %.1f%% | %.1f |\n", chunk >> 10, name,
                   static_cast<unsigned long long>(d.chunks2), d.chunks2 ? 100.0 * d.shared / d.chunks2 : 0.0,
                   d.new_bytes / 1048576.0);
    }
  }
  std::fclose(out);
  return 0;
}
