// The command line every vhost-user backend program shares, after the vhost-user spec's
// "Backend program conventions" (QEMU's docs/interop/vhost-user.rst): --socket-path PATH or
// --fd N, --print-capabilities, --help; "--opt value" and "--opt=value"; and moss's own
// --control-fd N (the broker's control socket, ipc/worker.capnp), common to every worker. A device parses its
// own options through the callback and checks what they need together afterwards. Pure:
// argv in, options or a one-sentence usage error out.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "base/fd.h"
#include "base/result.h"

namespace moss::vhost_user {

struct BackendArgs {
  enum class Mode { kServe, kPrintCapabilities, kHelp };
  Mode mode = Mode::kServe;
  std::string socket_path;  // Exactly one of socket_path and fd (>= 0) in kServe.
  int fd = -1;
  int control_fd = -1;  // --control-fd: the broker's control socket (SOCK_SEQPACKET); -1: none.
};

// One option on the command line, as a device's parser sees it.
class Option {
 public:
  Option(std::span<const char* const> args, size_t* i);
  const std::string& name() const { return name_; }
  Result<void> flag();                  // It takes no value.
  Result<std::string> value();          // "--opt=V", or the next argument.
  Result<std::string> path();           // A non-empty value.
  // A whole decimal value in [lo, hi]; else "NAME needs WHAT, not 'V'".
  Result<uint64_t> number(uint64_t lo, uint64_t hi, const std::string& what);
  Result<int> fd();                     // A file descriptor number.

 private:
  std::span<const char* const> args_;
  size_t* i_;
  std::string name_;
  std::optional<std::string> inline_value_;
};

// Returns whether it knew the option (and took it); errors are usage errors.
using DeviceOption = std::function<Result<bool>(Option&)>;

// Parses `args` (without the program name) into `out`, handing every option but the shared
// ones to `device_option`. In kServe it checks that exactly one of --socket-path and --fd
// was given, and that --control-fd is not the --fd socket.
Result<void> parse_backend_cli(std::span<const char* const> args, BackendArgs* out, const DeviceOption& device_option);

// The --fd socket a backend was handed, checked to be one and made close-on-exec.
Result<UniqueFd> adopt_socket(int fd, const char* option);

// What --print-capabilities prints: the JSON object of QEMU's docs/interop/vhost-user.json
// (VHostUserBackendCapabilities), e.g. {"type": "block", "features": ["read-only"]}, and a
// newline. Encoded from ipc/json.capnp's BackendCapabilities.
std::string capabilities_json(std::string_view type, std::initializer_list<std::string_view> features);

}  // namespace moss::vhost_user
