#include "store/spore.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "base/file.h"
#include "base/syscall.h"

namespace moss::store {
namespace {

Error write_error(const std::string& what, int e) {
  if (e == ENOSPC || e == EDQUOT) return make_error("cannot write " + what + ": the disk is full (" + errno_text(e) + ")", e);
  return sys_error_code(e, "write", what);
}

// The manifest into a temp directory beside `path`, then the directory renamed to `path`.
Result<void> publish_manifest(const std::string& path, std::span<const uint8_t> bytes) {
  std::filesystem::path p(path);
  std::string parent = p.parent_path().string(), name = p.filename().string();
  std::string tmpdir = parent;
  tmpdir.append("/.").append(name).append(".tmp-").append(std::to_string(::getpid()));
  std::filesystem::remove_all(tmpdir);  // A previous attempt by a process with our pid.
  if (::mkdir(tmpdir.c_str(), 0700) != 0) return write_error("the spore " + path, errno);
  auto cleanup = [&] {
    std::error_code ec;
    std::filesystem::remove_all(tmpdir, ec);
  };
  std::string tmpfile = tmpdir + "/manifest";
  int fd = ::open(tmpfile.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    int e = errno;
    cleanup();
    return write_error("the spore " + path, e);
  }
  UniqueFd f(fd);
  if (auto w = write_all(f.get(), bytes.data(), bytes.size()); !w) {
    cleanup();
    return write_error("the spore " + path, w.error().err);
  }
  if (::fsync(f.get()) != 0 || ::close(f.release()) != 0) {
    int e = errno;
    cleanup();
    return write_error("the spore " + path, e);
  }
  int dfd = ::open(tmpdir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  if (::rename(tmpdir.c_str(), path.c_str()) != 0) {
    int e = errno;
    cleanup();
    if (e == EEXIST || e == ENOTEMPTY) return make_error("the spore " + path + " already exists; remove it or choose another path");
    return write_error("the spore " + path, e);
  }
  int pfd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (pfd < 0) return sys_error("sync", parent);
  UniqueFd parent_fd(pfd);
  if (::fsync(parent_fd.get()) != 0) return sys_error("sync", parent);
  return {};
}

Result<void> check_absent(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) return make_error("the spore " + path + " already exists; remove it or choose another path");
  if (errno != ENOENT) return sys_error("use", path);
  std::string parent = path.substr(0, path.rfind('/'));
  if (!parent.empty() && ::stat(parent.c_str(), &st) != 0) {
    return make_error("cannot write the spore " + path + ": its directory " + parent + " does not exist");
  }
  return {};
}

// Root first, then the manifest: a spore never exists without the root that keeps its chunks.
Result<ChunkId> publish(ChunkStore& store, const std::string& path, std::span<const uint8_t> bytes,
                        const WriteOptions& options) {
  ChunkId id = ChunkId::of(bytes);
  MOSS_TRY_VOID(store.add_root(path, id));
  if (options.after_step) options.after_step("root");
  auto published = publish_manifest(path, bytes);
  if (!published) {
    (void)store.remove_root(path);
    return std::move(published).take_error();
  }
  return id;
}

}  // namespace

Result<std::string> absolute_path(const std::string& path) {
  if (path.empty()) return make_error("the spore path is empty");
  std::error_code ec;
  auto abs = std::filesystem::absolute(path, ec);
  if (ec) return sys_error_code(ec.value(), "resolve", path);
  std::string s = abs.lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  if (s == "/") return make_error("the spore path cannot be /");
  return s;
}

Result<SporeWritten> write_spore(ChunkStore& store, const std::string& path_in, capnp::MessageBuilder& message,
                                 std::span<const RamRegion> ram, const WriteOptions& options) {
  MOSS_TRY(std::string path, absolute_path(path_in));
  MOSS_TRY_VOID(check_absent(path));
  MOSS_TRY(StoreLock lock, store.lock_shared());
  ChunkBatch batch(store, options.zstd_level, options.sync);
  auto root = message.getRoot<spore::Manifest>();
  root.setFormatVersion(spore::SPORE_FORMAT_VERSION);
  auto memory = root.initMemory();
  memory.setChunkBytes(options.chunk_bytes);
  auto ranges = memory.initRanges(static_cast<unsigned>(ram.size()));
  SporeWritten out;
  for (size_t i = 0; i < ram.size(); ++i) {
    MOSS_TRY(auto refs, batch.add(ram[i].bytes, options.chunk_bytes, options.threads));
    auto r = ranges[i];
    r.setGuestAddr(ram[i].guest_addr);
    r.setBytes(ram[i].bytes.size());
    auto chunks = r.initChunks(static_cast<unsigned>(refs.size()));
    for (size_t j = 0; j < refs.size(); ++j) {
      chunks[j].setZero(refs[j].zero);
      chunks[j].setHi(refs[j].id.hi);
      chunks[j].setLo(refs[j].id.lo);
      ++out.chunks;
      out.zero_chunks += refs[j].zero;
    }
  }
  std::vector<uint8_t> bytes = encode_message(message);
  auto check = decode_manifest(bytes);
  if (!check) return make_error("cannot write the spore " + path + ": " + check.error().message);
  MOSS_TRY_VOID(batch.commit());
  out.new_chunks = batch.chunks_written();
  out.new_bytes = batch.bytes_written();
  if (options.after_step) options.after_step("chunks");
  MOSS_TRY(out.manifest_id, publish(store, path, bytes, options));
  return out;
}

Result<SporeWritten> write_spore_manifest(ChunkStore& store, const std::string& path_in,
                                          std::span<const uint8_t> manifest_bytes) {
  MOSS_TRY(std::string path, absolute_path(path_in));
  MOSS_TRY_VOID(check_absent(path));
  MOSS_TRY(auto manifest, decode_manifest(manifest_bytes));
  SporeWritten out;
  for (const auto& r : manifest->ranges()) {
    for (const auto& c : r.chunks) {
      ++out.chunks;
      out.zero_chunks += c.zero;
      if (!c.zero && !store.has(c.id)) {
        return make_error("chunk " + c.id.hex() + " of " + path + " is missing from the store " + store.dir());
      }
    }
  }
  MOSS_TRY(out.manifest_id, publish(store, path, manifest_bytes, {}));
  return out;
}

Result<Spore> read_spore(const std::string& path_in) {
  MOSS_TRY(std::string path, absolute_path(path_in));
  Spore s;
  s.path = path;
  std::string file = path + "/manifest";
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    struct stat st;
    if (e == ENOENT && ::stat(path.c_str(), &st) != 0) return make_error("there is no spore at " + path, e);
    if (e == ENOENT || e == ENOTDIR) return make_error(path + " is not a spore (it has no manifest)", e);
    return sys_error_code(e, "read", "the spore " + path);
  }
  UniqueFd f(fd);
  struct stat st;
  if (::fstat(f.get(), &st) != 0) return sys_error("read", "the spore " + path);
  if (!S_ISREG(st.st_mode)) return make_error(path + " is not a spore (its manifest is not a file)");
  if (static_cast<uint64_t>(st.st_size) > kMaxManifestBytes) {
    return make_error("the spore " + path + " is corrupt: its manifest is larger than any spore's");
  }
  s.bytes.resize(st.st_size);
  size_t done = 0;
  while (done < s.bytes.size()) {
    ssize_t n = ::pread(f.get(), s.bytes.data() + done, s.bytes.size() - done, done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error("read", "the spore " + path);
    if (n == 0) break;
    done += n;
  }
  s.bytes.resize(done);
  auto m = decode_manifest(s.bytes);
  if (!m) return make_error("the spore " + path + " cannot be used: " + m.error().message);
  s.manifest = std::move(m).value();
  return s;
}

Result<void> load_ram(const ChunkStore& store, const Spore& spore, std::span<const RamRegionMut> ram, bool ram_is_zero) {
  const Manifest& m = *spore.manifest;
  for (const auto& range : m.ranges()) {
    const RamRegionMut* dest = nullptr;
    for (const auto& r : ram) {
      if (range.guest_addr >= r.guest_addr && range.guest_addr + range.bytes <= r.guest_addr + r.bytes.size()) {
        dest = &r;
      }
    }
    if (!dest) {
      return make_error("the spore " + spore.path + "'s memory at " + std::to_string(range.guest_addr) +
                        " is outside the guest RAM given to restore it");
    }
    uint8_t* base = dest->bytes.data() + (range.guest_addr - dest->guest_addr);
    for (size_t i = 0; i < range.chunks.size(); ++i) {
      size_t n = m.chunk_size(range, i);
      uint8_t* at = base + uint64_t{m.chunk_bytes()} * i;
      if (range.chunks[i].zero) {
        if (!ram_is_zero) std::memset(at, 0, n);
        continue;
      }
      MOSS_TRY(auto bytes, store.read(range.chunks[i].id, n, spore.path));
      std::memcpy(at, bytes.data(), n);
    }
  }
  return {};
}

Result<std::vector<ChunkId>> chunks_of_manifest(std::span<const uint8_t> manifest_bytes) {
  MOSS_TRY(auto m, decode_manifest(manifest_bytes));
  return m->stored_chunks();
}

}  // namespace moss::store
