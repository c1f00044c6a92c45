// The spore verbs of the CLI: moss inspect, pack, unpack and store gc (store/commands.h does
// the work). Exit status: 0; 2 for bad usage; 125 when it fails (one sentence on stderr).
#pragma once

#include "broker/cli.h"

namespace moss {

int spore_command(const cli::Command& command);

}  // namespace moss
