// The host side of hybrid vsock (Firecracker's and cloud-hypervisor's convention), pure:
//   - a host program connects to the worker's Unix socket P and sends "CONNECT <port>\n"; the
//     worker answers "OK <host port>\n" once the guest accepted on vsock port <port>, or closes
//     the connection if it refused; then bytes flow both ways;
//   - a guest connecting to host port N reaches the Unix socket "P_N".
//
// A worker whose starter connects for it (moss-vsock --connect-fd, as moss's broker starts it,
// so that its jail needs no host directory) asks for each guest connection with one packet on
// a SOCK_SEQPACKET socket, and gets one back:
//   request: u32 seq, u32 port            (8 bytes, host byte order: both ends are on one host)
//   reply:   u32 seq, i32 errno           0: connected, the socket attached (SCM_RIGHTS)
// A reply whose seq is not the last request's answers one that timed out; the worker drops it.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
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

inline constexpr size_t kConnectMessageBytes = 8;
struct ConnectRequest {
  uint32_t seq = 0;
  uint32_t port = 0;
};
struct ConnectReply {
  uint32_t seq = 0;
  int32_t error = 0;  // An errno value; 0: connected.
};
std::array<uint8_t, kConnectMessageBytes> encode_connect_request(const ConnectRequest& r);
std::array<uint8_t, kConnectMessageBytes> encode_connect_reply(const ConnectReply& r);
// Errors for anything but exactly 8 bytes; a reply's errno must be 0 to 4095.
Result<ConnectRequest> decode_connect_request(std::span<const uint8_t> packet);
Result<ConnectReply> decode_connect_reply(std::span<const uint8_t> packet);
// Sends reply `r` on the connect channel, with `fd` attached when it is not -1 (one sendmsg,
// MSG_NOSIGNAL and `flags`); the number of bytes sent, or -1 with errno.
ssize_t send_connect_reply(int channel, const ConnectReply& r, int fd, int flags = 0);

}  // namespace moss::vsock
