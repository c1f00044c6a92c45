#include "store/spore.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "store/test_support.h"

namespace moss::store {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class SporeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("moss-spore-" + std::to_string(getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    auto s = ChunkStore::open((dir_ / "store").string());
    ASSERT_TRUE(s.ok());
    store_ = std::make_unique<ChunkStore>(std::move(s).value());
    ram_ = testing::fake_ram(2 << 20, 1);
    std::fill(ram_.begin(), ram_.begin() + (512 << 10), 0);  // Some zero chunks.
  }
  void TearDown() override { fs::remove_all(dir_); }

  Result<SporeWritten> write(const std::string& name, const std::vector<uint8_t>& ram, WriteOptions options = {}) {
    capnp::MallocMessageBuilder message;
    testing::fill_manifest(message.initRoot<spore::Manifest>(), ram.size());
    RamRegion region{0, ram};
    options.chunk_bytes = 65536;
    return write_spore(*store_, (dir_ / name).string(), message, {&region, 1}, options);
  }
  std::vector<uint8_t> load(const std::string& name, bool ram_is_zero = false) {
    auto s = read_spore((dir_ / name).string());
    EXPECT_TRUE(s.ok()) << s.error().message;
    if (!s.ok()) return {};
    std::vector<uint8_t> out(ram_.size(), 0xee);
    RamRegionMut region{0, out};
    auto r = load_ram(*store_, *s, {&region, 1}, ram_is_zero);
    EXPECT_TRUE(r.ok()) << r.error().message;
    return out;
  }
  size_t files_under(const std::string& sub) {
    size_t n = 0;
    for (auto& e : fs::recursive_directory_iterator(dir_ / "store" / sub)) n += e.is_regular_file();
    return n;
  }

  fs::path dir_;
  std::unique_ptr<ChunkStore> store_;
  std::vector<uint8_t> ram_;
};

mode_t mode_of(const fs::path& p) {
  struct stat st;
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

// Into RAM that already reads as zeros (a fresh memfd) the zero chunks are not written: their
// pages stay untouched. The 0xee filler shows which bytes load_ram wrote.
TEST_F(SporeTest, IntoZeroedRamTheZeroChunksAreNotTouched) {
  ASSERT_TRUE(write("z.spore", ram_).ok());
  auto out = load("z.spore", /*ram_is_zero=*/true);
  ASSERT_EQ(out.size(), ram_.size());
  EXPECT_TRUE(std::all_of(out.begin(), out.begin() + (512 << 10), [](uint8_t b) { return b == 0xee; }));
  EXPECT_TRUE(std::equal(out.begin() + (512 << 10), out.end(), ram_.begin() + (512 << 10)));
}

TEST_F(SporeTest, WrittenSporeReadsBackTheSameRam) {
  auto w = write("a.spore", ram_);
  ASSERT_TRUE(w.ok()) << w.error().message;
  EXPECT_EQ(w->chunks, 32u);
  EXPECT_EQ(w->zero_chunks, 8u);
  EXPECT_EQ(load("a.spore"), ram_);
  auto s = read_spore((dir_ / "a.spore").string());
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->id(), w->manifest_id);
  EXPECT_EQ(s->manifest->root().getIdentity().getName(), "dev");
}

TEST_F(SporeTest, SporeDirectoryIs0700AndItsManifest0600AndNoTempIsLeft) {
  ASSERT_TRUE(write("a.spore", ram_).ok());
  EXPECT_EQ(mode_of(dir_ / "a.spore"), 0700u);
  EXPECT_EQ(mode_of(dir_ / "a.spore" / "manifest"), 0600u);
  for (auto& e : fs::directory_iterator(dir_)) {
    EXPECT_TRUE(e.path().filename() == "a.spore" || e.path().filename() == "store") << e.path();
  }
  EXPECT_EQ(files_under("tmp"), 0u);
  EXPECT_EQ(files_under("roots"), 1u);
}

TEST_F(SporeTest, AnExistingSporeIsNotOverwritten) {
  ASSERT_TRUE(write("a.spore", ram_).ok());
  auto again = write("a.spore", ram_);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().message, "the spore " + (dir_ / "a.spore").string() + " already exists; remove it or choose another path");
}

TEST_F(SporeTest, TwoSporesOfOneVmShareTheirUnchangedChunks) {
  auto a = write("a.spore", ram_);
  ASSERT_TRUE(a.ok());
  auto later = ram_;
  for (size_t i = 0; i < 4096; ++i) later[(1 << 20) + i] ^= 0xff;  // One page changed.
  auto b = write("b.spore", later);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->new_chunks, 1u);
  EXPECT_EQ(load("b.spore"), later);
  EXPECT_EQ(load("a.spore"), ram_);
}

