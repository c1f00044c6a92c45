#include "broker/vm_vsock.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

namespace moss::vmvsock {
namespace {

namespace fs = std::filesystem;

struct Dirs {
  fs::path root = fs::temp_directory_path() / ("moss-vm-vsock-" + std::to_string(getpid()));
  std::string cids = (root / "cids").string(), runtime = (root / "rt").string();
  Dirs() { fs::create_directories(root); }
  ~Dirs() { fs::remove_all(root); }
};

TEST(VmVsock, ParentDir) {
  EXPECT_EQ(parent_dir("/a/b/c"), "/a/b");
  EXPECT_EQ(parent_dir("/c"), "/");
  EXPECT_EQ(parent_dir("c"), ".");
}

TEST(VmVsock, DefaultSocketIsInAPrivateDirectoryNamedByTheCidAndGoesAway) {
  Dirs d;
  std::string dir;
  {
    auto p = Plan::prepare(d.cids, d.runtime, "", 1124);
    ASSERT_TRUE(p.ok()) << p.error().message;
    uint32_t cid = (*p)->cid();
    EXPECT_GE(cid, 3u);
    dir = d.runtime + "/cid-" + std::to_string(cid);
    EXPECT_EQ((*p)->socket_path(), dir + "/vsock");
    EXPECT_EQ((*p)->socket_dir(), dir);
    struct stat st;
    ASSERT_EQ(stat(dir.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u);
    // moss-init's connection arrives on <socket>_1124.
    EXPECT_GE((*p)->dial_listener(), 0);
    EXPECT_TRUE(fs::exists(dir + "/vsock_1124"));
    (*p)->close_dial_listener();
    EXPECT_FALSE(fs::exists(dir + "/vsock_1124"));
    // A second VM meanwhile gets another CID and another directory.
    auto q = Plan::prepare(d.cids, d.runtime, "", 0);
    ASSERT_TRUE(q.ok()) << q.error().message;
    EXPECT_NE((*q)->cid(), cid);
    EXPECT_LT((*q)->dial_listener(), 0);
  }
  EXPECT_FALSE(fs::exists(dir));
}

TEST(VmVsock, GivenSocketPathsAreMadeAbsoluteAndChecked) {
  Dirs d;
  std::string cwd = fs::current_path().string();
  fs::current_path(d.root);
  auto p = Plan::prepare(d.cids, d.runtime, "vm.sock", 0);
  fs::current_path(cwd);
  ASSERT_TRUE(p.ok()) << p.error().message;
  EXPECT_EQ((*p)->socket_path(), d.root.string() + "/vm.sock");
  EXPECT_FALSE(fs::exists(d.runtime)) << "a given socket needs no runtime directory";

  std::string missing = (d.root / "missing" / "vm.sock").string();
  auto m = Plan::prepare(d.cids, d.runtime, missing, 0);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().message, "the directory of the vsock socket " + missing + " does not exist");

  std::string long_path = d.root.string() + "/" + std::string(120, 'x');
  auto l = Plan::prepare(d.cids, d.runtime, long_path, 0);
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.error().message.find("is longer than 96 bytes"), std::string::npos) << l.error().message;
}

TEST(VmVsock, ALiveListenerOnTheDialSocketIsRefused) {
  Dirs d;
  std::string sock = (d.root / "vm.sock").string();
  auto first = Plan::prepare(d.cids, d.runtime, sock, 1124);
  ASSERT_TRUE(first.ok()) << first.error().message;
  auto second = Plan::prepare(d.cids, d.runtime, sock, 1124);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().message, "another process is already listening on " + sock + "_1124");
  EXPECT_TRUE(fs::exists(sock + "_1124")) << "the refused plan removed the first one's socket";
}

}  // namespace
}  // namespace moss::vmvsock
