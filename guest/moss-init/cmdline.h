// The moss guest's kernel command-line contract: what the broker appends (host side) and
// moss-init, PID 1 in the guest, reads.
//
//   moss.dial=PORT   once its agent listens, moss-init connects to the host (vsock CID 2) on
//                    PORT and serves an agent session on that connection too. `moss run` uses
//                    it: the broker learns the guest is up when the connection arrives, and
//                    runs the user's program over it (guest/agent/protocol.h).
//
// What to run is never on the command line: programs, their environment and working
// directory go over the agent protocol. If a key appears more than once the last one wins
// (kernel convention). Plain C++20 standard library only: the broker links this
// (moss_guest_cmdline) and moss-init compiles its own copy.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace moss::guest {

inline constexpr std::string_view kDialKey = "moss.dial";

// I/O port the guest writes its 32-bit exit status to (outl).
inline constexpr unsigned kExitPort = 0x5f0;
// Line printed by moss-init on the console once the guest is set up and the agent listens.
inline constexpr std::string_view kReadyMarker = "moss-init: ready";

struct GuestConfig {
  uint32_t dial_port = 0;  // 0: moss.dial absent (moss-init only listens).
};

struct ParseResult {
  bool ok = false;
  std::string error;  // one line, set iff !ok
  GuestConfig config;
};

// Parses the text of /proc/cmdline (whitespace-separated words, trailing newline allowed).
// Words other than moss.* keys are ignored. Errors: moss.dial without a port, or a port that
// is not a decimal number from 1 to 4294967295.
ParseResult parse_cmdline(std::string_view cmdline);

// The fragment the broker appends (after a space): "moss.dial=PORT".
std::string encode_dial(uint32_t port);

}  // namespace moss::guest
