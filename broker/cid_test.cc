#include "broker/cid.h"

#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <signal.h>
#include <fcntl.h>
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
  privdir::Dir open() const {
    auto d = privdir::Dir::open(dir, "vsock CID directory", true);
    EXPECT_TRUE(d.ok()) << d.error().message;
    return d.ok() ? std::move(*d) : privdir::Dir();
  }
};

TEST(Cid, LowestFreeCidIsTakenAndReusedWhenReleased) {
  CidDir d;
  privdir::Dir dir = d.open();
  auto a = std::make_unique<Result<Lease>>(Lease::take(dir));
  auto b = Lease::take(dir);
  ASSERT_TRUE(a->ok() && b.ok());
  EXPECT_EQ((*a)->cid(), 3u);
  EXPECT_EQ(b->cid(), 4u);
  a.reset();
  auto c = Lease::take(dir);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->cid(), 3u);
  // The lease directory is the user's alone.
  EXPECT_EQ(std::filesystem::status(d.dir).permissions() & std::filesystem::perms::all, std::filesystem::perms::owner_all);
}

TEST(Cid, ConcurrentProcessesNeverShareACid) {
  CidDir d;
  privdir::Dir dir = d.open();
  // 8 processes take a CID at once and report it through a pipe while still holding it.
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  std::vector<pid_t> kids;
  for (int i = 0; i < 8; i++) {
    pid_t pid = fork();
    if (pid == 0) {
      auto l = Lease::take(dir);
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
  privdir::Dir dir = d.open();
  pid_t pid = fork();
  if (pid == 0) {
    auto l = Lease::take(dir);
    _exit(l && l->cid() == 3 ? 0 : 1);  // No destructor: the file stays, the lock dies.
  }
  int status;
  waitpid(pid, &status, 0);
  ASSERT_EQ(WEXITSTATUS(status), 0);
  auto l = Lease::take(dir);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->cid(), 3u);
}

// Finding 2 of the security review: one local user held an flock on every lease file of the
// shared, world-writable CID directory (or, without any process, pre-created it), and every
// other user's `moss run` failed. Leases are now per user, in the user's own 0700 directory.
TEST(Cid, AnotherUserCanNeitherSquatNorExhaustThisUsersCids) {
  if (geteuid() != 0) GTEST_SKIP() << "SKIP: acting as another user takes root";
  CidDir d;
  privdir::Dir dir = d.open();
  std::string attacker_dir = d.dir + "-attacker";
  std::filesystem::remove_all(attacker_dir);
  ASSERT_EQ(mkdir(attacker_dir.c_str(), 0700), 0);
  ASSERT_EQ(chown(attacker_dir.c_str(), 65534, 65534), 0);
  // "nobody" holds every CID in her own lease directory, and tries to reach ours.
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t attacker = fork();
  if (attacker == 0) {
    close(ready[0]);
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(2);
    auto hers = privdir::Dir::open(attacker_dir, "vsock CID directory", false);
    if (!hers) _exit(3);
    std::vector<UniqueFd> held;
    for (uint32_t cid = kFirstGuestCid; cid <= kFirstGuestCid + 64; cid++) {
      auto f = hers->open_file(std::to_string(cid) + ".lock", O_RDWR | O_CREAT, 0644);
      if (!f || flock(f->get(), LOCK_EX | LOCK_NB) != 0) _exit(4);
      held.push_back(std::move(*f));
    }
    // Ours is closed to her: she can neither create a lease file there nor open one.
    int fd = open((d.dir + "/3.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0 || errno != EACCES) _exit(5);
    if (write(ready[1], "k", 1) != 1) _exit(6);
    pause();
    _exit(0);
  }
  close(ready[1]);
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1) << "the attacker could not get going";
  close(ready[0]);
  auto ours = Lease::take(dir);
  ASSERT_TRUE(ours.ok()) << ours.error().message;
  EXPECT_EQ(ours->cid(), kFirstGuestCid);
  kill(attacker, SIGKILL);
  int status;
  waitpid(attacker, &status, 0);
  // A lease directory that is hers is refused with a sentence, never used.
  auto theirs = privdir::Dir::open(attacker_dir, "vsock CID directory", true);
  ASSERT_FALSE(theirs.ok());
  EXPECT_EQ(theirs.error().message, "the vsock CID directory " + attacker_dir +
                                        " belongs to another user (uid 65534), not to you (uid 0)");
  std::filesystem::remove_all(attacker_dir);
}

}  // namespace
}  // namespace moss::cid
