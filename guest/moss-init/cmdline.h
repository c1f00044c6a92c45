// moss guest command-line contract: encoding (host side) and decoding
// (moss-init, PID 1 in the guest) of the program to run in the guest.
//
// The host appends to the kernel command line:
//   moss.argv=HEX   argv strings, each terminated by a NUL byte, hex-encoded
//   moss.env=HEX    optional, K=V strings, same encoding
//   moss.cwd=HEX    optional, exactly one string (the working directory),
//                   same encoding
// e.g. {"sh", "-c", "exit 7"} -> "moss.argv=7368002d630065786974203700".
// Encoding emits lowercase hex; decoding accepts both cases. If a key appears
// more than once the last occurrence wins (kernel convention), so a later
// append overrides an earlier one.
//
// Plain C++20 standard library only: this file is shared by the host (the
// broker links the `moss_guest_cmdline` static library) and the guest init.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace moss::guest {

// Kernel command-line keys.
inline constexpr std::string_view kArgvKey = "moss.argv";
inline constexpr std::string_view kEnvKey = "moss.env";
inline constexpr std::string_view kCwdKey = "moss.cwd";

// I/O port the guest writes its 32-bit exit status to (outl).
inline constexpr unsigned kExitPort = 0x5f0;
// Line printed by moss-init on the console once the guest is set up.
inline constexpr std::string_view kReadyMarker = "moss-init: ready";

struct GuestCommand {
  bool has_argv = false;          // false: no moss.argv (moss-init serves the agent only)
  std::vector<std::string> argv;  // non-empty iff has_argv
  std::vector<std::string> env;   // "K=V" entries (added to the defaults)
  std::string cwd;                // empty: "/"
};

struct ParseResult {
  bool ok = false;
  std::string error;  // one line, set iff !ok
  GuestCommand command;
};

// Parses the text of /proc/cmdline (whitespace separated words, trailing
// newline allowed). Words other than moss.argv/env/cwd are ignored.
// Errors: bad hex digit, odd length, missing trailing NUL, empty argv
// (moss.argv present but empty), empty argv[0], env entry without '=',
// moss.cwd not exactly one non-empty string.
ParseResult parse_cmdline(std::string_view cmdline);

// Decodes one value (the HEX part) into its NUL-terminated strings.
// Returns false and sets *error on failure. An empty value yields no strings.
bool decode_strings(std::string_view hex, std::vector<std::string>* out,
                    std::string* error);

// Encodes strings as lowercase hex, each string followed by a NUL byte.
// Strings must not contain NUL bytes (they would be split when decoded).
std::string encode_strings(const std::vector<std::string>& strings);

// The HEX value of moss.argv for `argv` (same as encode_strings).
inline std::string encode_argv(const std::vector<std::string>& argv) {
  return encode_strings(argv);
}

// Full kernel command-line fragment, e.g.
//   "moss.argv=... moss.env=... moss.cwd=..."
// moss.env is omitted when env is empty and moss.cwd when cwd is empty.
// Append it (after a space) to the rest of the kernel command line. Note the
// x86 kernel command line is limited to 2048 bytes in total (COMMAND_LINE_SIZE)
// and hex doubles the size of the strings.
std::string encode_cmdline(const std::vector<std::string>& argv,
                           const std::vector<std::string>& env = {},
                           std::string_view cwd = {});

}  // namespace moss::guest
