#include "broker/cid.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <set>
#include <vector>

namespace moss::cid {
namespace {

struct CidDir {
  std::string dir = (std::filesystem::temp_directory_path() / ("moss-cid-" + std::to_string(getpid()))).string();
  CidDir() { std::filesystem::remove_all(dir); }
  ~CidDir() { std::filesystem::remove_all(dir); }
};

TEST(Cid, LowestFreeCidIsTakenAndReusedWhenReleased) {
  CidDir d;
  auto a = std::make_unique<Result<Lease>>(Lease::take(d.dir));
  auto b = Lease::take(d.dir);
  ASSERT_TRUE(a->ok() && b.ok());
  EXPECT_EQ((*a)->cid(), 3u);
  EXPECT_EQ(b->cid(), 4u);
  a.reset();
  auto c = Lease::take(d.dir);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->cid(), 3u);
  EXPECT_EQ(std::filesystem::status(d.dir).permissions() & std::filesystem::perms::all, std::filesystem::perms::all);
}

TEST(Cid, ConcurrentProcessesNeverShareACid) {
  CidDir d;
  // 8 processes take a CID at once and report it through a pipe while still holding it.
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  std::vector<pid_t> kids;
  for (int i = 0; i < 8; i++) {
    pid_t pid = fork();
    if (pid == 0) {
      auto l = Lease::take(d.dir);
      uint32_t v = l ? l->cid() : 0;
      if (write(p[1], &v, sizeof v) != sizeof v) _exit(1);
      usleep(300000);  // Hold it while the others take theirs.
      _exit(0);
    }
    kids.push_back(pid);
  }
  close(p[1]);
  std::set<uint32_t> seen;
  uint32_t v;
  while (read(p[0], &v, sizeof v) == sizeof v) {
    EXPECT_NE(v, 0u);
    EXPECT_TRUE(seen.insert(v).second) << "CID " << v << " handed out twice";
  }
  close(p[0]);
  for (pid_t k : kids) waitpid(k, nullptr, 0);
  EXPECT_EQ(seen.size(), 8u);
}

TEST(Cid, ACrashedHolderReleasesItsCid) {
  CidDir d;
  pid_t pid = fork();
  if (pid == 0) {
    auto l = Lease::take(d.dir);
    _exit(l && l->cid() == 3 ? 0 : 1);  // No destructor: the file stays, the lock dies.
  }
  int status;
  waitpid(pid, &status, 0);
  ASSERT_EQ(WEXITSTATUS(status), 0);
  auto l = Lease::take(d.dir);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->cid(), 3u);
}

}  // namespace
}  // namespace moss::cid
