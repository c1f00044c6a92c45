// Moving one vhost-user message, with its file descriptors, over a SOCK_STREAM Unix socket.
//
// File descriptors travel as SCM_RIGHTS ancillary data attached to the message's first byte.
// A receiver owns every fd the kernel gave it (as UniqueFd), so an fd from a malformed or
// oversized message is closed, never leaked into the process. At most kMaxFds are accepted
// per message; a peer that sends more makes the receive fail (the kernel drops the excess).
//
// Both calls return once the whole message has moved: the caller polls the socket for
// readability and then receives exactly one message. A peer cannot wedge the other side with
// half a message: once a message's first byte has moved (or, for a send, from its start),
// the rest must move within kMessageDeadline, or the call fails (ETIMEDOUT) and the caller
// drops the connection. Signals do not cut the wait short; it is bounded anyway.
#pragma once

#include <optional>
#include <span>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "vhost-user/message.h"

namespace moss::vhost_user {

constexpr int kMessageDeadlineMs = 2000;

struct RawMessage {
  std::vector<uint8_t> bytes;  // Header and payload.
  std::vector<UniqueFd> fds;
};

struct Received {
  Message message;
  std::vector<UniqueFd> fds;  // In the order the sender attached them.
};

// Sends `m` with `fds` (borrowed; at most kMaxFds) attached. Never raises SIGPIPE.
Result<void> send_message(int sock, const Message& m, std::span<const int> fds = {});
// Sends pre-encoded bytes (tests use it to send malformed messages).
Result<void> send_bytes(int sock, std::span<const uint8_t> bytes, std::span<const int> fds = {});

// Reads one message's bytes and fds, checking only the header (so the payload read is
// bounded). Returns nullopt if the peer closed the connection between messages.
Result<std::optional<RawMessage>> receive_raw(int sock);

// receive_raw + decode. Any error closes the received fds.
Result<std::optional<Received>> receive_message(int sock, Direction dir);

}  // namespace moss::vhost_user
