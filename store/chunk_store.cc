#include "store/chunk_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>

#include "base/file.h"
#include "base/syscall.h"

namespace moss::store {
namespace {

// "the chunk store S is full" for ENOSPC/EDQUOT, else "cannot WHAT: strerror".
Error io_error(const ChunkStore& store, const std::string& what, int e) {
  if (e == ENOSPC || e == EDQUOT) {
    return make_error("the chunk store " + store.dir() + " is full (" + errno_text(e) + "); free space or use --store DIR",
                      e);
  }
  return sys_error_code(e, what);
}

Result<void> mkdir_0700(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) == 0 || errno == EEXIST) {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return sys_error("use", path);
    if (!S_ISDIR(st.st_mode)) return make_error(path + " is not a directory");
    return {};
  }
  return sys_error("create", "the directory " + path);
}

Result<void> mkdir_parents_0700(const std::string& path) {
  for (size_t pos = 1; (pos = path.find('/', pos)) != std::string::npos; ++pos) {
    std::string prefix = path.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      return sys_error("create", "the directory " + prefix);
    }
  }
  return mkdir_0700(path);
}

Result<void> fsync_dir(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return sys_error("open", "the directory " + path);
  UniqueFd dir(fd);
  if (::fsync(dir.get()) != 0) return sys_error("sync", "the directory " + path);
  return {};
}

Result<std::vector<std::string>> list_dir(const std::string& path) {
  std::vector<std::string> names;
  DIR* d = ::opendir(path.c_str());
  if (!d) return sys_error("list", path);
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.emplace_back(e->d_name);
  }
  int e = errno;
  ::closedir(d);
  if (e) return sys_error_code(e, "list", path);
  return names;
}

Result<std::vector<uint8_t>> read_whole(const std::string& path, size_t max_bytes, int* err) {
  *err = 0;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    *err = errno;
    return errno_error(path);
  }
  UniqueFd f(fd);
  struct stat st;
  if (::fstat(f.get(), &st) != 0) return errno_error(path);
  if (!S_ISREG(st.st_mode)) return make_error(path + " is not a regular file");
  if (static_cast<uint64_t>(st.st_size) > max_bytes) return make_error(path + " is too large");
  std::vector<uint8_t> out(st.st_size);
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = ::pread(f.get(), out.data() + done, out.size() - done, done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(path);
    if (n == 0) break;
    done += n;
  }
  out.resize(done);
  return out;
}

// Writes a new 0600 file, or fails leaving none.
Result<void> write_new_file(const ChunkStore& store, const std::string& path, std::span<const uint8_t> bytes,
                            bool sync) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return io_error(store, "create " + path, errno);
  UniqueFd f(fd);
  if (auto w = write_all(f.get(), bytes.data(), bytes.size()); !w) {
    ::unlink(path.c_str());
    return io_error(store, "write " + path, w.error().err);
  }
  if (sync && ::fsync(f.get()) != 0) {
    int e = errno;
    ::unlink(path.c_str());
    return io_error(store, "sync " + path, e);
  }
  if (::close(f.release()) != 0) {
    int e = errno;
    ::unlink(path.c_str());
    return io_error(store, "write " + path, e);
  }
  return {};
}

std::atomic<uint64_t> g_temp_seq{0};

std::string temp_name(const std::string& tmpdir, const std::string& stem) {
  return tmpdir + "/" + stem + "." + std::to_string(::getpid()) + "." + std::to_string(g_temp_seq++);
}

}  // namespace

ChunkId ChunkId::of(std::span<const uint8_t> bytes) {
  XXH128_hash_t h = XXH3_128bits(bytes.data(), bytes.size());
  return ChunkId{h.high64, h.low64};
}

std::string ChunkId::hex() const {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(hi),
                static_cast<unsigned long long>(lo));
  return buf;
}

