// moss-blk's command line (also `moss device blk ...`), following the vhost-user spec's
// "Backend program conventions": --socket-path or --fd, --print-capabilities, and for
// vhost-user-blk --blk-file and --read-only (accepted as aliases of --disk and --readonly).
// Pure: argv in, options or a one-sentence usage error out.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "base/result.h"
#include "vhost-user/backend_cli.h"

namespace moss::blk {

// The shared backend options (mode, --socket-path, --fd) and moss-blk's own.
struct CliOptions : vhost_user::BackendArgs {
  std::string disk;
  int disk_fd = -1;  // --disk-fd N: the disk, already open (a jailed worker cannot open paths).
  bool read_only = false;
  uint32_t num_queues = 1;
  std::string serial;  // Empty: derived from the disk.
};

// `args` excludes the program name. Accepts "--opt value" and "--opt=value".
Result<CliOptions> parse_cli(std::span<const char* const> args);

std::string usage_text();
// The --print-capabilities JSON (docs/interop/vhost-user.json, VHostUserBackendCapabilities).
std::string capabilities_json();

// The moss-blk program: parses argv, opens the disk, serves until the frontend (--fd), a
// signal, or the broker (--control-fd: shutdown, or closing the socket) ends it. Returns the
// exit status: 0, 1 (could not run) or 2 (bad usage).
int blk_main(int argc, char** argv);

}  // namespace moss::blk
