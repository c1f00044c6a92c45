#include "vhost-user/frontend.h"

#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>

#include "base/syscall.h"

namespace moss::vhost_user {
namespace {

std::string name(Request r) { return request_name(r); }

}  // namespace

Result<Frontend> Frontend::connect(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return make_error("vhost-user socket path " + path + " is longer than the 107 bytes a Unix socket allows");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  MOSS_TRY(int raw, MOSS_SYS(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)));
  UniqueFd sock(raw);
  if (::connect(sock.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    return sys_error_code(e, "connect to", "the vhost-user backend at " + path);
  }
  return Frontend(std::move(sock));
}

Result<void> Frontend::set_timeout(std::chrono::milliseconds timeout) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  MOSS_TRY_VOID(MOSS_SYS(::setsockopt(sock_.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)));
  MOSS_TRY_VOID(MOSS_SYS(::setsockopt(sock_.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv)));
  return {};
}

Result<Received> Frontend::receive_reply(Request r) {
  MOSS_TRY(auto rx, receive_message(sock_.get(), Direction::kReply));
  if (!rx) return make_error("vhost-user backend closed the connection instead of answering " + name(r));
  if (rx->message.request != r) {
    return make_error("vhost-user backend answered " + name(r) + " with a reply to " + name(rx->message.request));
  }
  return std::move(*rx);
}

Result<void> Frontend::command(Message m, std::span<const int> fds) {
  m.need_reply = reply_ack_;
  MOSS_TRY_VOID(send_message(sock_.get(), m, fds));
  if (!reply_ack_) return {};
  auto reply = receive_reply(m.request);
  if (!reply.ok()) return std::move(reply).take_error();
  Received& rx = *reply;  // By reference: moving the variant out trips GCC 12's -O3 warnings.
  const uint64_t* status = rx.message.as<uint64_t>();
  MOSS_ASSERT(status != nullptr);  // decode() gives acks a u64.
  if (*status != 0) return make_error("vhost-user backend refused " + name(m.request));
  return {};
}

Result<Received> Frontend::transact(const Message& m, std::span<const int> fds) {
  MOSS_TRY_VOID(send_message(sock_.get(), m, fds));
  return receive_reply(m.request);
}

Result<uint64_t> Frontend::get_u64(Request r) {
  auto reply = transact(make_request(r));
  if (!reply.ok()) return std::move(reply).take_error();
  Received& rx = *reply;
  const uint64_t* v = rx.message.as<uint64_t>();
  MOSS_ASSERT(v != nullptr);
  return *v;
}

Result<uint64_t> Frontend::get_features() { return get_u64(Request::kGetFeatures); }

Result<void> Frontend::set_features(uint64_t features) {
  return command(make_request(Request::kSetFeatures, features));
}

Result<void> Frontend::set_owner() { return command(make_request(Request::kSetOwner)); }

Result<uint64_t> Frontend::get_protocol_features() { return get_u64(Request::kGetProtocolFeatures); }

Result<void> Frontend::set_protocol_features(uint64_t features) {
  MOSS_TRY_VOID(command(make_request(Request::kSetProtocolFeatures, features)));
  reply_ack_ = features & bit(protocol_feature::kReplyAck);
  return {};
}

Result<uint64_t> Frontend::get_queue_num() { return get_u64(Request::kGetQueueNum); }

Result<Negotiated> Frontend::negotiate(const Negotiation& want) {
  Negotiated n;
  MOSS_TRY(n.offered_features, get_features());
  const bool protocol = want.use_protocol_features && (n.offered_features & bit(kFeatureProtocolFeatures));
  if (protocol) {
    MOSS_TRY(uint64_t offered, get_protocol_features());
    n.protocol_features = offered & want.protocol_features;
    MOSS_TRY_VOID(set_protocol_features(n.protocol_features));
  }
  if (n.has_protocol(protocol_feature::kMq)) {
    MOSS_TRY(uint64_t queues, get_queue_num());
    if (queues == 0 || queues > 0xffff) {
      return make_error("vhost-user backend reports " + std::to_string(queues) + " queues");
    }
    n.queues = static_cast<uint32_t>(queues);
  }
  MOSS_TRY_VOID(set_owner());
  n.acked_features = n.offered_features & want.features & ~bit(kFeatureProtocolFeatures);
  MOSS_TRY_VOID(set_features(n.acked_features | (protocol ? bit(kFeatureProtocolFeatures) : 0)));
  return n;
}

Result<void> Frontend::start_ring(const RingSetup& r) {
  MOSS_TRY_VOID(set_vring_num(r.index, r.size));
  if (r.base) MOSS_TRY_VOID(set_vring_base(r.index, *r.base));
  MOSS_TRY_VOID(set_vring_addr(VringAddr{r.index, 0, r.desc, r.used, r.avail, 0}));
  if (r.call) MOSS_TRY_VOID(set_vring_call(r.index, *r.call));
  if (r.err) MOSS_TRY_VOID(set_vring_err(r.index, *r.err));
  if (r.kick) MOSS_TRY_VOID(set_vring_kick(r.index, *r.kick));
  if (r.enable) MOSS_TRY_VOID(set_vring_enable(r.index, true));
  return {};
}

Result<void> Frontend::set_mem_table(std::span<const MemoryRegion> regions, std::span<const int> fds) {
  MOSS_ASSERT(regions.size() == fds.size() && regions.size() <= kMaxMemTableRegions);
  MemoryTable t{std::vector<MemoryRegion>(regions.begin(), regions.end())};
  return command(make_request(Request::kSetMemTable, std::move(t)), fds);
}

