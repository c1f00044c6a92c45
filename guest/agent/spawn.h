// Starting a program for the agent: fork, set up its stdio (three pipes, or a pty as its
// controlling terminal), exec, and learn whether the exec worked before returning.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "guest/agent/protocol.h"

namespace moss::agent {

// The environment every program starts with, then `extra` ("KEY=VALUE", checked by the
// protocol) added, replacing an entry with the same KEY.
std::vector<std::string> merge_env(const std::vector<std::string>& extra);

struct Child {
  pid_t pid = -1;
  // Pipes mode: our ends of the program's stdin, stdout and stderr. Pty mode: `out` is the
  // pty master (both directions), `in` and `err` are empty. All O_NONBLOCK and O_CLOEXEC.
  UniqueFd in, out, err;
};

// The exit status reported for a program that could not be started.
inline constexpr int kStatusNotFound = 127;     // Not found (or no such working directory).
inline constexpr int kStatusCannotExec = 126;   // Found, but could not be executed.
inline constexpr int kStatusSetupFailed = 125;  // The agent could not set it up (fork, pipe, pty).

// Starts `req` (already checked by the protocol). The program leads a new session (so its
// process group is its pid); in pty mode the pty is its controlling terminal, of req.rows x
// req.cols when those are not 0. Every signal disposition is reset and the signal mask cleared;
// fds other than 0-2 are not inherited. Blocks only until the program has called exec (or
// failed to; the failed child is reaped here). On failure the Error is one sentence and
// *failure_status one of the kStatus values above.
Result<Child> spawn(const ExecRequest& req, int* failure_status);

// The protocol's code for a failure_status: kResource for kStatusSetupFailed, else kExecFailed.
inline ErrorCode spawn_error_code(int failure_status) {
  return failure_status == kStatusSetupFailed ? ErrorCode::kResource : ErrorCode::kExecFailed;
}

}  // namespace moss::agent
