// Running moss as a user would, from tests: argv in; exit status, stdout and stderr out.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "base/child.h"
#include "base/fd.h"

namespace moss::test {

struct Outcome {
  int exit_code = -1;  // Exit status, or 128+signal like a shell.
  bool timed_out = false;
  std::string out, err;
  double seconds = 0;
};

// A started process with its stdout/stderr captured in the background.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env = {});
  ~Process();  // Kills the process group if still running.
  pid_t pid() const { return child_.pid(); }  // -1 once wait() has reaped it.
  // Waits until `needle` appears on stdout, or the timeout passes. Returns whether it did.
  bool wait_for_output(const std::string& needle, std::chrono::seconds timeout);
  Outcome wait(std::chrono::seconds timeout);
  const std::string& out() const { return out_; }

 private:
  void pump(int timeout_ms);
  ChildProcess child_;
  int out_fd_ = -1, err_fd_ = -1;
  std::string out_, err_;
  std::chrono::steady_clock::time_point start_;
};

Outcome run(const std::vector<std::string>& argv, std::chrono::seconds timeout = std::chrono::seconds(120),
            const std::map<std::string, std::string>& env = {});

// A check that every Process (and check_spawn's other callers) runs with the argv it is about
// to start, e.g. kvm_test's routing check (tests/kvm/needs.h). None by default.
void set_spawn_check(std::function<void(const std::vector<std::string>& argv)> check);
void check_spawn(const std::vector<std::string>& argv);

// Direct children of `pid`, from /proc.
std::vector<pid_t> children_of(pid_t pid);
bool process_exists(pid_t pid);

// Whether anything is at `path` (lstat: a dangling link counts).
bool path_exists(const std::string& path);
// A stream socket connected to the unix socket at `path`; invalid when nobody listens there (a
// stale socket file alone does not count).
UniqueFd connect_unix(const std::string& path);

// Paths of the build tree, from the environment CTest sets (MOSS_BUILD_DIR).
std::string build_dir();

}  // namespace moss::test
