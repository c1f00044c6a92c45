// The vhost-user wire format (docs/interop/vhost-user.rst in QEMU): a pure codec shared by the
// frontend and the backend. No I/O here: socket.h moves bytes and fds, this file gives them
// meaning.
//
// A message is a 12-byte header {request, flags, size} and `size` payload bytes, with up to 8
// file descriptors in the ancillary data. decode() checks the header, the exact payload size
// for the request and the number of fds the request may carry before it reads any field, so a
// peer can never make us read past its bytes or keep fds we do not expect.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <variant>
#include <vector>

#include "base/result.h"

namespace moss::vhost_user {

// Front-end requests (ids from the spec's "Front-end message types").
enum class Request : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,
  kSetMemTable = 5,
  kSetLogBase = 6,
  kSetLogFd = 7,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kSetVringErr = 14,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
  kSendRarp = 19,
  kNetSetMtu = 20,
  kSetBackendReqFd = 21,
  kIotlbMsg = 22,
  kSetVringEndian = 23,
  kGetConfig = 24,
  kSetConfig = 25,
  kCreateCryptoSession = 26,
  kCloseCryptoSession = 27,
  kPostcopyAdvise = 28,
  kPostcopyListen = 29,
  kPostcopyEnd = 30,
  kGetInflightFd = 31,
  kSetInflightFd = 32,
  kGpuSetSocket = 33,
  kResetDevice = 34,
  kVringKick = 35,
  kGetMaxMemSlots = 36,
  kAddMemReg = 37,
  kRemMemReg = 38,
  kSetStatus = 39,
  kGetStatus = 40,
  kGetSharedObject = 41,
  kSetDeviceStateFd = 42,
  kCheckDeviceState = 43,
};

// "SET_VRING_KICK" etc., for error messages; "request 99" for ids the spec does not define.
const char* request_name(Request r);

// Protocol feature bit numbers (the spec's "Protocol features").
namespace protocol_feature {
constexpr int kMq = 0;
constexpr int kLogShmfd = 1;
constexpr int kRarp = 2;
constexpr int kReplyAck = 3;
constexpr int kMtu = 4;
constexpr int kBackendReq = 5;
constexpr int kCrossEndian = 6;
constexpr int kCryptoSession = 7;
constexpr int kPagefault = 8;
constexpr int kConfig = 9;
constexpr int kBackendSendFd = 10;
constexpr int kHostNotifier = 11;
constexpr int kInflightShmfd = 12;
constexpr int kResetDevice = 13;
constexpr int kInbandNotifications = 14;
constexpr int kConfigureMemSlots = 15;
constexpr int kStatus = 16;
constexpr int kXenMmap = 17;
constexpr int kSharedObject = 18;
constexpr int kDeviceState = 19;
}  // namespace protocol_feature

constexpr uint64_t bit(int n) { return uint64_t{1} << n; }

// Virtio feature bit 30, reused by vhost-user to say "GET/SET_PROTOCOL_FEATURES work".
constexpr int kFeatureProtocolFeatures = 30;

constexpr size_t kHeaderSize = 12;
constexpr size_t kMaxPayload = 4096;   // Larger than any defined payload; bounds every read.
constexpr size_t kMaxFds = 8;          // The spec's limit per message.
constexpr size_t kMaxMemTableRegions = 8;
constexpr size_t kMaxConfigSize = 256;

// Header flags.
constexpr uint32_t kVersion = 0x1;
constexpr uint32_t kVersionMask = 0x3;
constexpr uint32_t kFlagReply = 0x4;
constexpr uint32_t kFlagNeedReply = 0x8;

// SET_VRING_KICK/CALL/ERR u64: bits 0-7 the vring index, bit 8 "no fd attached".
constexpr uint64_t kVringIndexMask = 0xff;
constexpr uint64_t kVringNoFd = 0x100;
// SET_DEVICE_STATE_FD reply u64: bits 0-7 an error code, bit 8 "no fd returned".
constexpr uint64_t kDeviceStateErrorMask = 0xff;
constexpr uint64_t kDeviceStateNoFd = 0x100;

struct Header {
  uint32_t request = 0;
  uint32_t flags = 0;
  uint32_t size = 0;
};

