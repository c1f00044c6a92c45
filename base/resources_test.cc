// Mapping and ChildProcess: what they own is gone when they are.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>

#include "base/child.h"
#include "base/mapping.h"

namespace moss {
namespace {

// Whether [addr, addr + 1) is mapped in this process (mincore fails with ENOMEM otherwise).
bool is_mapped(void* addr) {
  unsigned char vec;
  return ::mincore(addr, 1, &vec) == 0;
}

TEST(Mapping, UnmapsOnDestructionAndMovesOwnership) {
  void* addr = nullptr;
  {
    auto m = Mapping::anonymous(4096, PROT_READ | PROT_WRITE, "a test page");
    ASSERT_TRUE(m.ok()) << m.error().message;
    addr = m->get();
    std::memset(m->bytes(), 0xab, m->size());
    Mapping moved = std::move(*m);
    EXPECT_FALSE(m->valid());
    EXPECT_EQ(moved.get(), addr);
    EXPECT_EQ(moved.size(), 4096u);
    EXPECT_TRUE(is_mapped(addr));
  }
  EXPECT_FALSE(is_mapped(addr));
}

TEST(Mapping, ReleaseLeavesTheRangeToTheCaller) {
  auto m = Mapping::anonymous(4096, PROT_READ, "a test page");
  ASSERT_TRUE(m.ok());
  void* addr = m->release();
  EXPECT_FALSE(m->valid());
  m = Mapping::anonymous(4096, PROT_READ, "another page");  // Replacing an empty one is fine.
  EXPECT_TRUE(is_mapped(addr));
  ASSERT_EQ(::munmap(addr, 4096), 0);
}

TEST(Mapping, FailureNamesTheRange) {
  auto m = Mapping::map(4096, PROT_READ, MAP_SHARED, /*fd=*/-1, 0, "guest RAM");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().message, "cannot map guest RAM: Bad file descriptor");
  EXPECT_EQ(m.error().err, EBADF);
}

pid_t sleeper(bool own_group) {
  pid_t pid = fork();
  if (pid == 0) {
    if (own_group) setpgid(0, 0);
    pause();
    _exit(0);
  }
  return pid;
}

// A reaped child has no /proc entry; a zombie still has one.
bool exists(pid_t pid) { return std::ifstream("/proc/" + std::to_string(pid) + "/stat").good(); }

TEST(ChildProcess, DestructionKillsAndReaps) {
  pid_t pid = sleeper(false);
  ASSERT_GT(pid, 0);
  { ChildProcess child(pid); }
  EXPECT_FALSE(exists(pid));
  EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

// Alive: in /proc and not a zombie (a killed grandchild waits there for its new parent).
bool alive(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return false;
  auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}

TEST(ChildProcess, GroupLeaderTakesItsGroupAlong) {
  int ready[2];
  ASSERT_EQ(pipe2(ready, O_CLOEXEC), 0);
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    pid_t grandchild = fork();  // In the same group, not ours to reap.
    if (grandchild == 0) {
      pause();
      _exit(0);
    }
    (void)!write(ready[1], &grandchild, sizeof grandchild);
    pause();
    _exit(0);
  }
  ASSERT_GT(pid, 0);
  setpgid(pid, pid);  // Either of us may set it first.
  close(ready[1]);
  pid_t grandchild = 0;
  ASSERT_EQ(read(ready[0], &grandchild, sizeof grandchild), static_cast<ssize_t>(sizeof grandchild));
  close(ready[0]);
  ASSERT_TRUE(alive(grandchild));
  { ChildProcess child(pid, ChildProcess::Group::kGroup); }
  EXPECT_FALSE(exists(pid));
  for (int i = 0; i < 1000 && alive(grandchild); i++) usleep(1000);  // SIGKILL is not synchronous.
  EXPECT_FALSE(alive(grandchild));
}

TEST(ChildProcess, WaitReturnsTheStatusAndReleasesOwnership) {
  pid_t pid = fork();
  if (pid == 0) _exit(7);
  ChildProcess child(pid);
  auto st = child.wait();
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_TRUE(WIFEXITED(*st));
  EXPECT_EQ(WEXITSTATUS(*st), 7);
  EXPECT_FALSE(child.valid());
}

TEST(ChildProcess, TryWaitSaysStillRunningThenTheStatus) {
  ChildProcess child(sleeper(false));
  auto running = child.try_wait();
  ASSERT_TRUE(running.ok());
  EXPECT_FALSE(running->has_value());
  EXPECT_TRUE(child.valid());
  ASSERT_TRUE(child.signal(SIGTERM).ok());
  std::optional<int> st;
  while (!st) {
    auto r = child.try_wait();
    ASSERT_TRUE(r.ok()) << r.error().message;
    st = *r;
    if (!st) usleep(1000);
  }
  EXPECT_TRUE(WIFSIGNALED(*st));
  EXPECT_EQ(WTERMSIG(*st), SIGTERM);
  EXPECT_FALSE(child.valid());
}

TEST(ChildProcess, ReleasedChildIsLeftToTheCaller) {
  pid_t pid = sleeper(false);
  { ChildProcess child(pid); EXPECT_EQ(child.release(), pid); }
  EXPECT_TRUE(exists(pid));
  ::kill(pid, SIGKILL);
  int st = 0;
  ASSERT_EQ(::waitpid(pid, &st, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(st));
}

TEST(ChildProcess, WaitingForAChildNotOursIsAnError) {
  ChildProcess child(getpid());  // Not our child: waitpid says ECHILD.
  auto st = child.wait();
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().err, ECHILD);
  EXPECT_FALSE(child.valid());  // And the destructor must not kill us.
}

}  // namespace
}  // namespace moss