Result<uint64_t> Frontend::get_max_mem_slots() { return get_u64(Request::kGetMaxMemSlots); }

Result<void> Frontend::add_mem_reg(const MemoryRegion& region, int fd) {
  return command(make_request(Request::kAddMemReg, SingleMemoryRegion{region}), std::span<const int>(&fd, 1));
}

Result<void> Frontend::rem_mem_reg(const MemoryRegion& region) {
  return command(make_request(Request::kRemMemReg, SingleMemoryRegion{region}));
}

Result<void> Frontend::set_vring_num(uint32_t index, uint32_t num) {
  return command(make_request(Request::kSetVringNum, VringState{index, num}));
}

Result<void> Frontend::set_vring_addr(const VringAddr& addr) {
  return command(make_request(Request::kSetVringAddr, addr));
}

Result<void> Frontend::set_vring_base(uint32_t index, uint32_t base) {
  return command(make_request(Request::kSetVringBase, VringState{index, base}));
}

Result<uint32_t> Frontend::get_vring_base(uint32_t index) {
  auto reply = transact(make_request(Request::kGetVringBase, VringState{index, 0}));
  if (!reply.ok()) return std::move(reply).take_error();
  Received& rx = *reply;
  const VringState* s = rx.message.as<VringState>();
  MOSS_ASSERT(s != nullptr);
  if (s->index != index) {
    return make_error("vhost-user backend answered GET_VRING_BASE for queue " + std::to_string(index) +
                      " with queue " + std::to_string(s->index));
  }
  return s->num;
}

Result<void> Frontend::set_vring_fd(Request r, uint32_t index, int fd) {
  MOSS_ASSERT(index <= kVringIndexMask);
  uint64_t v = index | (fd < 0 ? kVringNoFd : 0);
  if (fd < 0) return command(make_request(r, v));
  return command(make_request(r, v), std::span<const int>(&fd, 1));
}

Result<void> Frontend::set_vring_kick(uint32_t index, int fd) { return set_vring_fd(Request::kSetVringKick, index, fd); }
Result<void> Frontend::set_vring_call(uint32_t index, int fd) { return set_vring_fd(Request::kSetVringCall, index, fd); }
Result<void> Frontend::set_vring_err(uint32_t index, int fd) { return set_vring_fd(Request::kSetVringErr, index, fd); }

Result<void> Frontend::set_vring_enable(uint32_t index, bool enable) {
  return command(make_request(Request::kSetVringEnable, VringState{index, enable ? 1u : 0u}));
}

Result<std::vector<uint8_t>> Frontend::get_config(uint32_t offset, uint32_t size, uint32_t flags) {
  MOSS_ASSERT(size <= kMaxConfigSize);
  Config c{offset, flags, std::vector<uint8_t>(size, 0)};
  auto reply = transact(make_request(Request::kGetConfig, std::move(c)));
  if (!reply.ok()) return std::move(reply).take_error();
  Received& rx = *reply;
  const Config* got = rx.message.as<Config>();
  if (got == nullptr) return make_error("vhost-user backend could not read its config space");
  if (got->offset != offset || got->data.size() != size) {
    return make_error("vhost-user backend answered GET_CONFIG with a different offset or size");
  }
  return std::get<Config>(std::move(rx.message.payload)).data;
}

Result<void> Frontend::set_config(uint32_t offset, std::span<const uint8_t> data, uint32_t flags) {
  MOSS_ASSERT(data.size() <= kMaxConfigSize);
  return command(make_request(Request::kSetConfig, Config{offset, flags, std::vector<uint8_t>(data.begin(), data.end())}));
}

Result<void> Frontend::reset_device() { return command(make_request(Request::kResetDevice)); }

Result<Frontend::InflightFd> Frontend::get_inflight_fd(uint16_t num_queues, uint16_t queue_size) {
  auto reply = transact(make_request(Request::kGetInflightFd, Inflight{0, 0, num_queues, queue_size}));
  if (!reply.ok()) return std::move(reply).take_error();
  Received& rx = *reply;
  const Inflight* in = rx.message.as<Inflight>();
  MOSS_ASSERT(in != nullptr);
  if (in->mmap_size == 0) return make_error("vhost-user backend could not allocate an inflight buffer");
  return InflightFd{*in, std::move(rx.fds.at(0))};
}

Result<void> Frontend::set_inflight_fd(const Inflight& info, int fd) {
  return command(make_request(Request::kSetInflightFd, info), std::span<const int>(&fd, 1));
}

Result<UniqueFd> Frontend::set_device_state_fd(uint32_t direction, int fd) {
  auto reply = transact(make_request(Request::kSetDeviceStateFd, DeviceStateTransfer{direction, kPhaseStopped}),
                        std::span<const int>(&fd, 1));
  if (!reply.ok()) return std::move(reply).take_error();
  Received& rx = *reply;
  const uint64_t* v = rx.message.as<uint64_t>();
  MOSS_ASSERT(v != nullptr);
  if (*v & kDeviceStateErrorMask) {
    if (!rx.fds.empty()) return make_error("vhost-user backend both refused SET_DEVICE_STATE_FD and returned an fd");
    return make_error("vhost-user backend refused to transfer its device state");
  }
  if (*v & kDeviceStateNoFd) return UniqueFd();
  return std::move(rx.fds.at(0));
}

Result<void> Frontend::check_device_state() {
  MOSS_TRY(uint64_t v, get_u64(Request::kCheckDeviceState));
  if (v != 0) return make_error("vhost-user backend reports that the device state transfer failed");
  return {};
}

}  // namespace moss::vhost_user
