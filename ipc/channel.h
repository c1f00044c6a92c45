// A message channel over a SOCK_SEQPACKET Unix socket: one Cap'n Proto message per packet.
//
// Packets keep message boundaries, so a reader never waits on a half-sent message from a peer
// it does not trust: a packet is decoded whole, or refused. decode_packet() is the pure
// decoder (fuzzed in fuzz/); it bounds the size and the traversal of every message.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "base/result.h"

namespace moss::ipc {

constexpr size_t kMaxPacketBytes = 256 * 1024;

// A decoded message that owns its (word-aligned) copy of the packet bytes.
class Packet {
 public:
  Packet(std::vector<capnp::word> words, size_t nbytes);
  template <typename T>
  typename T::Reader root() { return reader_->getRoot<T>(); }

 private:
  std::vector<capnp::word> words_;
  std::unique_ptr<capnp::FlatArrayMessageReader> reader_;
};

// Validates the framing and segment table of one packet and returns a reader over it. Never
// reads outside `bytes`; a malformed packet is an Error.
Result<std::unique_ptr<Packet>> decode_packet(std::span<const uint8_t> bytes);

// Sends one message as one packet. Thread-safe for concurrent senders (one sendmsg each).
Result<void> send_message(int fd, capnp::MessageBuilder& message);

// Receives one packet. Returns an empty pointer on orderly EOF.
Result<std::unique_ptr<Packet>> receive_message(int fd);

}  // namespace moss::ipc