Result<ChunkId> ChunkId::parse(const std::string& hex) {
  if (hex.size() != 32) return make_error("'" + hex + "' is not a chunk id (32 hex digits)");
  ChunkId id;
  for (size_t i = 0; i < 32; ++i) {
    char c = hex[i];
    int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (v < 0) return make_error("'" + hex + "' is not a chunk id (32 hex digits)");
    uint64_t& half = i < 16 ? id.hi : id.lo;
    half = half << 4 | static_cast<uint64_t>(v);
  }
  return id;
}

bool is_all_zero(std::span<const uint8_t> bytes) {
  // Compare in words; the common non-zero chunk fails in its first bytes.
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, bytes.data() + i, 8);
    if (w) return false;
  }
  for (; i < bytes.size(); ++i)
    if (bytes[i]) return false;
  return true;
}

Result<std::string> default_store_dir() {
  const char* xdg = std::getenv("XDG_DATA_HOME");
  if (xdg && xdg[0] == '/') return std::string(xdg) + "/moss/store";
  const char* home = std::getenv("HOME");
  if (home && home[0] == '/') return std::string(home) + "/.local/share/moss/store";
  return make_error("neither XDG_DATA_HOME nor HOME is set, so there is no default chunk store; use --store DIR");
}

Result<ChunkStore> ChunkStore::open(const std::string& dir) {
  if (dir.empty()) return make_error("the chunk store needs a directory");
  std::string abs = dir;
  if (abs[0] != '/') {
    char cwd[4096];
    if (!::getcwd(cwd, sizeof cwd)) return sys_error("find", "the current directory");
    abs = std::string(cwd) + "/" + dir;
  }
  abs = std::filesystem::path(abs).lexically_normal().string();
  while (abs.size() > 1 && abs.back() == '/') abs.pop_back();
  auto made = mkdir_parents_0700(abs);
  if (!made) return make_error("cannot create the chunk store " + abs + ": " + made.error().message, made.error().err);
  for (const char* sub : {"/chunks", "/roots", "/tmp"}) MOSS_TRY_VOID(mkdir_0700(abs + sub));
  int fd = ::open((abs + "/lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return sys_error("create", abs + "/lock");
  ::close(fd);
  return ChunkStore(abs);
}

static Result<StoreLock> lock_store(const std::string& dir, int how) {
  std::string path = dir + "/lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return sys_error("open", path);
  UniqueFd f(fd);
  MOSS_TRY_VOID(MOSS_SYS(::flock(f.get(), how)));
  return StoreLock(std::move(f));
}

Result<StoreLock> ChunkStore::lock_shared() const { return lock_store(dir_, LOCK_SH); }
Result<StoreLock> ChunkStore::lock_exclusive() const { return lock_store(dir_, LOCK_EX); }

std::string ChunkStore::chunk_path(const ChunkId& id) const {
  std::string hex = id.hex();
  return dir_ + "/chunks/" + hex.substr(0, 2) + "/" + hex;
}

bool ChunkStore::has(const ChunkId& id) const { return ::access(chunk_path(id).c_str(), F_OK) == 0; }

Result<std::vector<uint8_t>> ChunkStore::read_compressed(const ChunkId& id, const std::string& owner) const {
  int err;
  auto bytes = read_whole(chunk_path(id), ZSTD_compressBound(64u << 20), &err);
  if (!bytes) {
    if (err == ENOENT) return make_error("chunk " + id.hex() + " of " + owner + " is missing from the store " + dir_);
    return make_error("cannot read chunk " + id.hex() + " of " + owner + ": " + bytes.error().message, err);
  }
  return bytes;
}

// Decompresses a chunk's frame and checks its size and hash.
Result<std::vector<uint8_t>> decompress_chunk(const ChunkId& id, size_t size, std::span<const uint8_t> frame,
                                              const std::string& owner) {
  auto corrupt = [&](const std::string& why) {
    return make_error("chunk " + id.hex() + " of " + owner + " is corrupt: " + why);
  };
  unsigned long long content = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (content == ZSTD_CONTENTSIZE_ERROR || content == ZSTD_CONTENTSIZE_UNKNOWN) return corrupt("it is not a zstd frame");
  if (content != size) return corrupt("it holds " + std::to_string(content) + " bytes, not " + std::to_string(size));
  std::vector<uint8_t> out(size);
  size_t n = ZSTD_decompress(out.data(), out.size(), frame.data(), frame.size());
  if (ZSTD_isError(n)) return corrupt(std::string("it does not decompress (") + ZSTD_getErrorName(n) + ")");
  if (n != size) return corrupt("it holds " + std::to_string(n) + " bytes, not " + std::to_string(size));
  if (!(ChunkId::of(out) == id)) return corrupt("its bytes do not match its hash");
  return out;
}

Result<std::vector<uint8_t>> ChunkStore::read(const ChunkId& id, size_t size, const std::string& owner) const {
  MOSS_TRY(auto frame, read_compressed(id, owner));
  return decompress_chunk(id, size, frame, owner);
}

static std::string root_path(const std::string& dir, const std::string& spore_path) {
  std::span<const uint8_t> bytes(reinterpret_cast<const uint8_t*>(spore_path.data()), spore_path.size());
  return dir + "/roots/" + ChunkId::of(bytes).hex();
}

Result<void> ChunkStore::add_root(const std::string& spore_path, const ChunkId& manifest_id) {
  std::string text = spore_path + "\n" + manifest_id.hex() + "\n";
  std::string tmp = temp_name(dir_ + "/tmp", "root");
  MOSS_TRY_VOID(write_new_file(*this, tmp, {reinterpret_cast<const uint8_t*>(text.data()), text.size()}, true));
  if (::rename(tmp.c_str(), root_path(dir_, spore_path).c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return io_error(*this, "record the spore " + spore_path + " in " + dir_ + "/roots", e);
  }
  return fsync_dir(dir_ + "/roots");
}

Result<void> ChunkStore::remove_root(const std::string& spore_path) {
  if (::unlink(root_path(dir_, spore_path).c_str()) != 0 && errno != ENOENT) {
    return sys_error("remove", "the root of " + spore_path);
  }
  return fsync_dir(dir_ + "/roots");
}

Result<GcStats> ChunkStore::gc(const ManifestChunks& chunks_of_manifest) {
  MOSS_TRY(StoreLock lock, lock_exclusive());
  GcStats stats;
  // A root is dropped only when its spore is gone or its manifest changed. Anything else that
  // keeps gc from knowing a spore's chunks (an unreadable root or manifest, a manifest this
  // moss cannot decode, e.g. a newer version) stops it before it deletes anything.
  std::set<ChunkId> live;
  std::vector<std::string> drop;
  MOSS_TRY(auto roots, list_dir(dir_ + "/roots"));
  for (const auto& name : roots) {
    std::string path = dir_ + "/roots/" + name;
    auto stop = [&](const std::string& why) {
      return make_error("gc deleted nothing: " + why + "; fix or remove " + path);
    };
    int err;
    auto text = read_whole(path, 1 << 16, &err);
    if (!text) return stop("cannot read the root " + text.error().message);
    std::string s(text->begin(), text->end());
    size_t nl = s.find('\n');
    if (nl == std::string::npos || nl == 0 || s.size() != nl + 34 || s.back() != '\n') {
      return stop("the root " + path + " is malformed");
    }
    std::string spore = s.substr(0, nl);
    auto want = ChunkId::parse(s.substr(nl + 1, 32));
    if (!want) return stop("the root " + path + " is malformed");
    auto manifest = read_whole(spore + "/manifest", 1ull << 30, &err);
    if (!manifest && (err == ENOENT || err == ENOTDIR)) {
      drop.push_back(path);  // The spore is gone.
      continue;
    }
    if (!manifest) return stop("cannot read the spore " + spore + " (" + manifest.error().message + ")");
    if (!(ChunkId::of(*manifest) == *want)) {
      drop.push_back(path);  // Replaced or changed: not the spore this root kept.
      continue;
    }
    auto chunks = chunks_of_manifest(*manifest);
    if (!chunks) return stop("cannot read the spore " + spore + " (" + chunks.error().message + ")");
    live.insert(chunks->begin(), chunks->end());
    ++stats.roots_kept;
  }
  for (const auto& path : drop) {
    if (::unlink(path.c_str()) == 0) ++stats.roots_dropped;
  }
  // With the exclusive lock no writer is running: everything in tmp/ was left by one that died.
  MOSS_TRY(auto temps, list_dir(dir_ + "/tmp"));
  for (const auto& name : temps) {
    if (::unlink((dir_ + "/tmp/" + name).c_str()) == 0) ++stats.temp_files_deleted;
  }
  MOSS_TRY(auto shards, list_dir(dir_ + "/chunks"));
  for (const auto& shard : shards) {
    std::string sdir = dir_ + "/chunks/" + shard;
    bool deleted = false;
    MOSS_TRY(auto names, list_dir(sdir));
    for (const auto& name : names) {
      auto id = ChunkId::parse(name);
      if (id && live.count(*id)) {
        ++stats.chunks_kept;
        continue;
      }
      std::string path = sdir + "/" + name;
      struct stat st;
      uint64_t size = ::lstat(path.c_str(), &st) == 0 ? st.st_size : 0;
      if (::unlink(path.c_str()) == 0) {
        ++stats.chunks_deleted;
        stats.bytes_freed += size;
        deleted = true;
      }
    }
    if (deleted) MOSS_TRY_VOID(fsync_dir(sdir));
  }
  MOSS_TRY_VOID(fsync_dir(dir_ + "/roots"));
  return stats;
}

struct ChunkBatch::State {
  struct Pending {
    std::string tmp, final_path;
  };
  std::mutex mu;
  std::vector<Pending> pending;
  std::set<ChunkId> in_batch;
  uint64_t chunks = 0, bytes = 0;
  bool committed = false;
};

ChunkBatch::ChunkBatch(ChunkStore& store, int zstd_level, SyncMode sync)
    : store_(store), level_(zstd_level), sync_(sync), s_(std::make_unique<State>()) {}

ChunkBatch::~ChunkBatch() {
  if (s_->committed) return;
  for (const auto& p : s_->pending) ::unlink(p.tmp.c_str());
}

uint64_t ChunkBatch::chunks_written() const { return s_->chunks; }
uint64_t ChunkBatch::bytes_written() const { return s_->bytes; }

Result<std::vector<ChunkRef>> ChunkBatch::add(std::span<const uint8_t> bytes, uint32_t chunk_bytes,
                                              unsigned threads) {
  MOSS_ASSERT(chunk_bytes > 0 && !s_->committed);
  size_t n = (bytes.size() + chunk_bytes - 1) / chunk_bytes;
  std::vector<ChunkRef> refs(n);
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  Error first_error;
  const std::string tmpdir = store_.dir() + "/tmp";
  auto work = [&] {
    ZSTD_CCtx* cctx = ZSTD_createCCtx();
    MOSS_ASSERT(cctx);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level_);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1);
    std::vector<uint8_t> out(ZSTD_compressBound(chunk_bytes));
    for (size_t i; !failed && (i = next.fetch_add(1)) < n;) {
      auto chunk = bytes.subspan(i * chunk_bytes, std::min<size_t>(chunk_bytes, bytes.size() - i * chunk_bytes));
      if (is_all_zero(chunk)) {
        refs[i].zero = true;
        continue;
      }
      ChunkId id = ChunkId::of(chunk);
      refs[i].id = id;
      {
        std::lock_guard<std::mutex> g(s_->mu);
        if (!s_->in_batch.insert(id).second) continue;
      }
      if (store_.has(id)) continue;
      size_t c = ZSTD_compress2(cctx, out.data(), out.size(), chunk.data(), chunk.size());
      MOSS_ASSERT(!ZSTD_isError(c));  // The output buffer is compressBound: only our bug fails.
      std::string tmp = temp_name(tmpdir, id.hex());
      auto w = write_new_file(store_, tmp, {out.data(), c}, sync_ == SyncMode::kFsyncEach);
      std::lock_guard<std::mutex> g(s_->mu);
      if (!w) {
        if (!failed.exchange(true)) first_error = std::move(w).take_error();
        break;
      }
      s_->pending.push_back({tmp, store_.chunk_path(id)});
      ++s_->chunks;
      s_->bytes += c;
    }
    ZSTD_freeCCtx(cctx);
  };
  std::vector<std::thread> helpers;
  for (unsigned t = 1; t < threads && t < n; ++t) helpers.emplace_back(work);
  work();
  for (auto& t : helpers) t.join();
  if (failed) return first_error;
  return refs;
}

Result<void> ChunkBatch::add_compressed(const ChunkId& id, size_t size, std::span<const uint8_t> compressed,
                                        const std::string& owner) {
  MOSS_ASSERT(!s_->committed);
  MOSS_TRY_VOID(decompress_chunk(id, size, compressed, owner));
  if (!s_->in_batch.insert(id).second || store_.has(id)) return {};
  std::string tmp = temp_name(store_.dir() + "/tmp", id.hex());
  MOSS_TRY_VOID(write_new_file(store_, tmp, compressed, sync_ == SyncMode::kFsyncEach));
  s_->pending.push_back({tmp, store_.chunk_path(id)});
  ++s_->chunks;
  s_->bytes += compressed.size();
  return {};
}

Result<void> ChunkBatch::commit() {
  MOSS_ASSERT(!s_->committed);
  if (!s_->pending.empty() && sync_ == SyncMode::kSyncfs) {
    // One syncfs for the whole batch instead of an fsync per chunk.
    int fd = ::open((store_.dir() + "/tmp").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return io_error(store_, "open " + store_.dir() + "/tmp", errno);
    UniqueFd tmpdir(fd);
    if (::syncfs(tmpdir.get()) != 0) return io_error(store_, "sync the chunk store " + store_.dir(), errno);
  }
  std::set<std::string> shards;
  bool new_shard = false;
  for (size_t i = 0; i < s_->pending.size(); ++i) {
    const auto& p = s_->pending[i];
    std::string shard = p.final_path.substr(0, p.final_path.rfind('/'));
    if (shards.insert(shard).second) {
      if (::mkdir(shard.c_str(), 0700) == 0) new_shard = true;
      else if (errno != EEXIST) return io_error(store_, "create " + shard, errno);
    }
    if (::rename(p.tmp.c_str(), p.final_path.c_str()) != 0) return io_error(store_, "rename " + p.tmp, errno);
    // Renamed: no longer ours to remove if a later step fails (gc collects it if unreferenced).
    s_->pending[i].tmp.clear();
  }
  if (sync_ == SyncMode::kSyncfs) {
    // The renames (and new shard directories) durable with a second syncfs: two journal
    // commits per batch, where an fsync of each touched shard costs one each (up to 256).
    int fd = ::open((store_.dir() + "/chunks").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return io_error(store_, "open " + store_.dir() + "/chunks", errno);
    UniqueFd chunks(fd);
    if (::syncfs(chunks.get()) != 0) return io_error(store_, "sync the chunk store " + store_.dir(), errno);
  } else {
    for (const auto& shard : shards) MOSS_TRY_VOID(fsync_dir(shard));
    if (new_shard) MOSS_TRY_VOID(fsync_dir(store_.dir() + "/chunks"));
  }
  s_->committed = true;
  return {};
}

}  // namespace moss::store
