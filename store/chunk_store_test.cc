#include "store/chunk_store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <zstd.h>

#include <filesystem>
#include <fstream>

#include "store/test_support.h"

namespace moss::store {
namespace {

namespace fs = std::filesystem;

class ChunkStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("moss-chunk-store-" + std::to_string(getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  ChunkStore open() {
    auto s = ChunkStore::open((dir_ / "store").string());
    EXPECT_TRUE(s.ok()) << s.error().message;
    return std::move(s).value();
  }
  size_t files_under(const std::string& sub) {
    size_t n = 0;
    for (auto& e : fs::recursive_directory_iterator(dir_ / "store" / sub)) n += e.is_regular_file();
    return n;
  }
  fs::path dir_;
};

mode_t mode_of(const fs::path& p) {
  struct stat st;
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

TEST_F(ChunkStoreTest, ChunkIdHexRoundTrips) {
  ChunkId id{0x0123456789abcdefull, 0xfedcba9876543210ull};
  EXPECT_EQ(id.hex(), "0123456789abcdeffedcba9876543210");
  auto back = ChunkId::parse(id.hex());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, id);
  EXPECT_FALSE(ChunkId::parse("0123").ok());
  EXPECT_FALSE(ChunkId::parse("0123456789ABCDEFfedcba987654321g").ok());
}

TEST_F(ChunkStoreTest, StoreDirectoriesAre0700AndChunksAre0600) {
  ChunkStore store = open();
  for (const char* sub : {"", "/chunks", "/roots", "/tmp"}) EXPECT_EQ(mode_of(store.dir() + sub), 0700u) << sub;
  EXPECT_EQ(mode_of(store.dir() + "/lock"), 0600u);
  auto ram = testing::fake_ram(1 << 20, 1);
  ChunkBatch batch(store);
  auto refs = batch.add(ram, 65536);
  ASSERT_TRUE(refs.ok()) << refs.error().message;
  ASSERT_TRUE(batch.commit().ok());
  for (const auto& r : *refs) {
    if (r.zero) continue;
    EXPECT_EQ(mode_of(store.chunk_path(r.id)), 0600u);
    EXPECT_EQ(mode_of(fs::path(store.chunk_path(r.id)).parent_path()), 0700u);
  }
}

TEST_F(ChunkStoreTest, ZeroChunksAreNeverStoredAndReadBack) {
  ChunkStore store = open();
  std::vector<uint8_t> ram(4 * 65536, 0);
  ram[65536 + 17] = 1;  // Chunk 1 is not zero; 0, 2 and 3 are.
  ChunkBatch batch(store);
  auto refs = batch.add(ram, 65536);
  ASSERT_TRUE(refs.ok());
  ASSERT_TRUE(batch.commit().ok());
  ASSERT_EQ(refs->size(), 4u);
  EXPECT_TRUE((*refs)[0].zero && (*refs)[2].zero && (*refs)[3].zero);
  EXPECT_FALSE((*refs)[1].zero);
  EXPECT_EQ(files_under("chunks"), 1u);
  auto back = store.read((*refs)[1].id, 65536, "test");
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_TRUE(std::equal(back->begin(), back->end(), ram.begin() + 65536));
}

TEST_F(ChunkStoreTest, TheSameChunkIsStoredOnceAcrossBatchesAndWithinOne) {
  ChunkStore store = open();
  std::vector<uint8_t> ram(2 * 65536, 0x5a);  // Two identical chunks.
  ChunkBatch a(store);
  ASSERT_TRUE(a.add(ram, 65536).ok());
  ASSERT_TRUE(a.commit().ok());
  EXPECT_EQ(a.chunks_written(), 1u);
  ChunkBatch b(store);
  auto refs = b.add(ram, 65536);
  ASSERT_TRUE(refs.ok());
  ASSERT_TRUE(b.commit().ok());
  EXPECT_EQ(b.chunks_written(), 0u);
  EXPECT_EQ(files_under("chunks"), 1u);
  EXPECT_EQ((*refs)[0], (*refs)[1]);
}

TEST_F(ChunkStoreTest, LastChunkMayBeShort) {
  ChunkStore store = open();
  auto ram = testing::fake_ram(65536 + 4096, 3);
  ram[65536] = 9;
  ChunkBatch batch(store);
  auto refs = batch.add(ram, 65536);
  ASSERT_TRUE(refs.ok());
  ASSERT_TRUE(batch.commit().ok());
  ASSERT_EQ(refs->size(), 2u);
  auto tail = store.read((*refs)[1].id, 4096, "test");
  ASSERT_TRUE(tail.ok()) << tail.error().message;
  EXPECT_TRUE(std::equal(tail->begin(), tail->end(), ram.begin() + 65536));
}

TEST_F(ChunkStoreTest, AChunkWhoseBytesDoNotMatchItsHashIsNamedAsCorrupt) {
  ChunkStore store = open();
  std::vector<uint8_t> ram(65536, 0x11);
  ChunkBatch batch(store);
  auto refs = batch.add(ram, 65536);
  ASSERT_TRUE(refs.ok());
  ASSERT_TRUE(batch.commit().ok());
  ChunkId id = (*refs)[0].id;
  // A valid zstd frame of other bytes under this chunk's name.
  std::vector<uint8_t> other(65536, 0x22), frame(ZSTD_compressBound(65536));
  frame.resize(ZSTD_compress(frame.data(), frame.size(), other.data(), other.size(), 1));
  fs::permissions(store.chunk_path(id), fs::perms::owner_all);
  std::ofstream(store.chunk_path(id), std::ios::binary | std::ios::trunc).write((const char*)frame.data(), frame.size());
  auto r = store.read(id, 65536, "the spore /x/dev.spore");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message,
            "chunk " + id.hex() + " of the spore /x/dev.spore is corrupt: its bytes do not match its hash");
  // Truncated: not a whole frame.
  fs::resize_file(store.chunk_path(id), frame.size() / 2);
  r = store.read(id, 65536, "S");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message.rfind("chunk " + id.hex() + " of S is corrupt: ", 0), 0u) << r.error().message;
  // The wrong size.
  std::ofstream(store.chunk_path(id), std::ios::binary | std::ios::trunc).write((const char*)frame.data(), frame.size());
  r = store.read(id, 4096, "S");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("is corrupt: it holds 65536 bytes, not 4096"), std::string::npos);
}

