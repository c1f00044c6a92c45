#include "store/pack.h"

#include <gtest/gtest.h>

#include <xxhash.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "store/spore.h"
#include "store/test_support.h"

namespace moss::store {
namespace {

namespace fs = std::filesystem;

std::vector<uint8_t> slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}
void spit(const fs::path& p, const std::vector<uint8_t>& b) {
  std::ofstream(p, std::ios::binary | std::ios::trunc).write((const char*)b.data(), b.size());
}

class PackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("moss-pack-" + std::to_string(getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    a_ = std::make_unique<ChunkStore>(ChunkStore::open((dir_ / "store-a").string()).value());
    b_ = std::make_unique<ChunkStore>(ChunkStore::open((dir_ / "store-b").string()).value());
    // Small, so that the seed corpus stays small: 64 KiB in 4 KiB chunks, most of them zero.
    ram_.assign(64 << 10, 0);
    for (size_t page : {1, 2, 5, 9})
      for (size_t i = 0; i < 4096; ++i) ram_[page * 4096 + i] = "moss pack seed "[(i + page) % 15];
    capnp::MallocMessageBuilder message;
    testing::fill_manifest(message.initRoot<spore::Manifest>(), ram_.size());
    RamRegion region{0, ram_};
    WriteOptions o;
    o.chunk_bytes = 4096;
    ASSERT_TRUE(write_spore(*a_, (dir_ / "a.spore").string(), message, {&region, 1}, o).ok());
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::vector<uint8_t> pack_bytes() {
    auto r = pack_spore(*a_, (dir_ / "a.spore").string(), (dir_ / "a.mossp").string());
    EXPECT_TRUE(r.ok()) << r.error().message;
    return slurp(dir_ / "a.mossp");
  }
  fs::path dir_;
  std::unique_ptr<ChunkStore> a_, b_;
  std::vector<uint8_t> ram_;
};

TEST_F(PackTest, PackThenUnpackIntoAnotherStoreGivesTheSameSpore) {
  uint64_t last_done = 0, last_total = 0, calls = 0;
  auto r = pack_spore(*a_, (dir_ / "a.spore").string(), (dir_ / "a.mossp").string(), [&](uint64_t d, uint64_t t) {
    EXPECT_GE(d, last_done);
    last_done = d;
    last_total = t;
    ++calls;
  });
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(last_done, last_total);
  EXPECT_EQ(last_total, fs::file_size(dir_ / "a.mossp"));
  EXPECT_EQ(calls, 5u);  // One per chunk (4 distinct non-zero ones), and the end.
  EXPECT_EQ(fs::status(dir_ / "a.mossp").permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
  auto u = unpack_spore(*b_, (dir_ / "a.mossp").string(), (dir_ / "b.spore").string());
  ASSERT_TRUE(u.ok()) << u.error().message;
  auto s = read_spore((dir_ / "b.spore").string());
  ASSERT_TRUE(s.ok()) << s.error().message;
  std::vector<uint8_t> out(ram_.size(), 1);
  RamRegionMut region{0, out};
  ASSERT_TRUE(load_ram(*b_, *s, {&region, 1}).ok());
  EXPECT_EQ(out, ram_);
  EXPECT_EQ(slurp(dir_ / "b.spore" / "manifest"), slurp(dir_ / "a.spore" / "manifest"));
}

TEST_F(PackTest, EveryTruncationOfAPackIsRefusedAndLeavesNoSpore) {
  auto good = pack_bytes();
  for (size_t n : {size_t{0}, size_t{7}, size_t{16}, size_t{40}, good.size() / 3, good.size() / 2, good.size() - 41,
                   good.size() - 1}) {
    spit(dir_ / "cut.mossp", {good.begin(), good.begin() + n});
    auto r = unpack_spore(*b_, (dir_ / "cut.mossp").string(), (dir_ / "b.spore").string());
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.error().message.rfind("cannot unpack " + (dir_ / "cut.mossp").string() + ": ", 0) == 0 ||
                  r.error().message.find("is empty") != std::string::npos,
              true)
        << r.error().message;
    EXPECT_FALSE(fs::exists(dir_ / "b.spore")) << n;
  }
  for (size_t n = 0; n < good.size(); n += 97) EXPECT_FALSE(decode_pack({good.data(), n}).ok()) << n;
}

TEST_F(PackTest, AFlippedByteAnywhereIsRefused) {
  auto good = pack_bytes();
  for (size_t at = 0; at < good.size(); at += good.size() / 50 + 1) {
    auto bad = good;
    bad[at] ^= 0x40;
    EXPECT_FALSE(decode_pack(bad).ok()) << at;
  }
}

struct Malformed {
  const char* name;
  std::vector<uint8_t> bytes;
  const char* reason;
};

// Record offsets of a good pack: header 16 bytes, then the manifest record.
std::vector<Malformed> malformed_cases(const std::vector<uint8_t>& good) {
  std::vector<Malformed> cases;
  auto edit = [&](const char* name, auto f, const char* reason) {
    auto b = good;
    f(b);
    cases.push_back({name, b, reason});
  };
  cases.push_back({"truncated_header", {good.begin(), good.begin() + 10}, "not a moss pack"});
  cases.push_back({"header_only", {good.begin(), good.begin() + 16}, "has no end record"});
  cases.push_back({"truncated_record_header", {good.begin(), good.begin() + 30}, "truncated (in a record header"});
  cases.push_back({"truncated_payload", {good.begin(), good.begin() + 60}, "runs past its end"});
  cases.push_back({"no_end", {good.begin(), good.end() - 40}, "has no end record"});
  edit("bad_magic", [](auto& b) { b[0] = 'X'; }, "not a moss pack");
  edit("unknown_version", [](auto& b) { b[8] = 9; }, "version 9, which this moss does not know");
  edit("reserved_header", [](auto& b) { b[12] = 1; }, "reserved header bits");
  edit("manifest_hash", [](auto& b) { b[16 + 32] ^= 1; }, "does not match its hash");
  edit("unknown_record", [](auto& b) { b[16] = 7; }, "unknown type 7");
  auto trailing = good;
  trailing.insert(trailing.end(), good.begin() + 16, good.begin() + 48);
  cases.push_back({"bytes_after_end", trailing, "bytes after its end"});
  return cases;
}

TEST_F(PackTest, DecodeRefusesEachMalformedCaseWithItsReason) {
  auto good = pack_bytes();
  ASSERT_TRUE(decode_pack(good).ok());
  for (const auto& c : malformed_cases(good)) {
    auto r = decode_pack(c.bytes);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_NE(r.error().message.find(c.reason), std::string::npos) << c.name << ": " << r.error().message;
  }
}

TEST_F(PackTest, APackMissingAChunkOfItsManifestIsIncomplete) {
  auto good = pack_bytes();
  auto contents = decode_pack(good);
  ASSERT_TRUE(contents.ok());
  // Rebuild the pack without its last chunk record (its end count adjusted): the records are
  // contiguous, so cut the chunk record before the end record out.
  size_t end_at = good.size() - 40;
  size_t last_len = 32 + 24 + contents->chunks.back().frame.size();
  std::vector<uint8_t> b(good.begin(), good.begin() + (end_at - last_len));
  std::vector<uint8_t> end_payload(8);
  uint64_t n = contents->chunks.size() - 1;
  std::memcpy(end_payload.data(), &n, 8);
  XXH128_hash_t h = XXH3_128bits(end_payload.data(), 8);
  uint32_t type = 3, zero = 0;
  uint64_t len = 8;
  auto put = [&](const void* p, size_t k) { b.insert(b.end(), (const uint8_t*)p, (const uint8_t*)p + k); };
  put(&type, 4);
  put(&zero, 4);
  put(&len, 8);
  put(&h.high64, 8);
  put(&h.low64, 8);
  put(end_payload.data(), 8);
  auto r = decode_pack(b);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("it is incomplete (chunk " + contents->chunks.back().id.hex()), std::string::npos)
      << r.error().message;
}

TEST_F(PackTest, InspectPrintsTheManifestAsJson) {
  auto s = read_spore((dir_ / "a.spore").string());
  ASSERT_TRUE(s.ok());
  std::string json = manifest_json(*s.value().manifest);
  EXPECT_NE(json.find("\"formatVersion\": 1"), std::string::npos) << json.substr(0, 400);
  EXPECT_NE(json.find("\"arch\": \"x86_64\""), std::string::npos);
  EXPECT_NE(json.find("\"cpuid\": \"01000000\""), std::string::npos);
  EXPECT_NE(json.find("\"vsockCid\": 42"), std::string::npos);
}

// A pack assembled record by record, to make the malformed cases a writer never would.
struct Record {
  uint32_t type;
  std::vector<uint8_t> payload;
};
std::vector<uint8_t> assemble(const std::vector<Record>& records) {
  std::vector<uint8_t> b(kPackMagic, kPackMagic + 8);
  auto put = [&](const void* p, size_t k) {
    size_t at = b.size();
    b.resize(at + k);
    std::memcpy(b.data() + at, p, k);
  };
  put(&kPackVersion, 4);
  uint32_t zero = 0;
  put(&zero, 4);
  for (const auto& r : records) {
    XXH128_hash_t h = XXH3_128bits(r.payload.data(), r.payload.size());
    uint64_t len = r.payload.size();
    put(&r.type, 4);
    put(&zero, 4);
    put(&len, 8);
    put(&h.high64, 8);
    put(&h.low64, 8);
    put(r.payload.data(), r.payload.size());
  }
  return b;
}
std::vector<uint8_t> u64(uint64_t v) {
  std::vector<uint8_t> b(8);
  std::memcpy(b.data(), &v, 8);
  return b;
}

// The records of a good pack, parsed back (manifest, chunks..., end).
std::vector<Record> records_of(const std::vector<uint8_t>& pack) {
  std::vector<Record> out;
  for (size_t at = 16; at < pack.size();) {
    uint32_t type;
    uint64_t len;
    std::memcpy(&type, pack.data() + at, 4);
    std::memcpy(&len, pack.data() + at + 8, 8);
    out.push_back({type, {pack.begin() + at + 32, pack.begin() + at + 32 + len}});
    at += 32 + len;
  }
  return out;
}

TEST_F(PackTest, RecordsOutOfPlaceAreRefused) {
  auto good = pack_bytes();
  auto r = records_of(good);
  ASSERT_GE(r.size(), 4u);
  ASSERT_EQ(assemble(r), good);
  const Record manifest = r.front(), chunk = r[1], end = r.back();
  std::vector<Record> chunks(r.begin() + 1, r.end() - 1);
  auto with = [&](std::vector<Record> v) { return assemble(v); };
  struct Case {
    const char* name;
    std::vector<uint8_t> bytes;
    const char* reason;
  };
  std::vector<Case> cases;
  cases.push_back({"chunk_before_manifest", with({chunk, manifest, end}), "a chunk before the manifest"});
  cases.push_back({"end_before_manifest", with({end}), "it ends before its manifest"});
  auto two = chunks;
  two.insert(two.begin(), manifest);
  two.insert(two.begin() + 1, manifest);
  two.push_back(end);
  cases.push_back({"second_manifest", with(two), "a second manifest"});
  auto twice = chunks;
  twice.insert(twice.begin(), manifest);
  twice.push_back(chunk);
  twice.push_back({3, u64(chunks.size() + 1)});
  cases.push_back({"chunk_twice", with(twice), "appears twice"});
  auto miscount = r;
  miscount.back() = {3, u64(chunks.size() + 5)};
  cases.push_back({"end_miscounts", with(miscount), "does not count its chunks"});
  auto stranger = r;
  stranger[1].payload[0] ^= 1;  // Another chunk id (the record hash is recomputed).
  cases.push_back({"chunk_not_in_manifest", with(stranger), "is not in its manifest"});
  auto resized = r;
  resized[1].payload[16] ^= 1;  // Another size.
  cases.push_back({"chunk_wrong_size", with(resized), "has the wrong size"});
  auto short_chunk = r;
  short_chunk[1].payload.resize(10);
  cases.push_back({"chunk_record_too_short", with(short_chunk), "a chunk record of 10 bytes"});
  auto missing = r;
  missing.erase(missing.begin() + 1);
  missing.back() = {3, u64(chunks.size() - 1)};
  cases.push_back({"chunk_missing", with(missing), "it is incomplete (chunk"});
  auto bad_manifest = r;
  bad_manifest[0].payload.resize(bad_manifest[0].payload.size() - 8);
  cases.push_back({"manifest_truncated", with(bad_manifest), "its the manifest is truncated"});
  for (const auto& c : cases) {
    auto d = decode_pack(c.bytes);
    ASSERT_FALSE(d.ok()) << c.name;
    EXPECT_NE(d.error().message.find(c.reason), std::string::npos) << c.name << ": " << d.error().message;
  }
  if (const char* dir = std::getenv("MOSS_WRITE_CORPUS")) {
    for (const auto& c : cases) spit(fs::path(dir) / c.name, c.bytes);
  }
}

// Every malformed case has a seed of that name in fuzz/corpus/fuzz_spore_pack/ (the bytes
// hold zstd frames, so they may differ with another zstd); MOSS_WRITE_CORPUS=DIR writes them,
// with those of RecordsOutOfPlaceAreRefused.
TEST_F(PackTest, EveryMalformedCaseIsASeed) {
  const fs::path seeds = fs::path(MOSS_SOURCE_DIR) / "fuzz" / "corpus" / "fuzz_spore_pack";
  auto good = pack_bytes();
  const char* dir = std::getenv("MOSS_WRITE_CORPUS");
  if (dir) spit(fs::path(dir) / "good", good);
  for (const auto& c : malformed_cases(good)) {
    if (dir) spit(fs::path(dir) / c.name, c.bytes);
    EXPECT_TRUE(fs::exists(seeds / c.name)) << "no seed " << (seeds / c.name);
  }
  for (const char* name : {"chunk_before_manifest", "end_before_manifest", "second_manifest", "chunk_twice",
                           "end_miscounts", "chunk_not_in_manifest", "chunk_wrong_size", "chunk_record_too_short",
                           "chunk_missing", "manifest_truncated"}) {
    EXPECT_TRUE(fs::exists(seeds / name)) << "no seed " << (seeds / name);
  }
}

}  // namespace
}  // namespace moss::store
