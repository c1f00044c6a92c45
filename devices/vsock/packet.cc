#include "devices/vsock/packet.h"

#include <cstring>

namespace moss::vsock {
namespace {

template <typename T>
void put(std::array<uint8_t, kHeaderSize>& b, size_t off, T v) {
  for (size_t i = 0; i < sizeof(T); i++) b[off + i] = static_cast<uint8_t>(static_cast<uint64_t>(v) >> (8 * i));
}

template <typename T>
T get(std::span<const uint8_t, kHeaderSize> b, size_t off) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); i++) v |= static_cast<uint64_t>(b[off + i]) << (8 * i);
  return static_cast<T>(v);
}

Parsed refuse(Refusal r, std::optional<PacketHeader> h, std::string message) {
  return Parsed{std::nullopt, Rejection{r, h, std::move(message)}};
}

}  // namespace

const char* op_name(uint16_t op) {
  switch (static_cast<Op>(op)) {
    case Op::kInvalid: return "INVALID";
    case Op::kRequest: return "REQUEST";
    case Op::kResponse: return "RESPONSE";
    case Op::kRst: return "RST";
    case Op::kShutdown: return "SHUTDOWN";
    case Op::kRw: return "RW";
    case Op::kCreditUpdate: return "CREDIT_UPDATE";
    case Op::kCreditRequest: return "CREDIT_REQUEST";
  }
  return "an unknown op";
}

const char* refusal_name(Refusal r) {
  switch (r) {
    case Refusal::kNoHeader: return "no-header";
    case Refusal::kWritableBuffers: return "writable-buffers";
    case Refusal::kType: return "type";
    case Refusal::kOp: return "op";
    case Refusal::kSrcCid: return "src-cid";
    case Refusal::kDstCid: return "dst-cid";
    case Refusal::kLengthPastChain: return "length-past-chain";
    case Refusal::kLengthTooLarge: return "length-too-large";
    case Refusal::kPayloadOnControl: return "payload-on-control";
    case Refusal::kShutdownFlags: return "shutdown-flags";
  }
  return "?";
}

std::array<uint8_t, kHeaderSize> encode_header(const PacketHeader& h) {
  std::array<uint8_t, kHeaderSize> b{};
  put<uint64_t>(b, 0, h.src_cid);
  put<uint64_t>(b, 8, h.dst_cid);
  put<uint32_t>(b, 16, h.src_port);
  put<uint32_t>(b, 20, h.dst_port);
  put<uint32_t>(b, 24, h.len);
  put<uint16_t>(b, 28, h.type);
  put<uint16_t>(b, 30, h.op);
  put<uint32_t>(b, 32, h.flags);
  put<uint32_t>(b, 36, h.buf_alloc);
  put<uint32_t>(b, 40, h.fwd_cnt);
  return b;
}

PacketHeader decode_header(std::span<const uint8_t, kHeaderSize> b) {
  PacketHeader h;
  h.src_cid = get<uint64_t>(b, 0);
  h.dst_cid = get<uint64_t>(b, 8);
  h.src_port = get<uint32_t>(b, 16);
  h.dst_port = get<uint32_t>(b, 20);
  h.len = get<uint32_t>(b, 24);
  h.type = get<uint16_t>(b, 28);
  h.op = get<uint16_t>(b, 30);
  h.flags = get<uint32_t>(b, 32);
  h.buf_alloc = get<uint32_t>(b, 36);
  h.fwd_cnt = get<uint32_t>(b, 40);
  return h;
}

Parsed parse_packet(const virtio::DescriptorChain& chain, uint64_t guest_cid) {
  virtio::ChainReader reader(chain);
  std::array<uint8_t, kHeaderSize> raw;
  if (!reader.read(raw).ok()) {
    return refuse(Refusal::kNoHeader, std::nullopt,
                  "a transmit buffer of " + std::to_string(chain.readable_bytes) + " readable bytes has no room for the " +
                      std::to_string(kHeaderSize) + "-byte packet header");
  }
  // One copy: every check below and everything the device does use these values.
  const PacketHeader h = decode_header(raw);
  const std::string what = std::string(op_name(h.op)) + " from guest port " + std::to_string(h.src_port) +
                           " to host port " + std::to_string(h.dst_port);
  if (chain.writable_bytes != 0) {
    return refuse(Refusal::kWritableBuffers, h, what + " has device-writable buffers in a transmit chain");
  }
  if (h.type != kTypeStream) {
    return refuse(Refusal::kType, h, what + " has socket type " + std::to_string(h.type) + " (only STREAM, 1, is offered)");
  }
  if (h.op == static_cast<uint16_t>(Op::kInvalid) || h.op > static_cast<uint16_t>(Op::kCreditRequest)) {
    return refuse(Refusal::kOp, h, "a packet from guest port " + std::to_string(h.src_port) + " has op " + std::to_string(h.op));
  }
  if (h.src_cid != guest_cid) {
    return refuse(Refusal::kSrcCid, h, what + " claims source CID " + std::to_string(h.src_cid) + ", not the guest's " +
                                           std::to_string(guest_cid));
  }
  if (h.dst_cid != kHostCid) {
    return refuse(Refusal::kDstCid, h, what + " is addressed to CID " + std::to_string(h.dst_cid) + ", not the host (2)");
  }
  if (h.len > kMaxPayload) {
    return refuse(Refusal::kLengthTooLarge, h, what + " has len " + std::to_string(h.len) + ", more than " +
                                                   std::to_string(kMaxPayload));
  }
  if (h.len > reader.remaining()) {
    return refuse(Refusal::kLengthPastChain, h, what + " has len " + std::to_string(h.len) + " but the chain holds " +
                                                    std::to_string(reader.remaining()) + " bytes after the header");
  }
  if (h.len != 0 && h.op != static_cast<uint16_t>(Op::kRw)) {
    return refuse(Refusal::kPayloadOnControl, h, what + " carries " + std::to_string(h.len) + " payload bytes");
  }
  if (h.op == static_cast<uint16_t>(Op::kShutdown) && (h.flags & ~kShutdownBoth) != 0) {
    return refuse(Refusal::kShutdownFlags, h, what + " has unknown flags " + std::to_string(h.flags));
  }
  Packet p;
  p.header = h;
  if (h.len > 0) {
    auto spans = reader.take(h.len);
    MOSS_ASSERT(spans.ok());  // len <= remaining was checked.
    p.payload = std::move(*spans);
  }
  // Readable bytes beyond len are ignored: the spec bounds the payload by len, not by the
  // buffer, and a driver may offer a larger buffer than it fills.
  return Parsed{std::move(p), std::nullopt};
}

}  // namespace moss::vsock
