#include "vcpu/vhost_user_device.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "base/syscall.h"

namespace moss {
namespace {

using vhost_user::bit;
namespace pf = vhost_user::protocol_feature;

}  // namespace

Result<void> check_spec(const GuestDevice& s) {
  if (s.virtio_id == 0) return make_error("the device has no virtio device id");
  if (s.config_size > virtio_pci::kDeviceMaxSize) {
    return make_error("the device's configuration of " + std::to_string(s.config_size) + " bytes is larger than " +
                      std::to_string(virtio_pci::kDeviceMaxSize));
  }
  if (s.num_queues == 0 || s.num_queues > virtio_pci::kMaxQueues || s.min_queues == 0 || s.min_queues > s.num_queues) {
    return make_error("the device asks for " + std::to_string(s.min_queues) + " to " + std::to_string(s.num_queues) +
                      " queues; a virtio-pci function here carries 1 to " + std::to_string(virtio_pci::kMaxQueues));
  }
  if (s.multiqueue_feature < -1 || s.multiqueue_feature >= 64) return make_error("the device's multiqueue feature bit is out of range");
  if (s.queue_count_offset < -1 || (s.queue_count_offset >= 0 && uint64_t(s.queue_count_offset) + 2 > s.config_size)) {
    return make_error("the device's queue count lies outside its configuration");
  }
  if (s.max_queue_size == 0 || s.max_queue_size > 32768 || (s.max_queue_size & (s.max_queue_size - 1)) != 0) {
    return make_error("the device's largest queue size is not a power of 2 up to 32768");
  }
  return {};
}

Result<std::unique_ptr<VhostUserDevice>> VhostUserDevice::connect(UniqueFd sock, const VhostUserDeviceSpec& spec,
                                                                  std::span<const SharedRegion> memory) {
  MOSS_TRY_VOID(check_spec(spec));
  if (memory.empty() || memory.size() > vhost_user::kMaxMemTableRegions) {
    return make_error("guest memory must be 1 to 8 regions to share it over vhost-user");
  }
  std::unique_ptr<VhostUserDevice> d(new VhostUserDevice(vhost_user::Frontend(std::move(sock))));
  d->memory_.assign(memory.begin(), memory.end());
  auto& fe = d->fe_;
  MOSS_TRY(uint64_t features, fe.get_features());
  if (!(features & bit(vhost_user::kFeatureProtocolFeatures))) {
    return make_error("the vhost-user backend lacks protocol features (it must support CONFIG)");
  }
  MOSS_TRY(uint64_t offered, fe.get_protocol_features());
  if (!(offered & bit(pf::kConfig))) {
    return make_error("the vhost-user backend cannot serve the device configuration (no CONFIG protocol feature)");
  }
  d->name_ = spec.name;
  d->protocol_ = offered & (bit(pf::kMq) | bit(pf::kReplyAck) | bit(pf::kConfig) | bit(pf::kResetDevice) |
                            bit(pf::kDeviceState));
  MOSS_TRY_VOID(fe.set_protocol_features(d->protocol_));
  MOSS_TRY_VOID(fe.set_owner());
  uint64_t queues = 1;
  if (d->protocol_ & bit(pf::kMq)) {
    MOSS_TRY(queues, fe.get_queue_num());
    if (queues == 0) return make_error("the vhost-user backend reports zero queues");
  }
  uint16_t nq = static_cast<uint16_t>(std::min<uint64_t>(queues, spec.num_queues));
  // Without the device's multiqueue feature the driver uses only the queues every device has.
  const bool multiqueue = spec.multiqueue_feature >= 0 && (features & bit(spec.multiqueue_feature));
  if (spec.multiqueue_feature >= 0 && !multiqueue) nq = std::min(nq, spec.min_queues);
  if (nq < spec.min_queues) {
    return make_error("the vhost-user backend offers " + std::to_string(queues) + " queue(s); the device needs " +
                      std::to_string(spec.min_queues));
  }

  std::vector<vhost_user::MemoryRegion> regions;
  std::vector<int> fds;
  for (const auto& r : memory) {
    regions.push_back({r.gpa, r.size, reinterpret_cast<uint64_t>(r.host), r.fd_offset});
    fds.push_back(r.fd);
  }
  MOSS_TRY_VOID(fe.set_mem_table(regions, fds));

  d->info_.device_id = spec.virtio_id;
  d->info_.pci_class = spec.pci_class;
  d->info_.features = features & ~bit(vhost_user::kFeatureProtocolFeatures);
  d->info_.num_queues = nq;
  d->info_.max_queue_size = spec.max_queue_size;
  d->info_.config_size = spec.config_size;
  // The driver sees the queue count this VM uses, which may be fewer than the backend has.
  if (spec.queue_count_offset >= 0 && (spec.multiqueue_feature < 0 || multiqueue)) {
    d->queue_count_offset_ = spec.queue_count_offset;
  }
  // Read the configuration once now: a backend that cannot answer fails here, before boot.
  std::vector<uint8_t> probe(spec.config_size);
  MOSS_TRY_VOID(d->read_config(0, probe));
  for (uint16_t q = 0; q < nq; q++) {
    MOSS_TRY(int k, MOSS_SYS(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)));
    d->kicks_.emplace_back(k);
    MOSS_TRY(int c, MOSS_SYS(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)));
    d->calls_.emplace_back(c);
  }
  return d;
}

