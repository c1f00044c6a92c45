#include "vhost-user/message.h"

#include <cstring>
#include <string>

namespace moss::vhost_user {
namespace {

// What a request's payload looks like on the wire, in one direction.
enum class Kind {
  kEmpty,
  kU64,
  kVringState,
  kVringAddr,
  kMemoryTable,
  kSingleRegion,
  kConfig,
  kConfigOrEmpty,  // GET_CONFIG reply: an empty payload is the backend's way to say "failed".
  kInflight,
  kDeviceState,
  kLog,
  kUnsupported,
};

// How many fds may come with it.
enum class Fds {
  kNone,
  kOne,
  kNoneOrOne,      // REM_MEM_REG: the spec tolerates a stray fd (which the backend closes).
  kPerRegion,      // SET_MEM_TABLE: exactly one per region.
  kUnlessNoFdBit,  // u64 with bit 8 set: none; clear: one.
  kUnlessEmpty,    // GET_INFLIGHT_FD reply: none when mmap_size is 0 (the backend failed).
};

struct Layout {
  Kind kind;
  Fds fds;
};

constexpr size_t kRegionBytes = 32;
constexpr size_t kMemTableHeaderBytes = 8;
constexpr size_t kSingleRegionBytes = 8 + kRegionBytes;
constexpr size_t kConfigHeaderBytes = 12;
constexpr size_t kInflightBytes = 24;
constexpr size_t kVringAddrBytes = 40;

Result<Layout> request_layout(Request r) {
  using R = Request;
  switch (r) {
    case R::kGetFeatures:
    case R::kSetOwner:
    case R::kResetOwner:
    case R::kGetProtocolFeatures:
    case R::kGetQueueNum:
    case R::kResetDevice:
    case R::kGetMaxMemSlots:
    case R::kGetStatus:
    case R::kCheckDeviceState:
    case R::kPostcopyAdvise:
    case R::kPostcopyListen:
    case R::kPostcopyEnd:
      return Layout{Kind::kEmpty, Fds::kNone};
    case R::kSetLogFd:
    case R::kSetBackendReqFd:
    case R::kGpuSetSocket:
      return Layout{Kind::kEmpty, Fds::kOne};
    case R::kSetFeatures:
    case R::kSetProtocolFeatures:
    case R::kSendRarp:
    case R::kNetSetMtu:
    case R::kSetStatus:
      return Layout{Kind::kU64, Fds::kNone};
    case R::kSetVringKick:
    case R::kSetVringCall:
    case R::kSetVringErr:
      return Layout{Kind::kU64, Fds::kUnlessNoFdBit};
    case R::kSetVringNum:
    case R::kSetVringBase:
    case R::kGetVringBase:
    case R::kSetVringEnable:
    case R::kSetVringEndian:
    case R::kVringKick:
      return Layout{Kind::kVringState, Fds::kNone};
    case R::kSetVringAddr: return Layout{Kind::kVringAddr, Fds::kNone};
    case R::kSetMemTable: return Layout{Kind::kMemoryTable, Fds::kPerRegion};
    case R::kAddMemReg: return Layout{Kind::kSingleRegion, Fds::kOne};
    case R::kRemMemReg: return Layout{Kind::kSingleRegion, Fds::kNoneOrOne};
    case R::kSetLogBase: return Layout{Kind::kLog, Fds::kOne};
    case R::kGetConfig:
    case R::kSetConfig:
      return Layout{Kind::kConfig, Fds::kNone};
    case R::kGetInflightFd: return Layout{Kind::kInflight, Fds::kNone};
    case R::kSetInflightFd: return Layout{Kind::kInflight, Fds::kOne};
    case R::kSetDeviceStateFd: return Layout{Kind::kDeviceState, Fds::kOne};
    case R::kIotlbMsg:
    case R::kCreateCryptoSession:
    case R::kCloseCryptoSession:
    case R::kGetSharedObject:
      return Layout{Kind::kUnsupported, Fds::kNone};
  }
  return make_error("vhost-user request id " + std::to_string(static_cast<uint32_t>(r)) +
                    " is not defined by the protocol");
}

// Replies: requests with an explicit reply body have their own layout; every other request
// can only be answered with a REPLY_ACK status (u64).
Result<Layout> reply_layout(Request r) {
  MOSS_TRY(Layout req, request_layout(r));
  if (req.kind == Kind::kUnsupported) return req;
  using R = Request;
  switch (r) {
    case R::kGetVringBase: return Layout{Kind::kVringState, Fds::kNone};
    case R::kGetConfig: return Layout{Kind::kConfigOrEmpty, Fds::kNone};
    case R::kGetInflightFd: return Layout{Kind::kInflight, Fds::kUnlessEmpty};
    case R::kSetDeviceStateFd: return Layout{Kind::kU64, Fds::kUnlessNoFdBit};
    case R::kPostcopyAdvise: return Layout{Kind::kUnsupported, Fds::kNone};  // Returns a userfaultfd.
    default: return Layout{Kind::kU64, Fds::kNone};
  }
}

template <typename T>
T load(std::span<const uint8_t> p, size_t off) {
  T v;
  std::memcpy(&v, p.data() + off, sizeof v);
  return v;
}

// resize+memcpy rather than vector::insert, which trips GCC 12's -O3 -Warray-bounds.
void append_bytes(std::vector<uint8_t>& out, const void* p, size_t n) {
  if (n == 0) return;
  size_t at = out.size();
  out.resize(at + n);
  std::memcpy(out.data() + at, p, n);
}

template <typename T>
void store(std::vector<uint8_t>& out, T v) {
  append_bytes(out, &v, sizeof v);
}

MemoryRegion load_region(std::span<const uint8_t> p, size_t off) {
  return MemoryRegion{load<uint64_t>(p, off), load<uint64_t>(p, off + 8), load<uint64_t>(p, off + 16),
                      load<uint64_t>(p, off + 24)};
}

void store_region(std::vector<uint8_t>& out, const MemoryRegion& r) {
  store(out, r.guest_phys_addr);
  store(out, r.memory_size);
  store(out, r.userspace_addr);
  store(out, r.mmap_offset);
}

Error size_error(Request r, size_t got, size_t want) {
  return make_error(std::string("vhost-user ") + request_name(r) + " has a " + std::to_string(got) +
                    "-byte payload where " + std::to_string(want) + " bytes are required");
}

Error fd_error(Request r, size_t got, size_t want) {
  return make_error(std::string("vhost-user ") + request_name(r) + " came with " + std::to_string(got) +
                    " file descriptors where " + std::to_string(want) + " are required");
}

Result<void> expect_size(Request r, std::span<const uint8_t> p, size_t want) {
  if (p.size() != want) return size_error(r, p.size(), want);
  return {};
}

// Every size and fd count is checked here before the payload's fields are read.
Result<Payload> decode_payload(Request r, Layout layout, std::span<const uint8_t> p, size_t nfds) {
  // The fd rules that do not depend on field values come first.
  switch (layout.fds) {
    case Fds::kNone:
      if (nfds != 0) return fd_error(r, nfds, 0);
      break;
    case Fds::kOne:
      if (nfds != 1) return fd_error(r, nfds, 1);
      break;
    case Fds::kNoneOrOne:
    case Fds::kPerRegion:
    case Fds::kUnlessNoFdBit:
    case Fds::kUnlessEmpty:
      if (nfds > 1 && layout.fds != Fds::kPerRegion) return fd_error(r, nfds, 1);
      break;
  }
  switch (layout.kind) {
    case Kind::kEmpty:
      MOSS_TRY_VOID(expect_size(r, p, 0));
      return Payload{Empty{}};
    case Kind::kU64: {
      MOSS_TRY_VOID(expect_size(r, p, 8));
      uint64_t v = load<uint64_t>(p, 0);
      if (layout.fds == Fds::kUnlessNoFdBit) {
        // Both users (vring fds, device-state reply) put a flag in bit 8 and a small value in
        // bits 0-7; any other bit is a peer we do not understand.
        if (v & ~(kVringIndexMask | kVringNoFd)) {
          return make_error(std::string("vhost-user ") + request_name(r) +
                            " sets bits beyond 0-8 in its u64 payload");
        }
        size_t want = (v & kVringNoFd) ? 0 : 1;
        if (nfds != want) return fd_error(r, nfds, want);
      }
      return Payload{v};
    }
    case Kind::kVringState:
      MOSS_TRY_VOID(expect_size(r, p, 8));
      return Payload{VringState{load<uint32_t>(p, 0), load<uint32_t>(p, 4)}};
    case Kind::kVringAddr:
      MOSS_TRY_VOID(expect_size(r, p, kVringAddrBytes));
      return Payload{VringAddr{load<uint32_t>(p, 0), load<uint32_t>(p, 4), load<uint64_t>(p, 8),
                               load<uint64_t>(p, 16), load<uint64_t>(p, 24), load<uint64_t>(p, 32)}};
    case Kind::kMemoryTable: {
      if (p.size() < kMemTableHeaderBytes) return size_error(r, p.size(), kMemTableHeaderBytes);
      uint32_t n = load<uint32_t>(p, 0);
      if (n > kMaxMemTableRegions) {
        return make_error("vhost-user SET_MEM_TABLE lists " + std::to_string(n) +
                          " regions; at most 8 are allowed");
      }
      MOSS_TRY_VOID(expect_size(r, p, kMemTableHeaderBytes + n * kRegionBytes));
      if (nfds != n) return fd_error(r, nfds, n);
      MemoryTable t;
      for (uint32_t i = 0; i < n; i++) t.regions.push_back(load_region(p, kMemTableHeaderBytes + i * kRegionBytes));
      return Payload{std::move(t)};
    }
    case Kind::kSingleRegion:
      MOSS_TRY_VOID(expect_size(r, p, kSingleRegionBytes));
      return Payload{SingleMemoryRegion{load_region(p, 8)}};
    case Kind::kConfigOrEmpty:
      if (p.empty()) return Payload{Empty{}};
      [[fallthrough]];
    case Kind::kConfig: {
      if (p.size() < kConfigHeaderBytes) return size_error(r, p.size(), kConfigHeaderBytes);
      uint32_t size = load<uint32_t>(p, 4);
      if (size > kMaxConfigSize) {
        return make_error(std::string("vhost-user ") + request_name(r) + " asks for " + std::to_string(size) +
                          " bytes of config space; at most 256 are allowed");
      }
      MOSS_TRY_VOID(expect_size(r, p, kConfigHeaderBytes + size));
      Config c;
      c.offset = load<uint32_t>(p, 0);
      c.flags = load<uint32_t>(p, 8);
      c.data.assign(p.begin() + kConfigHeaderBytes, p.end());
      return Payload{std::move(c)};
    }
    case Kind::kInflight: {
      MOSS_TRY_VOID(expect_size(r, p, kInflightBytes));
      Inflight in{load<uint64_t>(p, 0), load<uint64_t>(p, 8), load<uint16_t>(p, 16), load<uint16_t>(p, 18)};
      if (layout.fds == Fds::kUnlessEmpty) {
        size_t want = in.mmap_size == 0 ? 0 : 1;
        if (nfds != want) return fd_error(r, nfds, want);
      }
      return Payload{in};
    }
    case Kind::kDeviceState:
      MOSS_TRY_VOID(expect_size(r, p, 8));
      return Payload{DeviceStateTransfer{load<uint32_t>(p, 0), load<uint32_t>(p, 4)}};
    case Kind::kLog:
      MOSS_TRY_VOID(expect_size(r, p, 16));
      return Payload{Log{load<uint64_t>(p, 0), load<uint64_t>(p, 8)}};
    case Kind::kUnsupported:
      break;
  }
  return make_error(std::string("vhost-user ") + request_name(r) + " is not supported by moss");
}

}  // namespace

const char* request_name(Request r) {
  using R = Request;
  switch (r) {
    case R::kGetFeatures: return "GET_FEATURES";
    case R::kSetFeatures: return "SET_FEATURES";
    case R::kSetOwner: return "SET_OWNER";
    case R::kResetOwner: return "RESET_OWNER";
    case R::kSetMemTable: return "SET_MEM_TABLE";
    case R::kSetLogBase: return "SET_LOG_BASE";
    case R::kSetLogFd: return "SET_LOG_FD";
    case R::kSetVringNum: return "SET_VRING_NUM";
    case R::kSetVringAddr: return "SET_VRING_ADDR";
    case R::kSetVringBase: return "SET_VRING_BASE";
    case R::kGetVringBase: return "GET_VRING_BASE";
    case R::kSetVringKick: return "SET_VRING_KICK";
    case R::kSetVringCall: return "SET_VRING_CALL";
    case R::kSetVringErr: return "SET_VRING_ERR";
    case R::kGetProtocolFeatures: return "GET_PROTOCOL_FEATURES";
    case R::kSetProtocolFeatures: return "SET_PROTOCOL_FEATURES";
    case R::kGetQueueNum: return "GET_QUEUE_NUM";
    case R::kSetVringEnable: return "SET_VRING_ENABLE";
    case R::kSendRarp: return "SEND_RARP";
    case R::kNetSetMtu: return "NET_SET_MTU";
    case R::kSetBackendReqFd: return "SET_BACKEND_REQ_FD";
    case R::kIotlbMsg: return "IOTLB_MSG";
    case R::kSetVringEndian: return "SET_VRING_ENDIAN";
    case R::kGetConfig: return "GET_CONFIG";
    case R::kSetConfig: return "SET_CONFIG";
    case R::kCreateCryptoSession: return "CREATE_CRYPTO_SESSION";
    case R::kCloseCryptoSession: return "CLOSE_CRYPTO_SESSION";
    case R::kPostcopyAdvise: return "POSTCOPY_ADVISE";
    case R::kPostcopyListen: return "POSTCOPY_LISTEN";
    case R::kPostcopyEnd: return "POSTCOPY_END";
    case R::kGetInflightFd: return "GET_INFLIGHT_FD";
    case R::kSetInflightFd: return "SET_INFLIGHT_FD";
    case R::kGpuSetSocket: return "GPU_SET_SOCKET";
    case R::kResetDevice: return "RESET_DEVICE";
    case R::kVringKick: return "VRING_KICK";
    case R::kGetMaxMemSlots: return "GET_MAX_MEM_SLOTS";
    case R::kAddMemReg: return "ADD_MEM_REG";
    case R::kRemMemReg: return "REM_MEM_REG";
    case R::kSetStatus: return "SET_STATUS";
    case R::kGetStatus: return "GET_STATUS";
    case R::kGetSharedObject: return "GET_SHARED_OBJECT";
    case R::kSetDeviceStateFd: return "SET_DEVICE_STATE_FD";
    case R::kCheckDeviceState: return "CHECK_DEVICE_STATE";
  }
  return "an undefined request";
}

Result<Header> decode_header(std::span<const uint8_t> bytes) {
  if (bytes.size() < kHeaderSize) {
    return make_error("vhost-user message is " + std::to_string(bytes.size()) +
                      " bytes, shorter than its 12-byte header");
  }
  Header h{load<uint32_t>(bytes, 0), load<uint32_t>(bytes, 4), load<uint32_t>(bytes, 8)};
  if ((h.flags & kVersionMask) != kVersion) {
    return make_error("vhost-user message has protocol version " + std::to_string(h.flags & kVersionMask) +
                      "; only version 1 exists");
  }
  if (h.flags & ~(kVersionMask | kFlagReply | kFlagNeedReply)) {
    return make_error("vhost-user message sets undefined header flags");
  }
  if (h.size > kMaxPayload) {
    return make_error("vhost-user message payload of " + std::to_string(h.size) +
                      " bytes exceeds the 4096-byte limit");
  }
  return h;
}

Result<Message> decode(std::span<const uint8_t> bytes, size_t nfds, Direction dir) {
  MOSS_TRY(Header h, decode_header(bytes));
  if (bytes.size() != kHeaderSize + h.size) {
    return make_error("vhost-user message is " + std::to_string(bytes.size()) + " bytes but its header says " +
                      std::to_string(kHeaderSize + h.size));
  }
  if (nfds > kMaxFds) return make_error("vhost-user message carries more than 8 file descriptors");
  auto r = static_cast<Request>(h.request);
  bool is_reply = h.flags & kFlagReply;
  bool need_reply = h.flags & kFlagNeedReply;
  if (dir == Direction::kRequest && is_reply) {
    return make_error(std::string("vhost-user ") + request_name(r) + " request carries the reply flag");
  }
  if (dir == Direction::kReply && (!is_reply || need_reply)) {
    return make_error(std::string("vhost-user reply to ") + request_name(r) +
                      " lacks the reply flag or asks for a reply itself");
  }
  MOSS_TRY(Layout layout, dir == Direction::kRequest ? request_layout(r) : reply_layout(r));
  MOSS_TRY(Payload payload, decode_payload(r, layout, bytes.subspan(kHeaderSize), nfds));
  return Message{r, is_reply, need_reply, std::move(payload)};
}

std::vector<uint8_t> encode(const Message& m) {
  std::vector<uint8_t> out(kHeaderSize);
  std::visit(
      [&](const auto& p) {
        using T = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<T, uint64_t>) {
          store(out, p);
        } else if constexpr (std::is_same_v<T, VringState>) {
          store(out, p.index);
          store(out, p.num);
        } else if constexpr (std::is_same_v<T, VringAddr>) {
          store(out, p.index);
          store(out, p.flags);
          store(out, p.desc);
          store(out, p.used);
          store(out, p.avail);
          store(out, p.log);
        } else if constexpr (std::is_same_v<T, MemoryTable>) {
          MOSS_ASSERT(p.regions.size() <= kMaxMemTableRegions);
          store(out, static_cast<uint32_t>(p.regions.size()));
          store(out, uint32_t{0});
          for (const auto& r : p.regions) store_region(out, r);
        } else if constexpr (std::is_same_v<T, SingleMemoryRegion>) {
          store(out, uint64_t{0});
          store_region(out, p.region);
        } else if constexpr (std::is_same_v<T, Config>) {
          MOSS_ASSERT(p.data.size() <= kMaxConfigSize);
          store(out, p.offset);
          store(out, static_cast<uint32_t>(p.data.size()));
          store(out, p.flags);
          append_bytes(out, p.data.data(), p.data.size());
        } else if constexpr (std::is_same_v<T, Inflight>) {
          store(out, p.mmap_size);
          store(out, p.mmap_offset);
          store(out, p.num_queues);
          store(out, p.queue_size);
          store(out, uint32_t{0});
        } else if constexpr (std::is_same_v<T, DeviceStateTransfer>) {
          store(out, p.direction);
          store(out, p.phase);
        } else if constexpr (std::is_same_v<T, Log>) {
          store(out, p.size);
          store(out, p.offset);
        } else {
          static_assert(std::is_same_v<T, Empty>);
        }
      },
      m.payload);
  uint32_t flags = kVersion | (m.reply ? kFlagReply : 0) | (m.need_reply ? kFlagNeedReply : 0);
  Header h{static_cast<uint32_t>(m.request), flags, static_cast<uint32_t>(out.size() - kHeaderSize)};
  std::memcpy(out.data(), &h.request, 4);
  std::memcpy(out.data() + 4, &h.flags, 4);
  std::memcpy(out.data() + 8, &h.size, 4);
  return out;
}

Message make_request(Request r, Payload p, bool need_reply) { return Message{r, false, need_reply, std::move(p)}; }

Message make_reply(Request r, Payload p) { return Message{r, true, false, std::move(p)}; }

}  // namespace moss::vhost_user
