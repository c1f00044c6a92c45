#include "store/pack.h"

#include <capnp/compat/json.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "base/file.h"
#include "store/spore.h"

namespace moss::store {
namespace {

constexpr uint32_t kManifestRecord = 1, kChunkRecord = 2, kEndRecord = 3;
constexpr size_t kHeaderBytes = 16, kRecordHeaderBytes = 32;

uint32_t le32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
uint64_t le64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
// resize + memcpy rather than vector::insert, which trips GCC 12's -O3 -Wstringop-overflow.
void put32(std::vector<uint8_t>& out, uint32_t v) {
  out.resize(out.size() + 4);
  std::memcpy(out.data() + out.size() - 4, &v, 4);
}
void put64(std::vector<uint8_t>& out, uint64_t v) {
  out.resize(out.size() + 8);
  std::memcpy(out.data() + out.size() - 8, &v, 8);
}

std::vector<uint8_t> record_header(uint32_t type, std::span<const uint8_t> payload_head,
                                   std::span<const uint8_t> payload_tail) {
  // The hash covers head + tail (a chunk record's fixed fields, then its frame).
  XXH3_state_t* st = XXH3_createState();
  MOSS_ASSERT(st);
  XXH3_128bits_reset(st);
  XXH3_128bits_update(st, payload_head.data(), payload_head.size());
  XXH3_128bits_update(st, payload_tail.data(), payload_tail.size());
  XXH128_hash_t h = XXH3_128bits_digest(st);
  XXH3_freeState(st);
  std::vector<uint8_t> out;
  put32(out, type);
  put32(out, 0);
  put64(out, payload_head.size() + payload_tail.size());
  put64(out, h.high64);
  put64(out, h.low64);
  return out;
}

class Mapped {
 public:
  ~Mapped() {
    if (addr_ && addr_ != MAP_FAILED) ::munmap(addr_, len_);
  }
  Result<std::span<const uint8_t>> map(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sys_error("read", "the pack " + path);
    UniqueFd f(fd);
    struct stat st;
    if (::fstat(f.get(), &st) != 0) return sys_error("read", "the pack " + path);
    if (!S_ISREG(st.st_mode)) return make_error("the pack " + path + " is not a regular file");
    len_ = st.st_size;
    if (len_ == 0) return make_error("the pack " + path + " is empty");
    addr_ = ::mmap(nullptr, len_, PROT_READ, MAP_PRIVATE, f.get(), 0);
    if (addr_ == MAP_FAILED) return sys_error("read", "the pack " + path);
    return std::span<const uint8_t>(static_cast<const uint8_t*>(addr_), len_);
  }