Result<void> VhostUserDevice::read_config(uint32_t offset, std::span<uint8_t> data) {
  MOSS_TRY(auto cfg, fe_.get_config(0, info_.config_size));
  if (cfg.size() != info_.config_size) return make_error("the backend answered GET_CONFIG with the wrong size");
  if (queue_count_offset_ >= 0) {
    cfg[queue_count_offset_] = static_cast<uint8_t>(info_.num_queues);
    cfg[queue_count_offset_ + 1] = static_cast<uint8_t>(info_.num_queues >> 8);
  }
  MOSS_ASSERT(offset + data.size() <= cfg.size());
  std::memcpy(data.data(), cfg.data() + offset, data.size());
  return {};
}

Result<void> VhostUserDevice::write_config(uint32_t offset, std::span<const uint8_t> data) {
  return fe_.set_config(offset, data, 0);
}

Result<uint64_t> VhostUserDevice::user_address(uint64_t gpa, uint64_t len) const {
  for (const auto& r : memory_) {
    if (gpa >= r.gpa && gpa - r.gpa < r.size && len <= r.size - (gpa - r.gpa)) {
      return reinterpret_cast<uint64_t>(r.host) + (gpa - r.gpa);
    }
  }
  return make_error("the driver placed a ring outside guest memory");
}

Result<void> VhostUserDevice::start_ring(uint16_t q, const virtio_pci::QueueState& s, uint16_t base) {
  // Split ring sizes (2.7): 16-byte descriptors, then 6 + 2n for the driver area and
  // 6 + 8n for the device area; check each lies in guest memory before handing it over.
  MOSS_TRY(uint64_t desc, user_address(s.desc, 16ull * s.size));
  MOSS_TRY(uint64_t avail, user_address(s.driver, 6 + 2ull * s.size));
  MOSS_TRY(uint64_t used, user_address(s.device, 6 + 8ull * s.size));
  MOSS_TRY_VOID(fe_.set_vring_num(q, s.size));
  MOSS_TRY_VOID(fe_.set_vring_base(q, base));
  MOSS_TRY_VOID(fe_.set_vring_addr({q, 0, desc, used, avail, 0}));
  MOSS_TRY_VOID(fe_.set_vring_call(q, calls_[q].get()));
  MOSS_TRY_VOID(fe_.set_vring_kick(q, kicks_[q].get()));
  MOSS_TRY_VOID(fe_.set_vring_enable(q, true));
  started_.push_back(q);
  return {};
}

