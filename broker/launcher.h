// Starting a child process: jailed, with exactly the fds it should have.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "base/result.h"
#include "broker/jail.h"

namespace moss {

struct ChildSpec {
  std::string path;                // Executable.
  std::vector<std::string> argv;   // argv[0] included.
  // fds[i] becomes fd 3+i in the child; every other fd except 0-2 is closed (the sandbox's
  // report pipe comes after them: fd 3+fds.size()). stdin is /dev/null; stdout and stderr are
  // `stderr_fd` (default: the broker's stderr; children never write to the user's stdout:
  // that carries the guest's output).
  std::vector<int> fds;
  int stderr_fd = 2;
  // Required: every child is jailed (unless sandbox.enabled is false: --no-sandbox).
  jail::Sandbox sandbox;
  // How long the child may take from spawn to having entered its sandbox.
  int enter_timeout_ms = 30000;
};

// The one way moss starts a child. It gets its own process group (so the terminal's Ctrl-C
// reaches only the broker, which shuts down in order) and dies with the broker
// (PR_SET_PDEATHSIG). Jailed (the default), it is cloned into new user (root mapped to the
// broker's uid and gid), mount, pid, ipc, uts, cgroup and network namespaces, with
// spec.sandbox's rlimits and no_new_privs, then exec'd; its main() finishes the jail
// (moss::sandbox::enter: empty root, no capabilities, seccomp) and reports on a pipe.
//
// Returns once the child has entered its sandbox, with its pid (as the broker sees it).
// A child that exits, fails to jail itself or does not report in time is killed and reaped,
// and the error says why in one sentence.
Result<pid_t> spawn_child(const ChildSpec& spec);

// "killed by signal 9 (SIGKILL)" / "exited with status 3".
std::string describe_wait_status(int status);

}  // namespace moss
