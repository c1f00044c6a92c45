#include "vhost-user/backend.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>

#include "base/log.h"
#include "base/syscall.h"
#include "vhost-user/socket.h"

namespace moss::vhost_user {
namespace {

using namespace protocol_feature;

// Protocol features implemented entirely here, offered whatever the device.
constexpr uint64_t kAlwaysOffered = bit(kMq) | bit(kReplyAck) | bit(kResetDevice) | bit(kConfigureMemSlots);
// Protocol features the Backend implements but only offers when the device does.
constexpr uint64_t kDeviceOptional = bit(kConfig) | bit(kInflightShmfd) | bit(kDeviceState);

constexpr uint32_t kVringFlagLog = 1;  // VHOST_VRING_F_LOG: dirty logging of the used ring.

// The spec's split-ring inflight layout: a 16-byte QueueRegionSplit header and one 16-byte
// DescStateSplit per descriptor.
constexpr uint64_t kInflightHeaderBytes = 16;
constexpr uint64_t kInflightDescBytes = 16;
// Each queue's region starts on a cache line so queues never share one.
constexpr uint64_t kInflightAlign = 64;

// Requests whose reply carries a body; every other request is answered only under REPLY_ACK.
bool has_reply_body(Request r) {
  switch (r) {
    case Request::kGetFeatures:
    case Request::kGetProtocolFeatures:
    case Request::kGetQueueNum:
    case Request::kGetMaxMemSlots:
    case Request::kGetVringBase:
    case Request::kGetConfig:
    case Request::kGetInflightFd:
    case Request::kSetDeviceStateFd:
    case Request::kCheckDeviceState:
    case Request::kGetStatus:
    case Request::kPostcopyEnd:
      return true;
    default:
      return false;
  }
}

// The payload decode() pairs with the request; any other pairing is a bug in the caller of
// Backend::handle.
template <typename T>
const T& payload(const Message& m) {
  const T* p = m.as<T>();
  MOSS_ASSERT(p != nullptr);
  return *p;
}

// Requests a frontend may send before SET_OWNER: the queries and the protocol negotiation that
// QEMU, cloud-hypervisor and moss send first. Anything that configures the device comes after.
bool allowed_before_owner(Request r) {
  switch (r) {
    case Request::kGetFeatures:
    case Request::kGetProtocolFeatures:
    case Request::kSetProtocolFeatures:
    case Request::kGetQueueNum:
    case Request::kGetMaxMemSlots:
    case Request::kSetOwner:
      return true;
    default:
      return false;
  }
}

// Whether `fd` is an eventfd. Without /proc (the jail has none) the one sign is the inode:
// every eventfd (and a few other anonymous fds: timerfd, signalfd) shares the kernel's one
// anonymous inode, which no pipe, socket, file or memfd has. consume_kick catches the other
// anonymous kinds, whose reads do not yield a counter.
Result<void> check_eventfd(int fd, const char* what, uint32_t queue) {
  static const std::optional<std::pair<dev_t, ino_t>> anon = []() -> std::optional<std::pair<dev_t, ino_t>> {
    UniqueFd ref(::eventfd(0, EFD_CLOEXEC));
    struct stat st;
    if (!ref.valid() || ::fstat(ref.get(), &st) != 0) return std::nullopt;
    return std::make_pair(st.st_dev, st.st_ino);
  }();
  if (!anon) return make_error("cannot create an eventfd to check the frontend's fds against");
  struct stat st;
  MOSS_TRY_VOID(MOSS_SYS(::fstat(fd, &st)));
  if (st.st_dev != anon->first || st.st_ino != anon->second) {
    return make_error("frontend gave queue " + std::to_string(queue) + " a " + what + " fd that is not an eventfd");
  }
  return {};
}

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

Backend::Backend(DeviceInterface& device, WatchFn watch, BackendLimits limits)
    : device_(device), watch_(std::move(watch)), limits_(limits) {
  uint32_t n = device_.num_queues();
  // Queue indexes travel in 8 bits (SET_VRING_KICK and friends).
  MOSS_ASSERT(n >= 1 && n <= 256);
  uint32_t max = device_.max_queue_size();
  MOSS_ASSERT(max >= 1 && max <= 32768 && (max & (max - 1)) == 0);
  vrings_.resize(n);
}

Backend::~Backend() { stop_all(); }

uint64_t Backend::offered_features() const { return device_.features() | bit(kFeatureProtocolFeatures); }

uint64_t Backend::offered_protocol_features() const {
  return kAlwaysOffered | (device_.protocol_features() & kDeviceOptional);
}

Result<void> Backend::require(int protocol_bit, Request r) const {
  if (negotiated(protocol_bit)) return {};
  return make_error(std::string("frontend sent ") + request_name(r) +
                    " without negotiating the protocol feature it needs");
}

Result<Vring*> Backend::ring(uint32_t index, Request r) {
  if (index >= vrings_.size()) {
    return make_error(std::string("frontend sent ") + request_name(r) + " for queue " + std::to_string(index) +
                      " but the device has only " + std::to_string(vrings_.size()) + " queues");
  }
  return &vrings_[index];
}

InflightArea Backend::inflight() const {
  return InflightArea{inflight_map_.data(), inflight_map_.size(), inflight_queues_, inflight_queue_size_};
}

uint64_t Backend::inflight_queue_region_size(uint16_t queue_size) {
  uint64_t raw = kInflightHeaderBytes + kInflightDescBytes * queue_size;
  return (raw + kInflightAlign - 1) & ~(kInflightAlign - 1);
}

Result<Handled> Backend::handle(const Message& m, std::vector<UniqueFd> fds) {
  MOSS_ASSERT(!m.reply);  // decode(Direction::kRequest) never yields a reply.
  Handled out;
  auto r = dispatch(m, fds, out);
  if (!r.ok()) {
    // Under REPLY_ACK the frontend asked for a verdict: give it, keep the connection.
    if (m.need_reply && !has_reply_body(m.request)) {
      out.reply = make_reply(m.request, uint64_t{1});
      out.reply_fds.clear();
      out.refused = std::move(r).take_error();
      return out;
    }
    return std::move(r).take_error();
  }
  if (m.need_reply && !has_reply_body(m.request)) out.reply = make_reply(m.request, uint64_t{0});
  return out;
}

Result<void> Backend::dispatch(const Message& m, std::vector<UniqueFd>& fds, Handled& out) {
  const Request req = m.request;
  if (!owned_ && !allowed_before_owner(req)) {
    return make_error(std::string("frontend sent ") + request_name(req) + " before SET_OWNER");
  }
  // decode() matched the payload type and fd count to the request.
  auto u64 = [&] { return payload<uint64_t>(m); };
  auto state = [&]() -> const VringState& { return payload<VringState>(m); };
  switch (req) {
    case Request::kGetFeatures:
      out.reply = make_reply(req, offered_features());
      return {};
    case Request::kSetFeatures: return set_features(u64());
    case Request::kSetOwner:
      if (owned_) return make_error("frontend sent SET_OWNER twice on one connection");
      owned_ = true;
      return {};
    case Request::kResetOwner:
      // Deprecated; the spec recommends disabling the rings and nothing more.
      for (uint32_t i = 0; i < vrings_.size(); i++) set_enabled(i, false);
      owned_ = false;
      return {};
    case Request::kGetProtocolFeatures:
      out.reply = make_reply(req, offered_protocol_features());
      return {};
    case Request::kSetProtocolFeatures:
      if (u64() & ~offered_protocol_features()) {
        return make_error("frontend enabled protocol features " + hex(u64() & ~offered_protocol_features()) +
                          " that this backend did not offer");
      }
      acked_protocol_ = u64();
      return {};
    case Request::kGetQueueNum:
      out.reply = make_reply(req, uint64_t{vrings_.size()});
      return {};
    case Request::kSetMemTable: return set_mem_table(payload<MemoryTable>(m), fds);
    case Request::kSetVringNum: return set_vring_num(state());
    case Request::kSetVringAddr: return set_vring_addr(payload<VringAddr>(m));
    case Request::kSetVringBase: {
      const VringState& s = state();
      MOSS_TRY(Vring * v, ring(s.index, req));
      if (v->started) return make_error("frontend set the base of queue " + std::to_string(s.index) + " while it runs");
      if (s.num > 0xffff) return make_error("frontend set a split-ring base index above 65535");
      v->base = static_cast<uint16_t>(s.num);
      return {};
    }
    case Request::kGetVringBase: {
      const VringState& s = state();
      MOSS_TRY_VOID(ring(s.index, req));
      uint16_t base = stop(s.index);
      out.reply = make_reply(req, VringState{s.index, base});
      return {};
    }
    case Request::kSetVringKick:
    case Request::kSetVringCall:
    case Request::kSetVringErr:
      return set_vring_fd(req, u64(), fds);
    case Request::kSetVringEnable: return set_vring_enable(state());
    case Request::kGetConfig: {
      MOSS_TRY_VOID(require(kConfig, req));
      const Config& c = payload<Config>(m);
      auto data = device_.get_config(c.offset, static_cast<uint32_t>(c.data.size()));
      if (!data.ok() || data->size() != c.data.size()) {
        // The spec's way to fail GET_CONFIG is an empty reply payload.
        if (!data.ok()) LOG_WARN("GET_CONFIG failed: %s", data.error().message.c_str());
        out.reply = make_reply(req, Empty{});
        return {};
      }
      out.reply = make_reply(req, Config{c.offset, c.flags, std::move(*data)});
      return {};
    }
    case Request::kSetConfig: {
      MOSS_TRY_VOID(require(kConfig, req));
      const Config& c = payload<Config>(m);
      return device_.set_config(c.offset, c.data, c.flags);
    }
    case Request::kGetInflightFd:
      MOSS_TRY_VOID(require(kInflightShmfd, req));
      return get_inflight_fd(payload<Inflight>(m), out);
    case Request::kSetInflightFd:
      MOSS_TRY_VOID(require(kInflightShmfd, req));
      return set_inflight_fd(payload<Inflight>(m), std::move(fds.at(0)));
    case Request::kResetDevice:
      MOSS_TRY_VOID(require(kResetDevice, req));
      reset_device();
      return {};
    case Request::kGetMaxMemSlots:
      MOSS_TRY_VOID(require(kConfigureMemSlots, req));
      out.reply = make_reply(req, uint64_t{kMaxMemSlots});
      return {};
    case Request::kAddMemReg:
      MOSS_TRY_VOID(require(kConfigureMemSlots, req));
      if (memory_.size() >= kMaxMemSlots) return make_error("frontend added more memory regions than the 32 slots offered");
      return memory_.add(payload<SingleMemoryRegion>(m).region, fds.at(0).get());
    case Request::kRemMemReg:
      MOSS_TRY_VOID(require(kConfigureMemSlots, req));
      // A stray fd is tolerated by the spec; it is closed with `fds` unused.
      if (any_started()) device_.on_memory_changing();
      return memory_.remove(payload<SingleMemoryRegion>(m).region);
    case Request::kSetDeviceStateFd: {
      MOSS_TRY_VOID(require(kDeviceState, req));
      auto r = set_device_state_fd(payload<DeviceStateTransfer>(m), std::move(fds.at(0)));
      if (!r.ok()) LOG_WARN("refused SET_DEVICE_STATE_FD: %s", r.error().message.c_str());
      // Bits 0-7 are the status; bit 8 says we return no fd of our own (we use the frontend's).
      out.reply = make_reply(req, uint64_t{kDeviceStateNoFd | (r.ok() ? 0u : 1u)});
      return {};
    }
    case Request::kCheckDeviceState: {
      MOSS_TRY_VOID(require(kDeviceState, req));
      bool ok = transfer_result_.has_value() && transfer_result_->ok();
      if (transfer_result_.has_value() && !transfer_result_->ok()) {
        LOG_WARN("device state transfer failed: %s", transfer_result_->error().message.c_str());
      }
      transfer_result_.reset();
      out.reply = make_reply(req, uint64_t{ok ? 0u : 1u});
      return {};
    }
    default:
      // Logging, postcopy, in-band notifications, status, backend requests, RARP, MTU,
      // endianness: their protocol features are never offered, so a frontend that sends
      // them is not following the negotiation.
      return make_error(std::string("frontend sent ") + request_name(req) + ", which this backend does not support");
  }
}

Result<void> Backend::set_features(uint64_t v) {
  if (v & ~offered_features()) {
    return make_error("frontend acknowledged features " + hex(v & ~offered_features()) + " the device did not offer");
  }
  if (any_started() && v != acked_features_) return make_error("frontend changed features while queues run");
  MOSS_TRY_VOID(device_.set_features(v & ~bit(kFeatureProtocolFeatures)));
  acked_features_ = v;
  // Without VHOST_USER_F_PROTOCOL_FEATURES there is no SET_VRING_ENABLE: rings are enabled.
  if (!(v & bit(kFeatureProtocolFeatures))) {
    for (uint32_t i = 0; i < vrings_.size(); i++) set_enabled(i, true);
  }
  return {};
}

Result<void> Backend::set_mem_table(const MemoryTable& t, std::vector<UniqueFd>& fds) {
  // Build the new table aside, so a bad region leaves the old one in place.
  MemoryMap fresh;
  for (size_t i = 0; i < t.regions.size(); i++) MOSS_TRY_VOID(fresh.add(t.regions[i], fds.at(i).get()));
  if (any_started()) device_.on_memory_changing();
  std::swap(memory_, fresh);  // The old mappings go with `fresh`.
  return {};
}

Result<void> Backend::set_vring_num(const VringState& s) {
  MOSS_TRY(Vring * v, ring(s.index, Request::kSetVringNum));
  if (v->started) return make_error("frontend resized queue " + std::to_string(s.index) + " while it runs");
  // Split rings need a power-of-two size (the driver indexes them modulo num).
  if (s.num == 0 || s.num > device_.max_queue_size() || (s.num & (s.num - 1)) != 0) {
    return make_error("frontend asked for a queue size of " + std::to_string(s.num) +
                      "; it must be a power of two no larger than " + std::to_string(device_.max_queue_size()));
  }
  v->num = s.num;
  return {};
}

Result<void> Backend::set_vring_addr(const VringAddr& a) {
  MOSS_TRY(Vring * v, ring(a.index, Request::kSetVringAddr));
  if (a.flags & kVringFlagLog) return make_error("frontend asked for dirty logging, which this backend does not support");
  if (a.flags != 0) return make_error("frontend set undefined vring address flags");
  MOSS_TRY(uint64_t desc, memory_.user_to_guest(a.desc));
  MOSS_TRY(uint64_t avail, memory_.user_to_guest(a.avail));
  MOSS_TRY(uint64_t used, memory_.user_to_guest(a.used));
  if (v->started) {
    // QEMU repeats SET_VRING_ADDR on running rings to toggle logging; moving a live ring is
    // not something a device can follow.
    if (desc != v->desc_gpa || avail != v->avail_gpa || used != v->used_gpa) {
      return make_error("frontend moved queue " + std::to_string(a.index) + " while it runs");
    }
    return {};
  }
  v->desc_gpa = desc;
  v->avail_gpa = avail;
  v->used_gpa = used;
  v->addr_set = true;
  return maybe_start(a.index);
}

Result<void> Backend::set_vring_fd(Request r, uint64_t v, std::vector<UniqueFd>& fds) {
  uint32_t index = static_cast<uint32_t>(v & kVringIndexMask);
  MOSS_TRY(Vring * ring_ptr, ring(index, r));
  Vring& vr = *ring_ptr;
  bool nofd = v & kVringNoFd;
  UniqueFd fd = nofd ? UniqueFd() : std::move(fds.at(0));
  if (!nofd) {
    const char* what = r == Request::kSetVringKick ? "kick" : r == Request::kSetVringCall ? "call" : "err";
    MOSS_TRY_VOID(check_eventfd(fd.get(), what, index));
    // We only ever write 1 to a call or err eventfd: a frontend that saturated its counter must
    // not block the worker (EAGAIN then means the reader is due to wake anyway). The kick fd
    // is read without blocking by the worker's loop (consume_kick).
    MOSS_TRY(int flags, MOSS_SYS(::fcntl(fd.get(), F_GETFL)));
    if (!(flags & O_NONBLOCK)) MOSS_TRY_VOID(MOSS_SYS(::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK)));
  }
  if (r == Request::kSetVringCall) {
    vr.call = std::move(fd);
    return {};
  }
  if (r == Request::kSetVringErr) {
    vr.err = std::move(fd);
    return {};
  }
  if (nofd) return make_error("frontend asked to poll queue " + std::to_string(index) + ", which this backend does not support");
  if (vr.started) {
    watch_(vr.kick.get(), index, false);
    vr.kick = std::move(fd);
    watch_(vr.kick.get(), index, true);
    return {};
  }
  vr.kick = std::move(fd);
  return maybe_start(index);
}

Result<void> Backend::set_vring_enable(const VringState& s) {
  MOSS_TRY_VOID(ring(s.index, Request::kSetVringEnable));
  if (s.num > 1) return make_error("frontend sent SET_VRING_ENABLE with a value other than 0 or 1");
  set_enabled(s.index, s.num == 1);
  return {};
}

void Backend::set_enabled(uint32_t index, bool enabled) {
  Vring& v = vrings_[index];
  if (v.enabled == enabled) return;
  v.enabled = enabled;
  device_.on_queue_enabled(index, enabled);
}

Result<void> Backend::maybe_start(uint32_t index) {
  Vring& v = vrings_[index];
  if (v.started || !v.kick.valid() || !v.addr_set || v.num == 0) return {};
  // Check the ring's extent (with the event-index fields) and the alignment virtio requires,
  // so the device starts from a ring that lies wholly in guest memory.
  struct Part {
    const char* name;
    uint64_t gpa;
    uint64_t size;
    uint64_t align;
  };
  const Part parts[] = {{"descriptor table", v.desc_gpa, 16ull * v.num, 16},
                        {"available ring", v.avail_gpa, 6 + 2ull * v.num, 2},
                        {"used ring", v.used_gpa, 6 + 8ull * v.num, 4}};
  for (const Part& p : parts) {
    if (p.gpa % p.align != 0 || !memory_.guest_memory().slice(p.gpa, p.size).ok()) {
      return make_error("the " + std::string(p.name) + " of queue " + std::to_string(index) + " at guest address " +
                        hex(p.gpa) + " is misaligned or outside guest memory");
    }
  }
  MOSS_TRY_VOID(device_.on_queue_started(index, v));
  v.started = true;
  watch_(v.kick.get(), index, true);
  return {};
}

uint16_t Backend::stop(uint32_t index) {
  Vring& v = vrings_[index];
  if (!v.started) return v.base;
  watch_(v.kick.get(), index, false);
  v.base = device_.on_queue_stopped(index);
  v.started = false;
  // A restart must come with a fresh SET_VRING_ADDR and SET_VRING_KICK (as QEMU sends), so
  // the ring cannot restart on stale addresses.
  v.kick.reset();
  v.addr_set = false;
  return v.base;
}

void Backend::stop_all() {
  for (uint32_t i = 0; i < vrings_.size(); i++) stop(i);
}

bool Backend::any_started() const {
  for (const auto& v : vrings_) {
    if (v.started) return true;
  }
  return false;
}

void Backend::reset_device() {
  stop_all();
  device_.reset();
  for (auto& v : vrings_) v = Vring{};
  acked_features_ = 0;
  memory_.clear();
  inflight_map_ = Mapping();
  inflight_fd_.reset();
  inflight_queues_ = inflight_queue_size_ = 0;
  pending_transfer_.reset();
  transfer_result_.reset();
}

Result<void> Backend::check_inflight_geometry(const Inflight& in) const {
  if (in.num_queues == 0 || in.num_queues > vrings_.size() || in.queue_size == 0 ||
      in.queue_size > device_.max_queue_size()) {
    return make_error("frontend asked for inflight tracking of " + std::to_string(in.num_queues) + " queues of " +
                      std::to_string(in.queue_size) + " entries, beyond what the device has");
  }
  return {};
}

Result<void> Backend::get_inflight_fd(const Inflight& in, Handled& out) {
  MOSS_TRY_VOID(check_inflight_geometry(in));
  uint64_t size = inflight_queue_region_size(in.queue_size) * in.num_queues;
  MOSS_TRY(int raw, MOSS_SYS(::memfd_create("moss-vhost-inflight", MFD_CLOEXEC | MFD_ALLOW_SEALING)));
  UniqueFd fd(raw);
  MOSS_TRY_VOID(MOSS_SYS(::ftruncate(fd.get(), static_cast<off_t>(size))));
  // The frontend maps it too: sealed, it can neither shrink it under our mapping (SIGBUS) nor
  // grow it.
  MOSS_TRY_VOID(MOSS_SYS(::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)));
  MOSS_TRY(Mapping map, Mapping::map_shared(fd.get(), 0, size, "the inflight buffer"));
  inflight_fd_ = std::move(fd);
  inflight_map_ = std::move(map);
  inflight_queues_ = in.num_queues;
  inflight_queue_size_ = in.queue_size;
  out.reply = make_reply(Request::kGetInflightFd, Inflight{size, 0, in.num_queues, in.queue_size});
  out.reply_fds.push_back(inflight_fd_.get());
  return {};
}