Result<void> VhostUserDevice::activate(uint64_t features, std::span<const virtio_pci::QueueState> queues) {
  MOSS_TRY_VOID(fe_.set_features(features | bit(vhost_user::kFeatureProtocolFeatures)));
  activated_ = true;
  rings_.assign(info_.num_queues, virtio_pci::QueueState{});
  for (uint16_t q = 0; q < queues.size() && q < info_.num_queues; q++) {
    if (!queues[q].enabled) continue;
    rings_[q] = queues[q];
    MOSS_TRY_VOID(start_ring(q, queues[q], 0));
  }
  return {};
}

Result<void> VhostUserDevice::reset() {
  // GET_VRING_BASE stops each ring once its in-flight requests are done (the spec's way to
  // take a ring back); RESET_DEVICE then clears what else the backend keeps.
  auto started = std::exchange(started_, {});
  activated_ = false;
  stopped_.clear();
  for (uint16_t q : started) MOSS_TRY_VOID(fe_.get_vring_base(q));
  if (protocol_ & bit(pf::kResetDevice)) MOSS_TRY_VOID(fe_.reset_device());
  return {};
}

Result<void> VhostUserDevice::can_save() const {
  if (protocol_ & bit(pf::kDeviceState)) return {};
  return make_error(name_ + ": its vhost-user backend cannot save its state (no DEVICE_STATE)");
}

namespace {

// Waits until `fd` is ready for `events` or the deadline passes.
Result<void> wait_fd(int fd, short events, std::chrono::steady_clock::time_point deadline, const std::string& what) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(left.count(), 0)));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error("poll", what);
    if (n == 0) return make_error(what + " did not finish within " + std::to_string(kBackendStateTimeoutMs / 1000) + " s");
    return {};
  }
}

}  // namespace

Result<UniqueFd> VhostUserDevice::open_state_transfer(uint32_t direction) {
  int p[2];
  MOSS_TRY_VOID(MOSS_SYS(pipe2(p, O_CLOEXEC | O_NONBLOCK)));
  const bool save = direction == vhost_user::kTransferSave;
  UniqueFd ours(save ? p[0] : p[1]), far(save ? p[1] : p[0]);
  MOSS_TRY(UniqueFd theirs, fe_.set_device_state_fd(direction, far.get()));
  // Our copy of the backend's end goes, so the backend closing its copy is EOF here (save).
  far.reset();
  if (theirs.valid()) {
    ours = std::move(theirs);
    MOSS_TRY(int flags, MOSS_SYS(fcntl(ours.get(), F_GETFL)));
    MOSS_TRY_VOID(MOSS_SYS(fcntl(ours.get(), F_SETFL, flags | O_NONBLOCK)));
  }
  return ours;
}

Result<std::vector<uint8_t>> VhostUserDevice::take_state() {
  MOSS_TRY(UniqueFd rd, open_state_transfer(vhost_user::kTransferSave));
  const std::string what = "the backend's state transfer";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kBackendStateTimeoutMs);
  std::vector<uint8_t> bytes;
  uint8_t buf[16384];
  for (;;) {
    ssize_t n = ::read(rd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      MOSS_TRY_VOID(wait_fd(rd.get(), POLLIN, deadline, what));
      continue;
    }
    if (n < 0) return sys_error("read", what);
    if (n == 0) break;
    if (bytes.size() + static_cast<size_t>(n) > kMaxBackendStateBytes) {
      return make_error("the backend sent more than " + std::to_string(kMaxBackendStateBytes >> 20) +
                        " MiB of device state");
    }
    bytes.insert(bytes.end(), buf, buf + n);
  }
  MOSS_TRY_VOID(fe_.check_device_state());
  return bytes;
}

Result<void> VhostUserDevice::give_state(std::span<const uint8_t> state) {
  MOSS_TRY(UniqueFd wr, open_state_transfer(vhost_user::kTransferLoad));
  const std::string what = "the backend's state transfer";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kBackendStateTimeoutMs);
  size_t done = 0;
  while (done < state.size()) {
    ssize_t n = ::write(wr.get(), state.data() + done, state.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      MOSS_TRY_VOID(wait_fd(wr.get(), POLLOUT, deadline, what));
      continue;
    }
    if (n < 0) return sys_error("write", what);
    done += static_cast<size_t>(n);
  }
  wr.reset();  // EOF: the backend loads what it read.
  return fe_.check_device_state();
}

