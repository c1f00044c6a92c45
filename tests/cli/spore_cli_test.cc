// moss inspect, pack, unpack and store gc, as a user runs them, on spores written through
// the store library (no VM needed): what each prints, and one sentence for each bad input.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "store/spore.h"
#include "store/test_support.h"
#include "tests/support/subprocess.h"

namespace moss::test {
namespace {

namespace fs = std::filesystem;
using std::chrono::seconds;

std::string moss() { return build_dir() + "/moss"; }

std::vector<uint8_t> slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

class SporeCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("moss-spore-cli-" + std::to_string(getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    store_ = (dir_ / "store").string();
    auto store = store::ChunkStore::open(store_);
    ASSERT_TRUE(store.ok());
    ram_ = store::testing::fake_ram(4 << 20, 7);
    std::fill(ram_.begin(), ram_.begin() + (1 << 20), 0);
    capnp::MallocMessageBuilder message;
    store::testing::fill_manifest(message.initRoot<spore::Manifest>(), ram_.size());
    store::RamRegion region{0, ram_};
    auto w = store::write_spore(*store, (dir_ / "dev.spore").string(), message, {&region, 1});
    ASSERT_TRUE(w.ok()) << w.error().message;
  }
  void TearDown() override {
    if (mounted_) ::umount2((dir_ / "small").c_str(), MNT_DETACH);
    fs::remove_all(dir_);
  }
  // One line on stderr, "moss: ...", containing `needle`; nothing on stdout.
  void expect_one_sentence(const Outcome& o, int code, const std::string& needle) {
    EXPECT_EQ(o.exit_code, code) << o.err;
    EXPECT_NE(o.err.find(needle), std::string::npos) << o.err;
    EXPECT_EQ(o.err.rfind("moss: ", 0), 0u) << o.err;
    EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
    EXPECT_TRUE(o.out.empty()) << o.out;
  }
  // A tmpfs of `kib` KiB at DIR/small (we are root in CI; skips otherwise).
  bool mount_small_tmpfs(unsigned kib) {
    fs::create_directories(dir_ / "small");
    std::string opts = "size=" + std::to_string(kib) + "k,mode=0700";
    if (::mount("tmpfs", (dir_ / "small").c_str(), "tmpfs", 0, opts.c_str()) != 0) return false;
    mounted_ = true;
    return true;
  }
  size_t files_under(const fs::path& p) {
    size_t n = 0;
    for (auto& e : fs::recursive_directory_iterator(p)) n += e.is_regular_file();
    return n;
  }

  fs::path dir_;
  std::string store_;
  std::vector<uint8_t> ram_;
  bool mounted_ = false;
};

TEST_F(SporeCli, InspectPrintsTheManifestAsJson) {
  auto o = run({moss(), "inspect", (dir_ / "dev.spore").string()});
  EXPECT_EQ(o.exit_code, 0) << o.err;
  EXPECT_TRUE(o.err.empty()) << o.err;
  EXPECT_EQ(o.out.rfind("{", 0), 0u) << o.out.substr(0, 200);
  EXPECT_NE(o.out.find("\"formatVersion\": 1"), std::string::npos);
  EXPECT_NE(o.out.find("\"chunkBytes\": " + std::to_string(store::kChunkBytes)), std::string::npos);
  EXPECT_NE(o.out.find("\"generation\": \"7\""), std::string::npos) << o.out.substr(0, 2000);
}

TEST_F(SporeCli, PackThenUnpackIntoAnotherStoreGivesTheSameSpore) {
  auto p = run({moss(), "pack", (dir_ / "dev.spore").string(), "-o", (dir_ / "dev.mossp").string(), "--store", store_});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_EQ(p.out, "packed " + (dir_ / "dev.spore").string() + " into " + (dir_ / "dev.mossp").string() + "\n");
  std::string other = (dir_ / "other-store").string();
  auto u = run({moss(), "unpack", (dir_ / "dev.mossp").string(), "-o", (dir_ / "copy.spore").string(), "--store", other});
  ASSERT_EQ(u.exit_code, 0) << u.err;
  EXPECT_EQ(slurp(dir_ / "copy.spore" / "manifest"), slurp(dir_ / "dev.spore" / "manifest"));
  auto store = store::ChunkStore::open(other);
  auto spore = store::read_spore((dir_ / "copy.spore").string());
  ASSERT_TRUE(store.ok() && spore.ok());
  std::vector<uint8_t> back(ram_.size());
  store::RamRegionMut region{0, back};
  ASSERT_TRUE(store::load_ram(*store, *spore, {&region, 1}).ok());
  EXPECT_EQ(back, ram_);
}

TEST_F(SporeCli, StoreGcDeletesOnlyChunksNoSporeReferences) {
  auto keep = run({moss(), "store", "gc", "--store", store_});
  ASSERT_EQ(keep.exit_code, 0) << keep.err;
  // fake_ram's pages are each zero, text or random: every chunk after the first MiB is stored.
  const std::string chunks = std::to_string((3u << 20) / store::kChunkBytes);
  EXPECT_NE(keep.out.find("kept 1 spores and " + chunks + " chunks"), std::string::npos) << keep.out;
  EXPECT_NE(keep.out.find("deleted 0 chunks"), std::string::npos) << keep.out;
  fs::remove_all(dir_ / "dev.spore");
  auto drop = run({moss(), "store", "gc", "--store", store_});
  ASSERT_EQ(drop.exit_code, 0) << drop.err;
  EXPECT_NE(drop.out.find("dropped 1 spores that are gone or changed; deleted " + chunks + " chunks"), std::string::npos)
      << drop.out;
  EXPECT_EQ(files_under(dir_ / "store" / "chunks"), 0u);
}

TEST_F(SporeCli, TheDefaultStoreIsUnderXdgDataHome) {
  auto o = run({moss(), "store", "gc"}, seconds(30), {{"XDG_DATA_HOME", (dir_ / "xdg").string()}});
  ASSERT_EQ(o.exit_code, 0) << o.err;
  EXPECT_NE(o.out.find("store " + (dir_ / "xdg" / "moss" / "store").string() + ":"), std::string::npos) << o.out;
  struct stat st;
  ASSERT_EQ(::stat((dir_ / "xdg" / "moss" / "store").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST_F(SporeCli, BadInputGetsOneSentence) {
  expect_one_sentence(run({moss(), "inspect", (dir_ / "nope").string()}), 125, "there is no spore at " + (dir_ / "nope").string());
  expect_one_sentence(run({moss(), "inspect"}), 2, "moss inspect needs exactly one spore");
  expect_one_sentence(run({moss(), "pack", (dir_ / "dev.spore").string()}), 2, "moss pack needs -o FILE");
  expect_one_sentence(run({moss(), "store"}), 2, "moss store needs a subcommand: moss store gc");
  expect_one_sentence(run({moss(), "unpack", (dir_ / "missing.mossp").string(), "-o", (dir_ / "x").string(), "--store", store_}),
                      125, "cannot read the pack " + (dir_ / "missing.mossp").string() + ": No such file or directory");
  // A cut manifest.
  fs::copy(dir_ / "dev.spore", dir_ / "cut.spore");
  fs::resize_file(dir_ / "cut.spore" / "manifest", 64);
  expect_one_sentence(run({moss(), "inspect", (dir_ / "cut.spore").string()}), 125, "the manifest is truncated");
  // A spore whose chunk is gone cannot be packed.
  auto spore = store::read_spore((dir_ / "dev.spore").string());
  ASSERT_TRUE(spore.ok());
  auto store = store::ChunkStore::open(store_);
  ASSERT_TRUE(store.ok());
  auto victim = spore->manifest->stored_chunks()[3];
  fs::remove(store->chunk_path(victim));
  expect_one_sentence(run({moss(), "pack", (dir_ / "dev.spore").string(), "-o", (dir_ / "p").string(), "--store", store_}),
                      125, "chunk " + victim.hex() + " of " + (dir_ / "dev.spore").string() + " is missing from the store");
  EXPECT_FALSE(fs::exists(dir_ / "p"));
}

TEST_F(SporeCli, ATruncatedPackIsRefusedAndLeavesNoSpore) {
  ASSERT_EQ(run({moss(), "pack", (dir_ / "dev.spore").string(), "-o", (dir_ / "dev.mossp").string(), "--store", store_}).exit_code, 0);
  fs::resize_file(dir_ / "dev.mossp", fs::file_size(dir_ / "dev.mossp") - 100);
  std::string other = (dir_ / "other-store").string();
  expect_one_sentence(run({moss(), "unpack", (dir_ / "dev.mossp").string(), "-o", (dir_ / "copy.spore").string(), "--store", other}),
                      125, "cannot unpack " + (dir_ / "dev.mossp").string() + ": it is truncated");
  EXPECT_FALSE(fs::exists(dir_ / "copy.spore"));
  EXPECT_EQ(files_under(other), 0u + 1u);  // Only the store's lock file.
}

TEST_F(SporeCli, AStoreOnAFullFilesystemFailsWithOneSentenceAndLeavesNothingPartial) {
  if (geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
  ASSERT_EQ(run({moss(), "pack", (dir_ / "dev.spore").string(), "-o", (dir_ / "dev.mossp").string(), "--store", store_}).exit_code, 0);
  ASSERT_TRUE(mount_small_tmpfs(512)) << "mount tmpfs: " << strerror(errno);
  // Unpacking 3 MiB of chunks into a store on a 512 KiB tmpfs.
  std::string small = (dir_ / "small" / "store").string();
  expect_one_sentence(run({moss(), "unpack", (dir_ / "dev.mossp").string(), "-o", (dir_ / "copy.spore").string(), "--store", small}),
                      125, "the chunk store " + small + " is full (No space left on device)");
  EXPECT_FALSE(fs::exists(dir_ / "copy.spore"));
  EXPECT_EQ(files_under(small + "/tmp"), 0u);
  EXPECT_EQ(files_under(small + "/chunks"), 0u);
  EXPECT_EQ(files_under(small + "/roots"), 0u);
  // Packing onto it: no pack, no temp file.
  expect_one_sentence(run({moss(), "pack", (dir_ / "dev.spore").string(), "-o", (dir_ / "small" / "dev.mossp").string(), "--store", store_}),
                      125, "cannot write the pack " + (dir_ / "small" / "dev.mossp").string() + ": the disk is full");
  for (auto& e : fs::directory_iterator(dir_ / "small")) EXPECT_EQ(e.path().filename(), "store") << e.path();
  // The full store is still consistent: gc runs and finds nothing to keep or drop.
  auto gc = run({moss(), "store", "gc", "--store", small});
  EXPECT_EQ(gc.exit_code, 0) << gc.err;
  EXPECT_NE(gc.out.find("kept 0 spores and 0 chunks; dropped 0 spores"), std::string::npos) << gc.out;
  ASSERT_EQ(::umount2((dir_ / "small").c_str(), 0), 0);
  mounted_ = false;
}

}  // namespace
}  // namespace moss::test

namespace moss::test {
namespace {

// The suspend, restore and spore create verbs' bad input, before any VM or KVM is needed:
// one sentence each, and nothing made.
TEST_F(SporeCli, SuspendRestoreAndSporeCreateRefuseBadInputWithOneSentence) {
  std::map<std::string, std::string> env{{"MOSS_RUNTIME_DIR", (dir_ / "rt").string()}};
  expect_one_sentence(run({moss(), "suspend", "nobody", "--out", (dir_ / "n.spore").string(), "--store", store_}, seconds(30), env),
                      125, "no VM named nobody is running");
  EXPECT_FALSE(fs::exists(dir_ / "n.spore"));
  expect_one_sentence(run({moss(), "suspend", "nobody", "--out", (dir_ / "dev.spore").string()}, seconds(30), env), 125,
                      "the spore " + (dir_ / "dev.spore").string() + " exists already");
  expect_one_sentence(run({moss(), "suspend", "nobody"}, seconds(30), env), 2, "moss suspend needs --out SPORE");
  expect_one_sentence(run({moss(), "restore", (dir_ / "nope").string(), "--name", "r", "--store", store_}, seconds(30), env),
                      125, "there is no spore at " + (dir_ / "nope").string());
  expect_one_sentence(run({moss(), "restore", (dir_ / "dev.spore").string()}, seconds(30), env), 2,
                      "moss restore needs --name NAME");
  expect_one_sentence(run({moss(), "restore", (dir_ / "dev.spore").string(), "--name", "r", "--mem", "1G"}, seconds(30), env), 2,
                      "--mem does not apply to a spore");
  // The store library's test spore has 4 MiB of RAM at 0: no machine moss makes.
  expect_one_sentence(run({moss(), "restore", (dir_ / "dev.spore").string(), "--name", "r", "--store", store_}, seconds(30), env),
                      125, "the spore's RAM is smaller than any machine moss makes");
  expect_one_sentence(run({moss(), "run", "--from", (dir_ / "cut").string(), "--", "true"}, seconds(30), env), 125,
                      "there is no spore at " + (dir_ / "cut").string());
  expect_one_sentence(run({moss(), "spore", "create", (dir_ / "dev.spore").string(), "--kernel", "/nonexistent"}, seconds(30), env),
                      125, "exists already");
  expect_one_sentence(run({moss(), "spore", "create", (dir_ / "s.spore").string(), "--", "true"}, seconds(30), env), 2,
                      "takes no command");
  EXPECT_FALSE(fs::exists(dir_ / "rt" / "r.sock"));
}

}  // namespace
}  // namespace moss::test