Result<void> Backend::set_inflight_fd(const Inflight& in, UniqueFd fd) {
  MOSS_TRY_VOID(check_inflight_geometry(in));
  uint64_t need = inflight_queue_region_size(in.queue_size) * in.num_queues;
  if (in.mmap_size < need) {
    return make_error("frontend's inflight buffer of " + std::to_string(in.mmap_size) + " bytes is smaller than the " +
                      std::to_string(need) + " its geometry needs");
  }
  MOSS_TRY(Mapping map, Mapping::map_shared(fd.get(), in.mmap_offset, in.mmap_size, "the inflight buffer"));
  inflight_fd_.reset();
  inflight_map_ = std::move(map);
  inflight_queues_ = in.num_queues;
  inflight_queue_size_ = in.queue_size;
  return {};
}

Result<void> Backend::set_device_state_fd(const DeviceStateTransfer& t, UniqueFd fd) {
  if (t.phase != kPhaseStopped) return make_error("frontend asked for a device state transfer in an unknown phase");
  if (t.direction != kTransferSave && t.direction != kTransferLoad) {
    return make_error("frontend asked for a device state transfer in an unknown direction");
  }
  // The spec's only phase is "stopped": the device must be suspended, or its state moves on.
  if (any_started()) return make_error("frontend asked for the device state while queues run");
  pending_transfer_ = Transfer{t.direction, std::move(fd)};
  transfer_result_.reset();
  return {};
}