Result<SavedBackend> VhostUserDevice::save() {
  MOSS_TRY_VOID(can_save());
  SavedBackend out;
  out.bases.resize(info_.num_queues);
  out.activated = activated_;
  if (!activated_) return out;
  // Stop every running ring; the backend answers once what it took from the ring is done.
  // A second save without a restart between finds them stopped already.
  for (uint16_t q : std::vector<uint16_t>(started_)) {
    auto base = fe_.get_vring_base(q);
    if (!base) return make_error(name_ + ": stopping queue " + std::to_string(q) + " failed: " + base.error().message);
    if (*base > 0xffff) return make_error(name_ + ": the backend gave queue " + std::to_string(q) + " a base above 65535");
    started_.erase(std::find(started_.begin(), started_.end(), q));
    stopped_.emplace_back(q, static_cast<uint16_t>(*base));
  }
  for (auto [q, base] : stopped_) out.bases[q] = base;
  auto state = take_state();
  if (!state) return make_error(name_ + ": saving its state failed: " + state.error().message);
  out.state = std::move(*state);
  return out;
}

Result<void> VhostUserDevice::restart() {
  auto stopped = std::exchange(stopped_, {});
  for (auto [q, base] : stopped) {
    MOSS_TRY_VOID(start_ring(q, rings_[q], base));
    uint64_t one = 1;
    if (::write(kicks_[q].get(), &one, sizeof one) < 0 && errno != EAGAIN) return sys_error("kick", "queue " + std::to_string(q));
  }
  return {};
}

Result<void> VhostUserDevice::restore(uint64_t features, std::span<const virtio_pci::SavedQueue> queues,
                                      std::span<const uint8_t> state) {
  MOSS_ASSERT(queues.size() == info_.num_queues);
  bool any = false;
  for (const auto& q : queues) any |= q.started;
  if (!any && state.empty()) return {};
  MOSS_TRY_VOID(can_save());
  auto failed = [&](const std::string& why) { return make_error(name_ + ": restoring its state failed: " + why); };
  if (auto r = fe_.set_features(features | bit(vhost_user::kFeatureProtocolFeatures)); !r) return failed(r.error().message);
  activated_ = true;
  rings_.assign(info_.num_queues, virtio_pci::QueueState{});
  // The rings' geometry and positions first (not started: the backend takes its state only
  // while every ring is stopped), then the state, then the kicks that start them.
  for (uint16_t q = 0; q < queues.size(); q++) {
    if (!queues[q].started) continue;
    const auto& s = queues[q].queue;
    rings_[q] = s;
    auto r = [&]() -> Result<void> {
      MOSS_TRY(uint64_t desc, user_address(s.desc, 16ull * s.size));
      MOSS_TRY(uint64_t avail, user_address(s.driver, 6 + 2ull * s.size));
      MOSS_TRY(uint64_t used, user_address(s.device, 6 + 8ull * s.size));
      MOSS_TRY_VOID(fe_.set_vring_num(q, s.size));
      MOSS_TRY_VOID(fe_.set_vring_base(q, queues[q].base));
      MOSS_TRY_VOID(fe_.set_vring_addr({q, 0, desc, used, avail, 0}));
      return {};
    }();
    if (!r) return failed(r.error().message);
  }
  if (auto r = give_state(state); !r) return failed(r.error().message);
  for (uint16_t q = 0; q < queues.size(); q++) {
    if (!queues[q].started) continue;
    if (auto r = start_ring(q, queues[q].queue, queues[q].base); !r) return failed(r.error().message);
    uint64_t one = 1;
    if (::write(kicks_[q].get(), &one, sizeof one) < 0 && errno != EAGAIN) return sys_error("kick", "queue " + std::to_string(q));
    if (::write(calls_[q].get(), &one, sizeof one) < 0 && errno != EAGAIN) return sys_error("signal", "queue " + std::to_string(q));
  }
  return {};
}

}  // namespace moss
