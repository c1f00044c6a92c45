// Starting a program for the agent: fork, set up its stdio (three pipes, or a pty as its
// controlling terminal), exec, and learn whether the exec worked before returning.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "fd.h"
#include "protocol.h"

namespace moss::agent {

// The environment every program starts with, then `extra` ("KEY=VALUE", checked by the
// protocol) added, replacing an entry with the same KEY.
std::vector<std::string> merge_env(const std::vector<std::string>& extra);

struct Child {
  pid_t pid = -1;
  // Pipes mode: our ends of the program's stdin, stdout and stderr. Pty mode: `out` is the
  // pty master (both directions), `in` and `err` are empty. All O_NONBLOCK and O_CLOEXEC.
  Fd in, out, err;
};

struct SpawnResult {
  bool ok = false;
  ErrorCode error = ErrorCode::kExecFailed;  // When !ok: kExecFailed or kResource.
  std::string message;                       // When !ok: one sentence.
  int status = 0;                            // When !ok: 127 not found, 126 cannot execute, 125 set-up.
};

// Starts `req` (already checked by the protocol). The program leads a new session (so its
// process group is its pid); in pty mode the pty is its controlling terminal, of req.rows x
// req.cols when those are not 0. Every signal disposition is reset and the signal mask cleared;
// fds other than 0-2 are not inherited. Blocks only until the program has called exec (or
// failed to; the failed child is reaped here).
SpawnResult spawn(const ExecRequest& req, Child* out);

}  // namespace moss::agent