TEST_F(ChunkStoreTest, AMissingChunkIsNamed) {
  ChunkStore store = open();
  ChunkId id{1, 2};
  auto r = store.read(id, 4096, "S");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "chunk " + id.hex() + " of S is missing from the store " + store.dir());
}

TEST_F(ChunkStoreTest, AnUncommittedBatchLeavesNothing) {
  ChunkStore store = open();
  {
    ChunkBatch batch(store);
    ASSERT_TRUE(batch.add(testing::fake_ram(1 << 20, 5), 65536).ok());
    EXPECT_GT(files_under("tmp"), 0u);
  }
  EXPECT_EQ(files_under("tmp"), 0u);
  EXPECT_EQ(files_under("chunks"), 0u);
}

TEST_F(ChunkStoreTest, ADamagedCompressedChunkIsRefusedBeforeItIsStored) {
  ChunkStore store = open();
  std::vector<uint8_t> data(65536, 0x33), frame(ZSTD_compressBound(65536));
  frame.resize(ZSTD_compress(frame.data(), frame.size(), data.data(), data.size(), 1));
  ChunkBatch batch(store);
  ChunkId wrong{3, 4};
  auto r = batch.add_compressed(wrong, 65536, frame, "the pack P");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "chunk " + wrong.hex() + " of the pack P is corrupt: its bytes do not match its hash");
  ASSERT_TRUE(batch.add_compressed(ChunkId::of(data), 65536, frame, "the pack P").ok());
  ASSERT_TRUE(batch.commit().ok());
  EXPECT_TRUE(store.has(ChunkId::of(data)));
}

TEST_F(ChunkStoreTest, DefaultStoreFollowsXdgDataHomeThenHome) {
  std::string old_xdg = getenv("XDG_DATA_HOME") ? getenv("XDG_DATA_HOME") : "";
  std::string old_home = getenv("HOME") ? getenv("HOME") : "";
  setenv("XDG_DATA_HOME", "/data", 1);
  EXPECT_EQ(*default_store_dir(), "/data/moss/store");
  unsetenv("XDG_DATA_HOME");
  setenv("HOME", "/home/u", 1);
  EXPECT_EQ(*default_store_dir(), "/home/u/.local/share/moss/store");
  unsetenv("HOME");
  EXPECT_FALSE(default_store_dir().ok());
  if (!old_xdg.empty()) setenv("XDG_DATA_HOME", old_xdg.c_str(), 1);
  if (!old_home.empty()) setenv("HOME", old_home.c_str(), 1);
}

}  // namespace
}  // namespace moss::store
