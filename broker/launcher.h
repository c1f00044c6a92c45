// Starting a child process with exactly the fds it should have.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "base/result.h"

namespace moss {

struct ChildSpec {
  std::string path;                // Executable.
  std::vector<std::string> argv;   // argv[0] included.
  // fds[i] becomes fd 3+i in the child; every other fd except 0-2 is closed. stdin is
  // /dev/null; stdout and stderr are the broker's stderr (children never write to the
  // user's stdout: that carries the guest's output).
  std::vector<int> fds;
};

// Forks and execs. The child gets its own process group (so the terminal's Ctrl-C reaches
// only the broker, which shuts down in order) and dies with the broker (PR_SET_PDEATHSIG).
Result<pid_t> spawn_child(const ChildSpec& spec);

// "killed by signal 9 (SIGKILL)" / "exited with status 3".
std::string describe_wait_status(int status);

}  // namespace moss
