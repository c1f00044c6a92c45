// ChildProcess: sole owner of a child's pid. Unless released or waited for, destruction kills
// it (SIGKILL; its process group too when it leads one, as told at construction) and reaps
// it, so no error path leaves a zombie or a stray process behind.
//
//   pid_t pid = fork(); ... ChildProcess child(pid);
//   MOSS_TRY(int status, child.wait());   // or: return an error, and the child is killed
#pragma once

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <optional>
#include <string>
#include <utility>

#include "base/result.h"

namespace moss {

class ChildProcess {
 public:
  enum class Group { kProcess, kGroup };  // kGroup: the child leads its process group.

  ChildProcess() = default;
  explicit ChildProcess(pid_t pid, Group group = Group::kProcess) : pid_(pid), group_(group) {}
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ChildProcess(ChildProcess&& o) noexcept : pid_(std::exchange(o.pid_, -1)), group_(o.group_) {}
  ChildProcess& operator=(ChildProcess&& o) noexcept {
    if (this != &o) {
      reset();
      pid_ = std::exchange(o.pid_, -1);
      group_ = o.group_;
    }
    return *this;
  }
  ~ChildProcess() { reset(); }

  pid_t pid() const { return pid_; }
  bool valid() const { return pid_ > 0; }
  explicit operator bool() const { return valid(); }

  // Gives up ownership: the caller reaps.
  pid_t release() { return std::exchange(pid_, -1); }

  // Sends `sig` to the child (and its group with Group::kGroup). Nothing to do once reaped.
  Result<void> signal(int sig) const {
    if (pid_ <= 0) return {};
    if (group_ == Group::kGroup) ::kill(-pid_, sig);  // The group may be gone already.
    if (::kill(pid_, sig) != 0) return sys_error("signal", "process " + std::to_string(pid_));
    return {};
  }

  // Waits for the child to end (EINTR retried) and returns its wait status; empty afterwards.
  Result<int> wait() {
    MOSS_ASSERT(pid_ > 0);
    int status = 0;
    for (;;) {
      pid_t r = ::waitpid(pid_, &status, 0);
      if (r == pid_) break;
      if (r < 0 && errno == EINTR) continue;
      Error e = sys_error("wait for", "process " + std::to_string(pid_));
      pid_ = -1;  // Not ours to reap (ECHILD): someone else did.
      return e;
    }
    pid_ = -1;
    return status;
  }

  // Without blocking: the wait status if the child has ended (then empty), nullopt if it runs.
  Result<std::optional<int>> try_wait() {
    MOSS_ASSERT(pid_ > 0);
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == 0) return std::optional<int>();
    if (r < 0) {
      Error e = sys_error("wait for", "process " + std::to_string(pid_));
      pid_ = -1;
      return e;
    }
    pid_ = -1;
    return std::optional<int>(status);
  }

  // Kills (SIGKILL) and reaps the child, if there is one.
  void reset() {
    if (pid_ <= 0) return;
    (void)signal(SIGKILL);
    (void)wait();
  }

 private:
  pid_t pid_ = -1;
  Group group_ = Group::kProcess;
};

}  // namespace moss
