// Guest-initiated connections through whoever started the worker (moss-vsock --connect-fd): the
// worker sends the guest's destination port and gets back a connected host socket, so that
// its jail needs no host directory at all (moss's broker connects to "<socket>_<port>" for it;
// the protocol is in hybrid.h).
#pragma once

#include <cstdint>

#include "base/fd.h"
#include "base/result.h"

namespace moss::vsock {

class StarterConnector {
 public:
  // How long one request may take. The broker answers from its event loop at once; this only
  // bounds how long a stalled broker can hold the worker (whose one thread waits meanwhile).
  static constexpr int kTimeoutMs = 2000;

  // `fd`: a connected SOCK_SEQPACKET socket to the starter (not owned).
  explicit StarterConnector(int fd, int timeout_ms = kTimeoutMs) : fd_(fd), timeout_ms_(timeout_ms) {}

  // A connected, non-blocking host socket for a guest connection to host port `port`, or an
  // Error (refused, nobody listening, no answer in time).
  Result<UniqueFd> connect(uint32_t port);

 private:
  int fd_;
  int timeout_ms_;
  uint32_t seq_ = 0;
};

}  // namespace moss::vsock
