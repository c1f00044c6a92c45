// Starting a child process: jailed, with exactly the fds it should have.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "broker/jail.h"
#include "policies/sandbox.h"

namespace moss {

struct ChildSpec {
  std::string path;                // Executable.
  std::vector<std::string> argv;   // argv[0] included.
  // The fds the child keeps, each at the number pass_fd() returned for it; every other fd
  // except 0-2 is closed (the sandbox's report pipe comes after them: fds.next()). stdin is
  // /dev/null; stdout and stderr are `stderr_fd` (default: the broker's stderr; children never
  // write to the user's stdout: that carries the guest's output).
  sandbox::PassedFds fds;
  int stderr_fd = 2;
  // Required: every child is jailed (unless sandbox.enabled is false: --no-sandbox).
  jail::Sandbox sandbox;
  // How long the child may take from spawn to having entered its sandbox.
  int enter_timeout_ms = 30000;

  // Gives the child `fd` (still open in the broker when spawn_child() runs); returns the
  // number it has in the child. The only way to pass one: put that number in the argv or
  // the start message, never a literal.
  int pass_fd(int fd) { return fds.pass(fd); }
};

// The one way moss starts a child. It gets its own process group (so the terminal's Ctrl-C
// reaches only the broker, which shuts down in order) and dies with the broker
// (PR_SET_PDEATHSIG), with only the environment child_environment() keeps. Jailed (the
// default), it is cloned into new user (root mapped to the
// broker's uid and gid), mount, pid, ipc, uts, cgroup and network namespaces, with
// spec.sandbox's rlimits and no_new_privs, then exec'd; its main() finishes the jail
// (moss::sandbox::enter: empty root, no capabilities, seccomp) and reports on a pipe.
//
// Returns once the child has entered its sandbox, with its pid (as the broker sees it).
// A child that exits, fails to jail itself or does not report in time is killed and reaped,
// and the error says why in one sentence; when the child exited on its own, with err ECHILD
// and its wait status in *exit_status (if given).
Result<pid_t> spawn_child(const ChildSpec& spec, int* exit_status = nullptr);

// The only variables of the broker's environment a child gets (the user's may hold secrets,
// and a child is where a guest that breaks a parser ends up): MOSS_LOG (the log level); the
// sandbox test hooks MOSS_TEST_PROBE, MOSS_TEST_FORBIDDEN_SYSCALL (policies/probes.h; a build
// without MOSS_TEST_HOOKS ignores them) and MOSS_SECCOMP_TRAP (policies/sandbox.h; only Debug
// builds honour it); and
// in a sanitizer build only, ASAN_OPTIONS, UBSAN_OPTIONS and LSAN_OPTIONS (the leak check at
// exit needs ptrace, which the sandbox forbids: a jailed child's ASAN_OPTIONS gets
// detect_leaks=0).
std::vector<std::string_view> child_environment_names();

// A child's whole environment: the variables of `env` (the broker's, NULL-terminated) named in
// child_environment_names(), then sandbox::kEnv describing `launch`.
std::vector<std::string> child_environment(char* const* env, const sandbox::Launch& launch);

// "killed by signal 9 (SIGKILL)" / "exited with status 3".
std::string describe_wait_status(int status);

}  // namespace moss