Result<void> Backend::after_reply() {
  if (!pending_transfer_) return {};
  Transfer t = std::move(*pending_transfer_);
  pending_transfer_.reset();
  bool channel_failed = false;
  transfer_result_ = transfer(t.direction, t.fd.get(), channel_failed);
  // The device refusing what it was sent is CHECK_DEVICE_STATE's to report; a channel that
  // stalls or fails ends the connection.
  if (channel_failed) return transfer_result_->error();
  return {};
}

Result<void> Backend::transfer(uint32_t direction, int fd, bool& channel_failed) {
  // One deadline for the whole transfer, however the frontend paces it; the fd never blocks.
  auto deadline = std::chrono::steady_clock::now() + limits_.state_transfer;
  auto wait = [&](short events) -> Result<void> {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd, events, 0};
    MOSS_TRY(int ready, MOSS_SYS(::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)))));
    if (ready == 0) {
      channel_failed = true;
      return make_error(std::string("the frontend's device state channel did not ") +
                        (direction == kTransferSave ? "take" : "deliver") + " the state within " +
                        std::to_string(limits_.state_transfer.count()) + " ms",
                        ETIMEDOUT);
    }
    return {};
  };
  MOSS_TRY(int flags, MOSS_SYS(::fcntl(fd, F_GETFL)));
  MOSS_TRY_VOID(MOSS_SYS(::fcntl(fd, F_SETFL, flags | O_NONBLOCK)));
  if (direction == kTransferSave) {
    MOSS_TRY(std::vector<uint8_t> bytes, device_.save_state());
    size_t done = 0;
    while (done < bytes.size()) {
      ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) {
        MOSS_TRY_VOID(wait(POLLOUT));
        continue;
      }
      if (n < 0) {
        channel_failed = true;
        return sys_error("write", "the device state");
      }
      done += static_cast<size_t>(n);
    }
    return {};
  }
  std::vector<uint8_t> bytes;
  uint8_t buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      MOSS_TRY_VOID(wait(POLLIN));
      continue;
    }
    if (n < 0) {
      channel_failed = true;
      return sys_error("read", "the device state");
    }
    if (n == 0) break;
    if (bytes.size() + static_cast<size_t>(n) > device_.max_state_bytes()) {
      return make_error("the frontend sent more device state than any valid one (" +
                        std::to_string(device_.max_state_bytes()) + " bytes)");
    }
    bytes.insert(bytes.end(), buf, buf + n);
  }
  return device_.load_state(bytes);
}

Result<void> Backend::consume_kick(int fd, uint32_t queue) {
  uint64_t count;
  ssize_t n = ::read(fd, &count, sizeof count);
  if (n == sizeof count || (n < 0 && (errno == EAGAIN || errno == EINTR))) return {};
  if (n < 0) {
    return sys_error("read", "the kick eventfd of queue " + std::to_string(queue));
  }
  return make_error("the kick fd of queue " + std::to_string(queue) + " gave " + std::to_string(n) +
                    " bytes, not an eventfd counter");
}

Result<bool> Backend::serve_one(int sock) {
  MOSS_TRY(auto rx, receive_message(sock, Direction::kRequest));
  if (!rx) return false;
  MOSS_TRY(Handled h, handle(rx->message, std::move(rx->fds)));
  if (h.refused) LOG_WARN("refused vhost-user %s: %s", request_name(rx->message.request), h.refused->message.c_str());
  if (h.reply) MOSS_TRY_VOID(send_message(sock, *h.reply, h.reply_fds));
  MOSS_TRY_VOID(after_reply());
  return true;
}

}  // namespace moss::vhost_user