// Payloads. Field order and widths are the wire's; padding is implicit in encode/decode.
struct Empty {
  bool operator==(const Empty&) const = default;
};
// SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE (both ways), SET_VRING_ENDIAN, VRING_KICK.
struct VringState {
  uint32_t index = 0;
  uint32_t num = 0;
  bool operator==(const VringState&) const = default;
};
// Ring addresses are frontend user (virtual) addresses, not guest physical ones; log is a
// guest physical address.
struct VringAddr {
  uint32_t index = 0;
  uint32_t flags = 0;  // Bit 0: VHOST_VRING_F_LOG.
  uint64_t desc = 0;
  uint64_t used = 0;
  uint64_t avail = 0;
  uint64_t log = 0;
  bool operator==(const VringAddr&) const = default;
};
struct MemoryRegion {
  uint64_t guest_phys_addr = 0;
  uint64_t memory_size = 0;
  uint64_t userspace_addr = 0;
  uint64_t mmap_offset = 0;
  bool operator==(const MemoryRegion&) const = default;
};
// SET_MEM_TABLE: {u32 num_regions, u32 padding, num_regions * region}; one fd per region.
struct MemoryTable {
  std::vector<MemoryRegion> regions;  // At most kMaxMemTableRegions.
  bool operator==(const MemoryTable&) const = default;
};
// ADD_MEM_REG / REM_MEM_REG: {u64 padding, region}.
struct SingleMemoryRegion {
  MemoryRegion region;
  bool operator==(const SingleMemoryRegion&) const = default;
};
// GET_CONFIG / SET_CONFIG: {u32 offset, u32 size, u32 flags, size bytes}.
struct Config {
  uint32_t offset = 0;
  uint32_t flags = 0;          // 0: a guest write; 1: live migration.
  std::vector<uint8_t> data;   // `size` on the wire; at most kMaxConfigSize.
  bool operator==(const Config&) const = default;
};
// GET_INFLIGHT_FD / SET_INFLIGHT_FD: {u64 mmap_size, u64 mmap_offset, u16 num_queues,
// u16 queue_size}. QEMU and libvhost-user send the C struct with its 4 trailing padding bytes,
// so the wire size is 24, not the 20 the fields add up to.
struct Inflight {
  uint64_t mmap_size = 0;
  uint64_t mmap_offset = 0;
  uint16_t num_queues = 0;
  uint16_t queue_size = 0;
  bool operator==(const Inflight&) const = default;
};
// SET_DEVICE_STATE_FD: {u32 direction (0 save, 1 load), u32 phase (0 stopped)}.
struct DeviceStateTransfer {
  uint32_t direction = 0;
  uint32_t phase = 0;
  bool operator==(const DeviceStateTransfer&) const = default;
};
constexpr uint32_t kTransferSave = 0;
constexpr uint32_t kTransferLoad = 1;
constexpr uint32_t kPhaseStopped = 0;
// SET_LOG_BASE: {u64 mmap_size, u64 mmap_offset} with the log fd.
struct Log {
  uint64_t size = 0;
  uint64_t offset = 0;
  bool operator==(const Log&) const = default;
};

using Payload = std::variant<Empty, uint64_t, VringState, VringAddr, MemoryTable,
                             SingleMemoryRegion, Config, Inflight, DeviceStateTransfer, Log>;

struct Message {
  Request request = Request::kGetFeatures;
  bool reply = false;       // Sent by the backend in answer to `request`.
  bool need_reply = false;  // REPLY_ACK: the backend must answer with a u64 status.
  Payload payload;
  bool operator==(const Message&) const = default;

  template <typename T>
  const T* as() const { return std::get_if<T>(&payload); }
};

// Which side sent the bytes: requests come from the frontend, replies from the backend.
enum class Direction { kRequest, kReply };

// Checks a header alone: the version bits, that only defined flags are set, and that the
// payload size is at most kMaxPayload. The socket layer uses it to bound its next read.
Result<Header> decode_header(std::span<const uint8_t> bytes);

// Decodes one whole message (header and payload) that arrived with `nfds` descriptors.
// Requests the spec defines but moss does not model (IOTLB, crypto sessions, shared objects)
// and ids the spec does not define are Errors, as is any size or fd count other than the one
// the request allows.
Result<Message> decode(std::span<const uint8_t> bytes, size_t nfds, Direction dir);

// The wire bytes of `m` (header and payload). `m` must be well formed (at most 8 regions, at
// most 256 config bytes); anything else is a bug in the caller.
std::vector<uint8_t> encode(const Message& m);

// Convenience constructors.
Message make_request(Request r, Payload p = Empty{}, bool need_reply = false);
Message make_reply(Request r, Payload p = Empty{});

}  // namespace moss::vhost_user
