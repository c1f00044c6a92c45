#include "ipc/channel.h"

#include <sys/socket.h>

#include <cstring>

#include <kj/exception.h>

#include "base/syscall.h"

namespace moss::ipc {

Packet::Packet(std::vector<capnp::word> words, size_t nbytes) : words_(std::move(words)) {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = kMaxPacketBytes / sizeof(capnp::word) * 4;
  options.nestingLimit = 32;
  reader_ = std::make_unique<capnp::FlatArrayMessageReader>(
      kj::ArrayPtr<const capnp::word>(words_.data(), nbytes / sizeof(capnp::word)), options);
}

Result<std::unique_ptr<Packet>> decode_packet(std::span<const uint8_t> bytes) {
  if (bytes.size() < 8 || bytes.size() % sizeof(capnp::word) != 0) {
    return make_error("control message has a bad length (" + std::to_string(bytes.size()) + " bytes)");
  }
  if (bytes.size() > kMaxPacketBytes) return make_error("control message is too large");
  // Check the segment table ourselves so the reader cannot throw on truncation.
  uint32_t nseg_minus_1;
  std::memcpy(&nseg_minus_1, bytes.data(), 4);
  if (nseg_minus_1 >= 64) return make_error("control message has too many segments");
  uint64_t nseg = nseg_minus_1 + 1;
  uint64_t table_words = (nseg / 2) + 1;  // (4 + 4*nseg) bytes rounded up to a word.
  if (table_words * 8 > bytes.size()) return make_error("control message segment table is truncated");
  uint64_t total = table_words;
  for (uint64_t i = 0; i < nseg; i++) {
    uint32_t seg_words;
    std::memcpy(&seg_words, bytes.data() + 4 + 4 * i, 4);
    total += seg_words;
  }
  if (total * 8 != bytes.size()) return make_error("control message segment sizes do not match its length");
  std::vector<capnp::word> words(bytes.size() / sizeof(capnp::word));
  std::memcpy(words.data(), bytes.data(), bytes.size());
  // Pointers inside are bounds-checked lazily by Cap'n Proto on access; callers read fields
  // inside a kj exception boundary (see with_message()).
  std::unique_ptr<Packet> p;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] { p = std::make_unique<Packet>(std::move(words), bytes.size()); })) {
    return make_error(std::string("control message is malformed: ") + e->getDescription().cStr());
  }
  return p;
}

Result<void> send_message(int fd, capnp::MessageBuilder& message) {
  kj::Array<capnp::word> flat = capnp::messageToFlatArray(message);
  auto bytes = flat.asBytes();
  if (bytes.size() > kMaxPacketBytes) return make_error("control message too large to send");
  MOSS_TRY(ssize_t n, MOSS_SYS(::send(fd, bytes.begin(), bytes.size(), MSG_NOSIGNAL)));
  if (static_cast<size_t>(n) != bytes.size()) return make_error("control message was truncated on send");
  return {};
}

Result<std::unique_ptr<Packet>> receive_message(int fd) {
  std::vector<uint8_t> buf(kMaxPacketBytes + 8);
  MOSS_TRY(ssize_t n, MOSS_SYS(::recv(fd, buf.data(), buf.size(), MSG_TRUNC)));
  if (n == 0) return std::unique_ptr<Packet>();
  if (static_cast<size_t>(n) > kMaxPacketBytes) return make_error("control message is too large");
  return decode_packet(std::span<const uint8_t>(buf.data(), static_cast<size_t>(n)));
}

}  // namespace moss::ipc
