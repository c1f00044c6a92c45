// The host side of hybrid vsock (Firecracker's and cloud-hypervisor's convention), pure:
//   - a host program connects to the worker's Unix socket P and sends "CONNECT <port>\n"; the
//     worker answers "OK <host port>\n" once the guest accepted on vsock port <port>, or closes
//     the connection if it refused; then bytes flow both ways;
//   - a guest connecting to host port N reaches the Unix socket "P_N".
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.h"

namespace moss::vsock {

// "CONNECT 4294967295\r\n" is 20 bytes; anything longer without a newline is not a request.
inline constexpr size_t kMaxConnectLine = 32;
// "OK 4294967295\n".
inline constexpr size_t kMaxOkLine = 14;

// `line` is one line up to and including its '\n' ("\r\n" is accepted too): the port, or an
// Error saying what is wrong. Exactly "CONNECT", one space, 1 to 10 decimal digits of a port
// below 2^32.
Result<uint32_t> parse_connect_line(std::string_view line);

std::string ok_line(uint32_t host_port);  // "OK 1073741824\n"

// Where a guest connection to host port `port` goes: "<uds_path>_<port>".
std::string guest_port_path(const std::string& uds_path, uint32_t port);

}  // namespace moss::vsock
