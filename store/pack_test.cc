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
    ram_ = testing::fake_ram(1 << 20, 4);
    std::fill(ram_.begin(), ram_.begin() + (128 << 10), 0);
    capnp::MallocMessageBuilder message;
    testing::fill_manifest(message.initRoot<spore::Manifest>(), ram_.size());
    RamRegion region{0, ram_};
    WriteOptions o;
    o.chunk_bytes = 65536;
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
  EXPECT_GT(calls, 10u);
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

// MOSS_WRITE_CORPUS=DIR writes the seeds of fuzz/corpus/fuzz_spore_pack/.
TEST_F(PackTest, SeedCorpus) {
  const char* dir = std::getenv("MOSS_WRITE_CORPUS");
  if (!dir) GTEST_SKIP() << "set MOSS_WRITE_CORPUS=DIR to write the seed corpus";
  auto good = pack_bytes();
  spit(fs::path(dir) / "good", good);
  for (const auto& c : malformed_cases(good)) spit(fs::path(dir) / c.name, c.bytes);
}

}  // namespace
}  // namespace moss::store
