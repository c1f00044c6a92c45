// privdir::Dir, and the runtime directory it guards (finding 3 of the security review: a
// /tmp/moss-UID that another user pre-created, or made a symlink to a directory of hers, got
// the victim's lock files and vsock sockets created where she could replace them).
#include "broker/private_dir.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include "broker/control.h"
#include "broker/vm_vsock.h"

namespace moss::privdir {
namespace {

namespace fs = std::filesystem;

struct Scratch {
  fs::path root = fs::temp_directory_path() / ("moss-privdir-" + std::to_string(getpid()));
  Scratch() {
    fs::remove_all(root);
    fs::create_directories(root);
  }
  ~Scratch() { fs::remove_all(root); }
  std::string at(const std::string& name) const { return (root / name).string(); }
};

// Everything below `dir`, recursively (what an attacker would find in her directory).
std::vector<std::string> everything_in(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::recursive_directory_iterator(dir, ec)) out.push_back(e.path().string());
  return out;
}

TEST(PrivateDir, IsCreated0700WhateverTheUmaskAndOpenedAgain) {
  Scratch s;
  mode_t old = umask(0);
  auto a = Dir::open(s.at("open"), "runtime directory", true);
  umask(0777);
  auto b = Dir::open(s.at("shut"), "runtime directory", true);
  umask(old);
  ASSERT_TRUE(a.ok()) << a.error().message;
  ASSERT_TRUE(b.ok()) << b.error().message;
  for (const char* name : {"open", "shut"}) {
    struct stat st;
    ASSERT_EQ(stat(s.at(name).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u) << name;
  }
  auto again = Dir::open(s.at("open") + "/", "runtime directory", false);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(again->path(), s.at("open"));
  auto missing = Dir::open(s.at("missing"), "runtime directory", false);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().err, ENOENT);
  EXPECT_FALSE(fs::exists(s.at("missing")));
}

TEST(PrivateDir, ASymlinkAFileAndAnOpenModeAreRefusedWithTheirReason) {
  Scratch s;
  fs::create_directories(s.at("mine"));
  fs::permissions(s.at("mine"), fs::perms::owner_all);
  fs::create_directory_symlink(s.at("mine"), s.at("link"));
  auto link = Dir::open(s.at("link"), "runtime directory", true);
  ASSERT_FALSE(link.ok());
  EXPECT_EQ(link.error().message, "the runtime directory " + s.at("link") + " is a symbolic link, which moss does not follow");
  { std::ofstream(s.at("file")) << "x"; }
  auto file = Dir::open(s.at("file"), "runtime directory", true);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.error().message, "the runtime directory " + s.at("file") + " is not a directory");
  for (mode_t mode : {0777, 0770, 0702, 01777}) {
    ASSERT_EQ(chmod(s.at("mine").c_str(), mode), 0);
    auto open = Dir::open(s.at("mine"), "runtime directory", true);
    ASSERT_FALSE(open.ok()) << std::oct << mode;
    char text[8];
    std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode));
    EXPECT_EQ(open.error().message, "the runtime directory " + s.at("mine") + " is writable by other users (mode " +
                                        text + "); it must be 0700, only yours");
  }
  // Ours and written by nobody else, but readable by others: made 0700.
  for (mode_t mode : {0755, 0750, 0701}) {
    ASSERT_EQ(chmod(s.at("mine").c_str(), mode), 0);
    auto open = Dir::open(s.at("mine"), "runtime directory", true);
    ASSERT_TRUE(open.ok()) << open.error().message;
    struct stat st;
    ASSERT_EQ(stat(s.at("mine").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u) << std::oct << mode;
  }
  ASSERT_EQ(chmod(s.at("mine").c_str(), 0700), 0);
  // A subdirectory is held to the same rules, through the parent's fd.
  auto mine = Dir::open(s.at("mine"), "runtime directory", false);
  ASSERT_TRUE(mine.ok()) << mine.error().message;
  fs::create_directory_symlink("/tmp", s.at("mine") + "/cids");
  auto sub = mine->sub("cids", "vsock CID directory", true);
  ASSERT_FALSE(sub.ok());
  EXPECT_EQ(sub.error().message, "the vsock CID directory " + s.at("mine") + "/cids is a symbolic link, which moss does not follow");
  // And the runtime directory's refusal says how to use another.
  auto rt = control::open_runtime_dir(s.at("link"), true);
  ASSERT_FALSE(rt.ok());
  EXPECT_NE(rt.error().message.find("(set $MOSS_RUNTIME_DIR to a directory of your own to use another)"), std::string::npos)
      << rt.error().message;
}

TEST(PrivateDir, ADirectoryOfAnotherUserIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "SKIP: making a directory of another user takes root";
  Scratch s;
  ASSERT_EQ(mkdir(s.at("hers").c_str(), 0700), 0);
  ASSERT_EQ(chown(s.at("hers").c_str(), 65534, 65534), 0);
  auto d = Dir::open(s.at("hers"), "runtime directory", true);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().message, "the runtime directory " + s.at("hers") + " belongs to another user (uid 65534), not to you (uid 0)");
}