 private:
  void* addr_ = nullptr;
  size_t len_ = 0;
};

// Data as hex strings in inspect's JSON, instead of arrays of numbers. (capnp's Handler has a
// non-virtual destructor; HexData is never deleted through it.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnon-virtual-dtor"
class HexData final : public capnp::JsonCodec::Handler<capnp::Data> {
 public:
  void encode(const capnp::JsonCodec&, capnp::Data::Reader input, capnp::JsonValue::Builder output) const override {
    static const char digits[] = "0123456789abcdef";
    std::string s;
    s.reserve(input.size() * 2);
    for (uint8_t b : input) {
      s += digits[b >> 4];
      s += digits[b & 15];
    }
    output.setString(s);
  }
  capnp::Orphan<capnp::Data> decode(const capnp::JsonCodec&, capnp::JsonValue::Reader,
                                    capnp::Orphanage) const override {
    KJ_UNIMPLEMENTED("inspect only encodes");
  }
};
#pragma GCC diagnostic pop

}  // namespace

Result<PackContents> decode_pack(std::span<const uint8_t> bytes) {
  if (bytes.size() < kHeaderBytes || std::memcmp(bytes.data(), kPackMagic, 8) != 0) {
    return make_error("it is not a moss pack (no MOSSPACK header)");
  }
  uint32_t version = le32(bytes.data() + 8);
  if (version != kPackVersion) {
    return make_error("it is a moss pack of version " + std::to_string(version) + ", which this moss does not know (it reads version " +
                      std::to_string(kPackVersion) + ")");
  }
  if (le32(bytes.data() + 12) != 0) return make_error("it is a malformed pack (reserved header bits set)");
  PackContents out;
  bool have_manifest = false, ended = false;
  size_t at = kHeaderBytes;
  std::map<ChunkId, uint64_t> wanted;  // From the manifest: id -> size.
  std::set<ChunkId> seen;
  while (at < bytes.size()) {
    if (ended) return make_error("it is a malformed pack (bytes after its end record)");
    if (bytes.size() - at < kRecordHeaderBytes) return make_error("it is truncated (in a record header at byte " + std::to_string(at) + ")");
    const uint8_t* h = bytes.data() + at;
    uint32_t type = le32(h);
    uint64_t len = le64(h + 8);
    if (le32(h + 4) != 0) return make_error("it is a malformed pack (reserved record bits set at byte " + std::to_string(at) + ")");
    at += kRecordHeaderBytes;
    if (len > bytes.size() - at) return make_error("it is truncated (a record at byte " + std::to_string(at - kRecordHeaderBytes) + " runs past its end)");
    auto payload = bytes.subspan(at, len);
    XXH128_hash_t hash = XXH3_128bits(payload.data(), payload.size());
    if (hash.high64 != le64(h + 16) || hash.low64 != le64(h + 24)) {
      return make_error("it is corrupt (the record at byte " + std::to_string(at - kRecordHeaderBytes) + " does not match its hash)");
    }
    at += len;
    switch (type) {
      case kManifestRecord: {
        if (have_manifest) return make_error("it is a malformed pack (a second manifest)");
        have_manifest = true;
        auto m = decode_manifest(payload);
        if (!m) return make_error("its " + m.error().message);
        out.manifest_bytes = payload;
        out.manifest = std::move(m).value();
        for (const auto& r : out.manifest->ranges()) {
          for (size_t i = 0; i < r.chunks.size(); ++i) {
            if (!r.chunks[i].zero) wanted.emplace(r.chunks[i].id, out.manifest->chunk_size(r, i));
          }
        }
        break;
      }
      case kChunkRecord: {
        if (!have_manifest) return make_error("it is a malformed pack (a chunk before the manifest)");
        if (len < 24) return make_error("it is a malformed pack (a chunk record of " + std::to_string(len) + " bytes)");
        PackChunk c{ChunkId{le64(payload.data()), le64(payload.data() + 8)}, le64(payload.data() + 16), payload.subspan(24)};
        auto w = wanted.find(c.id);
        if (w == wanted.end()) return make_error("it is a malformed pack (chunk " + c.id.hex() + " is not in its manifest)");
        if (w->second != c.size) return make_error("it is a malformed pack (chunk " + c.id.hex() + " has the wrong size)");
        if (!seen.insert(c.id).second) return make_error("it is a malformed pack (chunk " + c.id.hex() + " appears twice)");
        out.chunks.push_back(c);
        break;
      }
      case kEndRecord: {
        if (!have_manifest) return make_error("it is a malformed pack (it ends before its manifest)");
        if (len != 8 || le64(payload.data()) != out.chunks.size()) {
          return make_error("it is a malformed pack (its end record does not count its chunks)");
        }
        ended = true;
        break;
      }
      default:
        return make_error("it is a malformed pack (a record of unknown type " + std::to_string(type) + ")");
    }
  }
  if (!ended) return make_error("it is truncated (it has no end record)");
  if (seen.size() != wanted.size()) {
    for (const auto& [id, size] : wanted) {
      if (!seen.count(id)) return make_error("it is incomplete (chunk " + id.hex() + " of its manifest is missing)");
    }
  }
  return out;
}

Result<void> pack_spore(const ChunkStore& store, const std::string& spore_path, const std::string& out_file,
                        const Progress& progress) {
  MOSS_TRY(Spore spore, read_spore(spore_path));
  std::map<ChunkId, uint64_t> sizes;
  for (const auto& r : spore.manifest->ranges()) {
    for (size_t i = 0; i < r.chunks.size(); ++i)
      if (!r.chunks[i].zero) sizes.emplace(r.chunks[i].id, spore.manifest->chunk_size(r, i));
  }
  uint64_t total = kHeaderBytes + kRecordHeaderBytes + spore.bytes.size() + kRecordHeaderBytes + 8;
  for (const auto& [id, size] : sizes) {
    struct stat st;
    if (::stat(store.chunk_path(id).c_str(), &st) != 0) {
      return make_error("chunk " + id.hex() + " of " + spore.path + " is missing from the store " + store.dir());
    }
    total += kRecordHeaderBytes + 24 + st.st_size;
  }
  MOSS_TRY(std::string out_path, absolute_path(out_file));
  std::string tmp = out_path + ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return sys_error("write", "the pack " + out_path);
  UniqueFd f(fd);
  uint64_t done = 0;
  auto put = [&](std::span<const uint8_t> b) -> Result<void> {
    if (auto w = write_all(f.get(), b.data(), b.size()); !w) {
      int e = w.error().err;
      ::unlink(tmp.c_str());
      if (e == ENOSPC || e == EDQUOT) return make_error("cannot write the pack " + out_path + ": the disk is full", e);
      return sys_error_code(e, "write", "the pack " + out_path);
    }
    done += b.size();
    return {};
  };
  auto fail = [&](Error e) {
    ::unlink(tmp.c_str());
    return e;
  };
  std::vector<uint8_t> header(kPackMagic, kPackMagic + 8);
  put32(header, kPackVersion);
  put32(header, 0);
  MOSS_TRY_VOID(put(header));
  MOSS_TRY_VOID(put(record_header(kManifestRecord, spore.bytes, {})));
  MOSS_TRY_VOID(put(spore.bytes));
  for (const auto& [id, size] : sizes) {
    auto frame = store.read_compressed(id, spore.path);
    if (!frame) return fail(std::move(frame).take_error());
    auto ok = decompress_chunk(id, size, *frame, spore.path);
    if (!ok) return fail(std::move(ok).take_error());
    std::vector<uint8_t> fixed;
    put64(fixed, id.hi);
    put64(fixed, id.lo);
    put64(fixed, size);
    MOSS_TRY_VOID(put(record_header(kChunkRecord, fixed, *frame)));
    MOSS_TRY_VOID(put(fixed));
    MOSS_TRY_VOID(put(*frame));
    if (progress) progress(done, total);
  }
  std::vector<uint8_t> end;
  put64(end, sizes.size());
  MOSS_TRY_VOID(put(record_header(kEndRecord, end, {})));
  MOSS_TRY_VOID(put(end));
  if (::fsync(f.get()) != 0 || ::close(f.release()) != 0) {
    return fail(sys_error("write", "the pack " + out_path));
  }
  if (::rename(tmp.c_str(), out_path.c_str()) != 0) {
    return fail(sys_error("write", "the pack " + out_path));
  }
  std::string parent = out_path.substr(0, out_path.rfind('/'));
  int pfd = ::open(parent.empty() ? "/" : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (pfd >= 0) {
    ::fsync(pfd);
    ::close(pfd);
  }
  if (progress) progress(total, total);
  return {};
}

Result<void> unpack_spore(ChunkStore& store, const std::string& pack_file, const std::string& spore_path,
                          const Progress& progress) {
  Mapped mapped;
  MOSS_TRY(auto bytes, mapped.map(pack_file));
  auto contents = decode_pack(bytes);
  if (!contents) return make_error("cannot unpack " + pack_file + ": " + contents.error().message);
  MOSS_TRY(std::string path, absolute_path(spore_path));
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) return make_error("the spore " + path + " already exists; remove it or choose another path");
  MOSS_TRY(StoreLock lock, store.lock_shared());
  ChunkBatch batch(store);
  uint64_t done = 0;
  for (const auto& c : contents->chunks) {
    MOSS_TRY_VOID(batch.add_compressed(c.id, c.size, c.frame, "the pack " + pack_file));
    done += c.frame.size() + kRecordHeaderBytes + 24;
    if (progress) progress(done, bytes.size());
  }
  MOSS_TRY_VOID(batch.commit());
  MOSS_TRY_VOID(write_spore_manifest(store, path, contents->manifest_bytes));
  if (progress) progress(bytes.size(), bytes.size());
  return {};
}

std::string manifest_json(const Manifest& manifest) {
  capnp::JsonCodec codec;
  codec.setPrettyPrint(true);
  HexData hex;
  codec.addTypeHandler(hex);
  kj::String s = codec.encode(manifest.root());
  return std::string(s.cStr()) + "\n";
}

}  // namespace moss::store
