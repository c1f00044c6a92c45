// virtio-vsock packets (virtio 1.2, 5.10.6): the 44-byte header, its encoder, and a pure
// parser from a transmit-queue descriptor chain to a packet or the reason it is refused. No
// socket I/O and no connection state here (connection.h has that).
//
// The parser trusts nothing in the chain: the header is copied out of guest memory once and
// every field the device acts on is checked (direction, len against the bytes the chain
// really holds and against kMaxPayload, type STREAM, a known op, src_cid the guest's CID,
// dst_cid the host, payload only on RW, known SHUTDOWN flags). A refused packet whose header
// could be read carries that header, so the device can answer it with an RST.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "devices/virtio/queue.h"

namespace moss::vsock {

inline constexpr uint64_t kHostCid = 2;  // VMADDR_CID_HOST: what the guest addresses the host as.
// CIDs 0-2 are reserved (hypervisor, local, host) and U32_MAX is VMADDR_CID_ANY; Linux keeps
// CIDs in 32 bits although the config field is 64.
inline constexpr uint64_t kMinGuestCid = 3;
inline constexpr uint64_t kMaxGuestCid = 0xfffffffe;

inline constexpr uint32_t kHeaderSize = 44;
// The largest payload accepted in one guest packet: Linux never sends more
// (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE), and the credit check bounds every packet anyway.
inline constexpr uint32_t kMaxPayload = 64 * 1024;

// Queue indexes (5.10.2).
inline constexpr uint32_t kRxQueue = 0;
inline constexpr uint32_t kTxQueue = 1;
inline constexpr uint32_t kEventQueue = 2;
inline constexpr uint32_t kNumQueues = 3;

// virtio_vsock_hdr.type and .op (5.10.6).
inline constexpr uint16_t kTypeStream = 1;
inline constexpr uint16_t kTypeSeqpacket = 2;  // Not offered (no VIRTIO_VSOCK_F_SEQPACKET).
enum class Op : uint16_t {
  kInvalid = 0,
  kRequest = 1,
  kResponse = 2,
  kRst = 3,
  kShutdown = 4,
  kRw = 5,
  kCreditUpdate = 6,
  kCreditRequest = 7,
};
const char* op_name(uint16_t op);  // "RW", or "op 99" for unknown ops.

// SHUTDOWN flags: the sender will not receive / will not send any more.
inline constexpr uint32_t kShutdownRcv = 1;
inline constexpr uint32_t kShutdownSend = 2;
inline constexpr uint32_t kShutdownBoth = kShutdownRcv | kShutdownSend;

// Event queue (5.10.6.5): struct virtio_vsock_event { le32 id; }.
inline constexpr uint32_t kEventTransportReset = 0;
inline constexpr uint32_t kEventSize = 4;

// The header with fields in host order (the wire is little-endian and packed).
struct PacketHeader {
  uint64_t src_cid = 0;
  uint64_t dst_cid = 0;
  uint32_t src_port = 0;
  uint32_t dst_port = 0;
  uint32_t len = 0;  // Payload bytes after the header.
  uint16_t type = 0;
  uint16_t op = 0;
  uint32_t flags = 0;
  uint32_t buf_alloc = 0;  // The sender's receive buffer for this connection.
  uint32_t fwd_cnt = 0;    // Bytes the sender has consumed from it, modulo 2^32.
  bool operator==(const PacketHeader&) const = default;
};

std::array<uint8_t, kHeaderSize> encode_header(const PacketHeader& h);
PacketHeader decode_header(std::span<const uint8_t, kHeaderSize> bytes);

// Why a packet was refused.
enum class Refusal : uint8_t {
  kNoHeader,          // Fewer than 44 device-readable bytes: there is nothing to answer.
  kWritableBuffers,   // The chain has device-writable buffers; transmit buffers are read-only.
  kType,              // type is not STREAM.
  kOp,                // op is INVALID or unknown.
  kSrcCid,            // src_cid is not the guest's CID.
  kDstCid,            // dst_cid is not the host (2).
  kLengthPastChain,   // len is more than the readable bytes after the header.
  kLengthTooLarge,    // len is more than kMaxPayload.
  kPayloadOnControl,  // len is not 0 on an op other than RW.
  kShutdownFlags,     // SHUTDOWN with flags other than RCV and SEND.
};
const char* refusal_name(Refusal r);

struct Packet {
  PacketHeader header;
  // Exactly header.len bytes, in chain order, pointing into guest memory (the guest can
  // still change them: copy, never parse them twice).
  std::vector<std::span<const uint8_t>> payload;
};

struct Rejection {
  Refusal reason;
  std::optional<PacketHeader> header;  // Set unless kNoHeader: where an RST would go.
  std::string message;
};

// Either a packet or why it was refused. Pure.
struct Parsed {
  std::optional<Packet> packet;
  std::optional<Rejection> rejection;
};
Parsed parse_packet(const virtio::DescriptorChain& chain, uint64_t guest_cid);

}  // namespace moss::vsock