TEST(PrivateDir, SocketsAreBoundAndReachedThroughTheDirectoryFd) {
  Scratch s;
  auto d = Dir::open(s.at("rt"), "runtime directory", true);
  ASSERT_TRUE(d.ok()) << d.error().message;
  auto l = listen_at(*d, "a.sock", 4, true);
  ASSERT_TRUE(l.ok()) << l.error().message;
  EXPECT_TRUE(fs::is_socket(s.at("rt/a.sock")));
  {
    auto g = SocketGuard::after_listen(*d, "a.sock");
    ASSERT_TRUE(g.ok());
    // The directory moves: the fd still reaches it, the old path does not.
    fs::rename(s.at("rt"), s.at("moved"));
    auto c = connect_at(*d, "a.sock", SOCK_STREAM);
    ASSERT_TRUE(c.ok()) << c.error().message;
    auto again = listen_at(*d, "a.sock", 4, true);
    ASSERT_FALSE(again.ok());
    EXPECT_EQ(again.error().message, "another process is already listening on " + s.at("rt") + "/a.sock");
  }
  EXPECT_FALSE(fs::exists(s.at("moved/a.sock"))) << "the guard left its socket";
  auto none = connect_at(*d, "a.sock", SOCK_STREAM);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().err, ENOENT);
  { std::ofstream(s.at("moved/file")) << "x"; }
  auto file = listen_at(*d, "file", 4, true);
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.error().message, s.at("rt") + "/file exists and is not a socket; remove it or choose another path");
}

// A named VM and a VM's vsock socket, each with a runtime directory that is a symlink, another
// user's, or open to all: refused, and nothing is created in it.
TEST(RuntimeDir, ClaimsAndVsockSocketsRefuseARuntimeDirectoryThatIsNotOurs) {
  Scratch s;
  fs::create_directories(s.at("evil"));
  fs::permissions(s.at("evil"), fs::perms::all);
  if (geteuid() == 0) {
    ASSERT_EQ(chown(s.at("evil").c_str(), 65534, 65534), 0);
  }
  fs::create_directory_symlink(s.at("evil"), s.at("link"));
  std::vector<std::string> refused = {s.at("link"), s.at("evil")};
  if (geteuid() == 0) {
    ASSERT_EQ(mkdir(s.at("hers").c_str(), 0700), 0);
    ASSERT_EQ(chown(s.at("hers").c_str(), 65534, 65534), 0);
    refused.push_back(s.at("hers"));
  }
  for (const auto& rt : refused) {
    auto e = control::Endpoint::claim(rt, "vm");
    ASSERT_FALSE(e.ok()) << rt;
    EXPECT_EQ(e.error().message.rfind("the runtime directory " + rt + " ", 0), 0u) << e.error().message;
    auto p = vmvsock::Plan::prepare(rt, "", 0);
    ASSERT_FALSE(p.ok()) << rt;
    EXPECT_EQ(p.error().message, e.error().message);
    EXPECT_TRUE(control::running_names(rt).empty());
    EXPECT_EQ(control::query_stats(rt, "vm").error().message, e.error().message);
  }
  EXPECT_TRUE(everything_in(s.at("evil")).empty());
}

// The attack of the review, as fast as a thread can flip it: the runtime directory's path is
// now the real directory, now a symlink to the attacker's, while moss claims names and makes
// vsock sockets there. Not one file may land in the attacker's directory.
TEST(RuntimeDir, ASymlinkFlippedWhileMossCreatesItsFilesNeverGetsOne) {
  Scratch s;
  const std::string rt = s.at("rt"), hold = s.at("rt.held"), evil = s.at("evil");
  fs::create_directories(evil);
  fs::permissions(evil, fs::perms::all);
  ASSERT_EQ(mkdir(rt.c_str(), 0700), 0);
  std::atomic<bool> stop{false};
  std::atomic<int> flips{0};
  std::thread attacker([&] {
    int made = 0;
    while (!stop) {
      rename(rt.c_str(), hold.c_str());  // The real directory steps aside...
      if (symlink(evil.c_str(), rt.c_str()) == 0) flips++;  // ...for a symlink to hers,
      std::this_thread::yield();
      struct stat st;
      if (lstat(rt.c_str(), &st) == 0) {
        if (S_ISLNK(st.st_mode)) unlink(rt.c_str());
        else rename(rt.c_str(), s.at("made-" + std::to_string(made++)).c_str());  // One moss made meanwhile.
      }
      rename(hold.c_str(), rt.c_str());  // ...and comes back.
      std::this_thread::yield();
    }
  });
  int ok = 0, refused = 0;
  std::map<std::string, int> reasons;
  auto count = [&](const Error& e) {
    refused++;
    reasons[e.message.substr(0, 60)]++;
  };
  // Until the attacker has flipped the path often enough, and moss made its files many times.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (int i = 0; (i < 300 || flips < 100) && std::chrono::steady_clock::now() < deadline; i++) {
    auto e = control::Endpoint::claim(rt, "vm");
    auto p = vmvsock::Plan::prepare(rt, "", 1124);
    if (e.ok()) ok++;
    else count(e.error());
    if (p.ok()) ok++;
    else count(p.error());
  }
  stop = true;
  attacker.join();
  std::printf("  %d flips; %d claims and vsock plans done, %d refused:\n", flips.load(), ok, refused);
  for (const auto& [why, n] : reasons) std::printf("    %d x %s...\n", n, why.c_str());
  EXPECT_GE(flips.load(), 100) << "the attacker never got going";
  EXPECT_GT(ok, 0);
  EXPECT_EQ(everything_in(evil), std::vector<std::string>{}) << "a file landed in the attacker's directory";
}

}  // namespace
}  // namespace moss::privdir