TEST_F(SporeTest, ACorruptChunkIsNamedOnLoad) {
  auto w = write("a.spore", ram_);
  ASSERT_TRUE(w.ok());
  auto s = read_spore((dir_ / "a.spore").string());
  ASSERT_TRUE(s.ok());
  ChunkId victim = s->manifest->stored_chunks()[0];
  std::string path = store_->chunk_path(victim);
  fs::remove(path);
  auto other = testing::fake_ram(65536, 99);
  ChunkBatch batch(*store_);
  auto refs = batch.add(other, 65536);
  ASSERT_TRUE(refs.ok() && batch.commit().ok());
  fs::copy_file(store_->chunk_path((*refs)[0].id), path);
  std::vector<uint8_t> out(ram_.size());
  RamRegionMut region{0, out};
  auto r = load_ram(*store_, *s, {&region, 1});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "chunk " + victim.hex() + " of " + s->path + " is corrupt: its bytes do not match its hash");
}

TEST_F(SporeTest, ReadingRefusesAMissingSporeAndACutManifestWithOneSentence) {
  auto r = read_spore((dir_ / "none.spore").string());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "there is no spore at " + (dir_ / "none.spore").string());
  fs::create_directories(dir_ / "empty.spore");
  r = read_spore((dir_ / "empty.spore").string());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, (dir_ / "empty.spore").string() + " is not a spore (it has no manifest)");
  ASSERT_TRUE(write("a.spore", ram_).ok());
  fs::resize_file(dir_ / "a.spore" / "manifest", 40);
  r = read_spore((dir_ / "a.spore").string());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("cannot be used: the manifest is truncated"), std::string::npos) << r.error().message;
}

TEST_F(SporeTest, GcKeepsLiveSporesAndDropsRemovedAndChangedOnes) {
  ASSERT_TRUE(write("a.spore", ram_).ok());
  auto other = testing::fake_ram(ram_.size(), 2);
  ASSERT_TRUE(write("b.spore", other).ok());
  auto third = testing::fake_ram(ram_.size(), 3);
  ASSERT_TRUE(write("c.spore", third).ok());
  size_t before = files_under("chunks");
  fs::remove_all(dir_ / "b.spore");
  // c.spore changed behind the store's back: its manifest no longer hashes to its root.
  fs::permissions(dir_ / "c.spore" / "manifest", fs::perms::owner_all);
  std::ofstream(dir_ / "c.spore" / "manifest", std::ios::app) << "xxxxxxxx";
  auto stats = store_->gc(chunks_of_manifest);
  ASSERT_TRUE(stats.ok()) << stats.error().message;
  EXPECT_EQ(stats->roots_kept, 1u);
  EXPECT_EQ(stats->roots_dropped, 2u);
  EXPECT_EQ(stats->chunks_kept, 24u);
  EXPECT_EQ(stats->chunks_deleted, before - 24u);
  EXPECT_EQ(files_under("chunks"), 24u);
  EXPECT_EQ(load("a.spore"), ram_);
}

TEST_F(SporeTest, GcThatCannotReadASporeDeletesNothing) {
  ASSERT_TRUE(write("a.spore", ram_).ok());
  ASSERT_TRUE(write("b.spore", testing::fake_ram(ram_.size(), 2)).ok());
  fs::remove_all(dir_ / "b.spore");  // Would be dropped, its chunks deleted...
  size_t before = files_under("chunks");
  // ...but a.spore's manifest cannot be read (here: it is a directory), so gc stops.
  fs::rename(dir_ / "a.spore" / "manifest", dir_ / "a.manifest");
  fs::create_directory(dir_ / "a.spore" / "manifest");
  auto stats = store_->gc(chunks_of_manifest);
  ASSERT_FALSE(stats.ok());
  EXPECT_EQ(stats.error().message.rfind("gc deleted nothing: cannot read the spore " + (dir_ / "a.spore").string(), 0), 0u)
      << stats.error().message;
  EXPECT_EQ(files_under("chunks"), before);
  EXPECT_EQ(files_under("roots"), 2u);
  // A manifest of a newer format: the same.
  fs::remove(dir_ / "a.spore" / "manifest");
  fs::rename(dir_ / "a.manifest", dir_ / "a.spore" / "manifest");
  auto bytes = std::vector<uint8_t>(std::istreambuf_iterator<char>(std::ifstream(dir_ / "a.spore" / "manifest", std::ios::binary).rdbuf()), {});
  auto newer = decode_manifest(bytes);
  ASSERT_TRUE(newer.ok());
  capnp::MallocMessageBuilder message;
  message.setRoot((*newer)->root());
  message.getRoot<spore::Manifest>().setFormatVersion(spore::SPORE_FORMAT_VERSION + 1);
  auto newer_bytes = encode_message(message);
  ASSERT_TRUE(store_->add_root((dir_ / "a.spore").string(), ChunkId::of(newer_bytes)).ok());
  fs::permissions(dir_ / "a.spore" / "manifest", fs::perms::owner_all);
  std::ofstream(dir_ / "a.spore" / "manifest", std::ios::binary | std::ios::trunc)
      .write((const char*)newer_bytes.data(), newer_bytes.size());
  stats = store_->gc(chunks_of_manifest);
  ASSERT_FALSE(stats.ok());
  EXPECT_NE(stats.error().message.find("format version 2, which this moss does not know"), std::string::npos)
      << stats.error().message;
  EXPECT_EQ(files_under("chunks"), before);
}

