#include "vcpu/vhost_user_device.h"

#include <sys/eventfd.h>

#include <algorithm>
#include <cstring>

#include "base/syscall.h"

namespace moss {
namespace {

using vhost_user::bit;
namespace pf = vhost_user::protocol_feature;

constexpr uint32_t kBlkNumQueuesOffset = 34;
constexpr int kBlkFeatureMq = 12;

// What differs between the device kinds we front.
struct Kind {
  uint16_t device_id;
  uint32_t pci_class;    // As QEMU's virtio-*-pci report it.
  uint32_t config_size;  // What QEMU's vhost-user frontends ask GET_CONFIG for, so backends
                         // written for QEMU answer.
  uint16_t fixed_queues; // 0: one per vCPU, up to what the backend offers (MQ).
};
// Block: struct virtio_blk_config up to write_zeroes_may_unmap and its padding (5.2.4).
// Socket: le64 guest_cid (5.10.4); rx, tx and event queues.
constexpr Kind kKinds[] = {{VhostUserDevice::kBlockDeviceId, 0x010000, 60, 0},
                           {VhostUserDevice::kSocketDeviceId, 0x078000, 8, 3}};

}  // namespace

Result<std::unique_ptr<VhostUserDevice>> VhostUserDevice::connect(UniqueFd sock, uint16_t device_id,
                                                                  std::span<const SharedRegion> memory,
                                                                  uint16_t max_queues) {
  const Kind* kind = nullptr;
  for (const auto& k : kKinds) {
    if (k.device_id == device_id) kind = &k;
  }
  if (!kind) return make_error("vhost-user devices of virtio type " + std::to_string(device_id) + " are not supported");
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
  d->protocol_ = offered & (bit(pf::kMq) | bit(pf::kReplyAck) | bit(pf::kConfig) | bit(pf::kResetDevice));
  MOSS_CHECK(fe.set_protocol_features(d->protocol_));
  MOSS_CHECK(fe.set_owner());
  uint64_t queues = 1;
  if (d->protocol_ & bit(pf::kMq)) {
    MOSS_TRY(queues, fe.get_queue_num());
    if (queues == 0) return make_error("the vhost-user backend reports zero queues");
  }
  uint16_t nq;
  if (kind->fixed_queues) {
    if (queues < kind->fixed_queues) return make_error("the vhost-user backend offers too few queues");
    nq = kind->fixed_queues;
  } else {
    nq = static_cast<uint16_t>(std::min<uint64_t>({queues, max_queues, virtio_pci::kMaxQueues}));
    if (!(features & bit(kBlkFeatureMq))) nq = 1;
  }

  std::vector<vhost_user::MemoryRegion> regions;
  std::vector<int> fds;
  for (const auto& r : memory) {
    regions.push_back({r.gpa, r.size, reinterpret_cast<uint64_t>(r.host), r.fd_offset});
    fds.push_back(r.fd);
  }
  MOSS_CHECK(fe.set_mem_table(regions, fds));

  d->info_.device_id = device_id;
  d->info_.pci_class = kind->pci_class;
  d->info_.features = features & ~bit(vhost_user::kFeatureProtocolFeatures);
  d->info_.num_queues = nq;
  d->info_.max_queue_size = 256;
  d->info_.config_size = kind->config_size;
  // Read the configuration once now: a backend that cannot answer fails here, before boot.
  std::vector<uint8_t> probe(kind->config_size);
  MOSS_CHECK(d->read_config(0, probe));
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
  // The driver sees the queue count this VM uses, which may be fewer than the backend has.
  if (info_.device_id == kBlockDeviceId && (info_.features & bit(kBlkFeatureMq))) {
    cfg[kBlkNumQueuesOffset] = static_cast<uint8_t>(info_.num_queues);
    cfg[kBlkNumQueuesOffset + 1] = static_cast<uint8_t>(info_.num_queues >> 8);
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

Result<void> VhostUserDevice::activate(uint64_t features, std::span<const virtio_pci::QueueState> queues) {
  MOSS_CHECK(fe_.set_features(features | bit(vhost_user::kFeatureProtocolFeatures)));
  for (uint16_t q = 0; q < queues.size() && q < info_.num_queues; q++) {
    const auto& s = queues[q];
    if (!s.enabled) continue;
    // Split ring sizes (2.7): 16-byte descriptors, then 6 + 2n for the driver area and
    // 6 + 8n for the device area; check each lies in guest memory before handing it over.
    MOSS_TRY(uint64_t desc, user_address(s.desc, 16ull * s.size));
    MOSS_TRY(uint64_t avail, user_address(s.driver, 6 + 2ull * s.size));
    MOSS_TRY(uint64_t used, user_address(s.device, 6 + 8ull * s.size));
    MOSS_CHECK(fe_.set_vring_num(q, s.size));
    MOSS_CHECK(fe_.set_vring_base(q, 0));
    MOSS_CHECK(fe_.set_vring_addr({q, 0, desc, used, avail, 0}));
    MOSS_CHECK(fe_.set_vring_kick(q, kicks_[q].get()));
    MOSS_CHECK(fe_.set_vring_call(q, calls_[q].get()));
    MOSS_CHECK(fe_.set_vring_enable(q, true));
    started_.push_back(q);
  }
  return {};
}

Result<void> VhostUserDevice::reset() {
  // GET_VRING_BASE stops each ring once its in-flight requests are done (the spec's way to
  // take a ring back); RESET_DEVICE then clears what else the backend keeps.
  auto started = std::exchange(started_, {});
  for (uint16_t q : started) MOSS_CHECK(fe_.get_vring_base(q));
  if (protocol_ & bit(pf::kResetDevice)) MOSS_CHECK(fe_.reset_device());
  return {};
}

}  // namespace moss
