// moss-null's command line, on the shared backend options (vhost-user/backend_cli.h:
// --socket-path or --fd, --control-fd, --print-capabilities): --capacity BYTES and
// --num-queues N. Pure: argv in, options or a one-sentence usage error out.
#pragma once

#include <span>
#include <string>

#include "base/result.h"
#include "devices/null/device.h"
#include "vhost-user/backend_cli.h"

namespace moss::null {

struct CliOptions : vhost_user::BackendArgs {
  Options device;
};

Result<CliOptions> parse_cli(std::span<const char* const> args);
std::string usage_text();
std::string capabilities_json();

// The moss-null program (worker_main). Returns the exit status: 0, 1 or 2 (bad usage).
int null_main(int argc, char** argv);

}  // namespace moss::null