// Whether a process is blocked waiting for a flock on `path` (/proc/locks marks a waiter "->"
// and names the file by device and inode: "1: -> FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF").
bool a_flock_waiter_on(const fs::path& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return false;
  std::ifstream locks("/proc/locks");
  std::string line;
  while (std::getline(locks, line)) {
    std::istringstream in(line);
    std::string n, arrow, type, advisory, mode, pid, file;
    in >> n >> arrow >> type >> advisory >> mode >> pid >> file;
    size_t colon = file.rfind(':');
    if (arrow == "->" && type == "FLOCK" && colon != std::string::npos &&
        file.substr(colon + 1) == std::to_string(st.st_ino)) {
      return true;
    }
  }
  return false;
}

TEST_F(SporeTest, GcDuringAWriteWaitsAndDeletesNoneOfItsChunks) {
  std::atomic<bool> gc_done{false};
  std::thread gc_thread;
  Result<GcStats> gc_result = make_error("not run");
  WriteOptions options;
  options.after_step = [&](const char* step) {
    if (std::string(step) != "chunks") return;
    // The chunks are in the store, nothing references them yet: gc must wait for us.
    gc_thread = std::thread([&] {
      gc_result = store_->gc(chunks_of_manifest);
      gc_done = true;
    });
    // The fact to wait for: gc is blocked on the store's lock (or, wrongly, done).
    bool waiting = false;
    for (int i = 0; i < 2000 && !waiting && !gc_done; i++) {
      waiting = a_flock_waiter_on(dir_ / "store" / "lock");
      if (!waiting) std::this_thread::sleep_for(5ms);
    }
    EXPECT_FALSE(gc_done.load()) << "gc ran while a spore was being written";
    EXPECT_TRUE(waiting) << "gc never waited for the store's lock";
  };
  auto w = write("a.spore", ram_, options);
  ASSERT_TRUE(w.ok()) << w.error().message;
  gc_thread.join();
  ASSERT_TRUE(gc_result.ok());
  EXPECT_EQ(gc_result->chunks_deleted, 0u);
  EXPECT_EQ(load("a.spore"), ram_);
}

// A writer killed by SIGKILL at `step` leaves no spore; gc then removes its root and chunks.
void kill_writer_at(SporeTest* t, const char* step, const std::function<Result<SporeWritten>(WriteOptions)>& write,
                    const fs::path& dir) {
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    WriteOptions options;
    options.after_step = [&](const char* s) {
      if (std::string(s) != step) return;
      (void)!::write(pipefd[1], "x", 1);
      for (;;) pause();
    };
    (void)write(options);
    _exit(1);
  }
  close(pipefd[1]);
  char c;
  ASSERT_EQ(read(pipefd[0], &c, 1), 1) << "the writer never reached " << step;
  close(pipefd[0]);
  kill(pid, SIGKILL);
  int status;
  waitpid(pid, &status, 0);
  EXPECT_FALSE(fs::exists(dir / "k.spore"));
  (void)t;
}

TEST_F(SporeTest, AWriterKilledMidWriteLeavesNoSporeAndGcCleansUp) {
  for (const char* step : {"chunks", "root"}) {
    SCOPED_TRACE(step);
    kill_writer_at(this, step, [&](WriteOptions o) { return write("k.spore", ram_, o); }, dir_);
    EXPECT_GT(files_under("chunks"), 0u);
    auto stats = store_->gc(chunks_of_manifest);
    ASSERT_TRUE(stats.ok()) << stats.error().message;
    EXPECT_EQ(stats->roots_kept, 0u);
    EXPECT_EQ(files_under("chunks"), 0u);
    EXPECT_EQ(files_under("roots"), 0u);
    EXPECT_EQ(files_under("tmp"), 0u);
    for (auto& e : fs::directory_iterator(dir_)) EXPECT_EQ(e.path().filename(), "store") << e.path();
  }
  // The store still works.
  ASSERT_TRUE(write("k.spore", ram_).ok());
  EXPECT_EQ(load("k.spore"), ram_);
}

TEST_F(SporeTest, AWriterKilledWhileWritingChunksLeavesOnlyTempFilesForGc) {
  // Killed before commit: chunks only in tmp/.
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    auto lock = store_->lock_shared();
    ChunkBatch batch(*store_);
    (void)batch.add(ram_, 65536);
    (void)!::write(pipefd[1], "x", 1);
    for (;;) pause();
  }
  close(pipefd[1]);
  char c;
  ASSERT_EQ(read(pipefd[0], &c, 1), 1);
  close(pipefd[0]);
  EXPECT_GT(files_under("tmp"), 0u);
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  auto stats = store_->gc(chunks_of_manifest);
  ASSERT_TRUE(stats.ok());
  EXPECT_GT(stats->temp_files_deleted, 0u);
  EXPECT_EQ(files_under("tmp"), 0u);
  EXPECT_EQ(files_under("chunks"), 0u);
}

}  // namespace
}  // namespace moss::store
