// moss-vsock's command line (also `moss device vsock ...`), following the vhost-user spec's
// "Backend program conventions" (--socket-path or --fd, --print-capabilities). Pure: argv in,
// options or a one-sentence usage error out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "base/result.h"
#include "vhost-user/backend_cli.h"

namespace moss::vsock {

// The longest --uds-path: guest connections to port N go to "<path>_N", and "_4294967295"
// must fit in sockaddr_un's 108 bytes with the terminating NUL.
inline constexpr size_t kMaxUdsPath = 108 - 1 - 11;

// The shared backend options (mode, --socket-path, --fd) and moss-vsock's own.
struct CliOptions : vhost_user::BackendArgs {
  uint64_t guest_cid = 0;
  std::string uds_path;
  uint32_t max_connections = 256;
  // --uds-fd N: the host programs' listener, bound and listening already (whoever started the
  // worker owns its path); otherwise the worker listens on --uds-path itself.
  int uds_fd = -1;
  // --connect-fd N: guest connections are asked for on N (hybrid.h) instead of connected to
  // "<uds-path>_N" here; then the jailed worker keeps no host directory.
  int connect_fd = -1;
};

// `args` excludes the program name. Accepts "--opt value" and "--opt=value".
Result<CliOptions> parse_cli(std::span<const char* const> args);

std::string usage_text();
// The --print-capabilities JSON (docs/interop/vhost-user.json, VHostUserBackendCapabilities).
std::string capabilities_json();

// The moss-vsock program: parses argv, listens on --uds-path (or takes --uds-fd), enters its
// sandbox when the broker's launcher started it (policies/sandbox.h: the vsock role, keeping
// --uds-path's directory unless --connect-fd makes it needless), and serves until the
// frontend (--fd) or a signal ends it. Returns the exit
// status: 0, 1 (could not run) or 2 (bad usage).
int vsock_main(int argc, char** argv);

}  // namespace moss::vsock
