#include "vcpu/virtio_pci.h"

#include <cstring>

#include "base/log.h"

// Section numbers refer to the Virtual I/O Device (VIRTIO) Version 1.2 specification.
namespace moss::virtio_pci {
namespace {

constexpr uint16_t kVirtioVendor = 0x1af4;
constexpr uint16_t kModernDeviceBase = 0x1040;  // 4.1.2.1: PCI device id = 0x1040 + virtio id.
constexpr uint8_t kCapVendor = 0x09, kCapMsix = 0x11;
constexpr uint8_t kCfgCommon = 1, kCfgNotify = 2, kCfgIsr = 3, kCfgDevice = 4;  // 4.1.4
constexpr uint16_t kMsixEnable = 0x8000, kMsixFunctionMask = 0x4000;
constexpr uint64_t kMsixEntrySize = 16;

// Common configuration registers (4.1.4.3).
enum : uint64_t {
  kDeviceFeatureSelect = 0x00, kDeviceFeature = 0x04, kDriverFeatureSelect = 0x08, kDriverFeature = 0x0c,
  kConfigMsixVector = 0x10, kNumQueues = 0x12, kDeviceStatus = 0x14, kConfigGeneration = 0x15,
  kQueueSelect = 0x16, kQueueSize = 0x18, kQueueMsixVector = 0x1a, kQueueEnable = 0x1c,
  kQueueNotifyOff = 0x1e, kQueueDesc = 0x20, kQueueDriver = 0x28, kQueueDevice = 0x30,
};

// Bits of the device's feature set the transport passes to the driver: the device-specific
// ones (0-23) and the ring features this transport and a split-ring backend implement.
constexpr uint64_t kTransportFeatures = (1ull << kFeatureIndirectDesc) | (1ull << kFeatureEventIdx) |
                                        (1ull << kFeatureVersion1);
constexpr uint64_t kPassedFeatures = ((1ull << 24) - 1) | kTransportFeatures;

std::vector<uint8_t> le(uint64_t v, size_t n) {
  std::vector<uint8_t> out(n);
  for (size_t i = 0; i < n; i++) out[i] = static_cast<uint8_t>(v >> (8 * i));
  return out;
}

// struct virtio_pci_cap after cap_vndr and cap_next (4.1.4), all in BAR 0.
std::vector<uint8_t> virtio_cap(uint8_t type, uint64_t offset, uint64_t length, bool notify) {
  std::vector<uint8_t> body{static_cast<uint8_t>(notify ? 20 : 16), type, 0 /* bar */, 0 /* id */, 0, 0};
  for (uint8_t b : le(offset, 4)) body.push_back(b);
  for (uint8_t b : le(length, 4)) body.push_back(b);
  if (notify) {
    for (uint8_t b : le(kNotifyMultiplier, 4)) body.push_back(b);
  }
  return body;
}

// Writes `size` bytes of `value` into a wider register at byte `pos` (sub-word access).
uint64_t merge(uint64_t reg, uint64_t pos, uint32_t size, uint64_t value) {
  uint64_t mask = size >= 8 ? ~0ull : ((1ull << (8 * size)) - 1);
  return (reg & ~(mask << (8 * pos))) | ((value & mask) << (8 * pos));
}

void put(std::vector<uint8_t>& b, size_t off, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; i++) b[off + i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t get(std::span<const uint8_t> b, size_t off, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) v |= static_cast<uint64_t>(b[off + i]) << (8 * i);
  return v;
}

constexpr char kStateMagic[8] = {'M', 'O', 'S', 'S', 'V', 'P', 'C', 'I'};
constexpr uint16_t kCommandBits = 0x0001 | 0x0002 | 0x0004 | 0x0400;  // pci.cc's writable ones.
constexpr uint8_t kStatusBits = kStatusAcknowledge | kStatusDriver | kStatusDriverOk | kStatusFeaturesOk |
                                kStatusNeedsReset | kStatusFailed;

}  // namespace

uint64_t offered_features(const DeviceInfo& info) {
  return (info.features & kPassedFeatures) | (1ull << kFeatureVersion1);  // 4.1.2: a modern-only device.
}

std::vector<uint8_t> encode_transport_state(const TransportState& s) {
  MOSS_ASSERT(s.queues.size() <= kMaxQueues && s.msix.size() <= kMaxQueues + 1u);
  size_t total = TransportState::kHeaderBytes + s.queues.size() * TransportState::kQueueBytes +
                 s.msix.size() * TransportState::kVectorBytes;
  std::vector<uint8_t> b(total, 0);
  std::memcpy(b.data(), kStateMagic, 8);
  put(b, 8, TransportState::kVersion, 4);
  put(b, 12, total, 4);
  put(b, 16, s.command, 2);
  put(b, 18, s.msix_control, 2);
  put(b, 20, s.queues.size(), 2);
  put(b, 22, s.msix.size(), 2);
  put(b, 24, s.bar, 8);
  put(b, 32, s.device_feature_select, 4);
  put(b, 36, s.driver_feature_select, 4);
  put(b, 40, s.driver_features, 8);
  b[48] = s.status;
  b[49] = s.config_generation;
  put(b, 50, s.config_vector, 2);
  put(b, 52, s.queue_select, 2);
  b[54] = s.failed ? 1 : 0;
  put(b, 56, s.pba[0], 8);
  put(b, 64, s.pba[1], 8);
  size_t off = TransportState::kHeaderBytes;
  for (const auto& q : s.queues) {
    put(b, off, q.queue.size, 2);
    b[off + 2] = q.queue.enabled ? 1 : 0;
    b[off + 3] = q.started ? 1 : 0;
    put(b, off + 4, q.queue.vector, 2);
    put(b, off + 6, q.base, 2);
    put(b, off + 8, q.queue.desc, 8);
    put(b, off + 16, q.queue.driver, 8);
    put(b, off + 24, q.queue.device, 8);
    off += TransportState::kQueueBytes;
  }
  for (const auto& e : s.msix) {
    put(b, off, e.address_lo, 4);
    put(b, off + 4, e.address_hi, 4);
    put(b, off + 8, e.data, 4);
    put(b, off + 12, e.control, 4);
    off += TransportState::kVectorBytes;
  }
  return b;
}

Result<TransportState> decode_transport_state(std::span<const uint8_t> b, const DeviceInfo& info) {
  const std::string what = "the saved virtio-pci transport state";
  if (b.size() < TransportState::kHeaderBytes) return make_error(what + " is truncated");
  if (std::memcmp(b.data(), kStateMagic, 8) != 0) return make_error(what + " does not start with MOSSVPCI");
  if (get(b, 8, 4) != TransportState::kVersion) {
    return make_error(what + " has version " + std::to_string(get(b, 8, 4)) + "; this moss reads version " +
                      std::to_string(TransportState::kVersion));
  }
  const uint64_t nq = get(b, 20, 2), nv = get(b, 22, 2);
  if (nq != info.num_queues) {
    return make_error(what + " has " + std::to_string(nq) + " queues; the device has " + std::to_string(info.num_queues));
  }
  if (nv != nq + 1) return make_error(what + " has " + std::to_string(nv) + " MSI-X vectors; the device has " + std::to_string(nq + 1));
  const size_t total = TransportState::kHeaderBytes + nq * TransportState::kQueueBytes + nv * TransportState::kVectorBytes;
  if (get(b, 12, 4) != total || b.size() != total) return make_error(what + " has the wrong length");
  TransportState s;
  s.command = static_cast<uint16_t>(get(b, 16, 2));
  if (s.command & ~kCommandBits) return make_error(what + " sets PCI command bits a guest cannot set");
  s.msix_control = static_cast<uint16_t>(get(b, 18, 2));
  if (s.msix_control & ~(kMsixEnable | kMsixFunctionMask)) return make_error(what + " sets MSI-X control bits a guest cannot set");
  s.bar = get(b, 24, 8);
  if (s.bar & (kBarSize - 1)) return make_error(what + " places BAR 0 at an address not aligned to its size");
  s.device_feature_select = static_cast<uint32_t>(get(b, 32, 4));
  s.driver_feature_select = static_cast<uint32_t>(get(b, 36, 4));
  s.driver_features = get(b, 40, 8);
  const uint64_t offered = offered_features(info);
  if (s.driver_features & ~offered) return make_error(what + " holds driver features the device does not offer");
  s.status = b[48];
  if (s.status & ~kStatusBits) return make_error(what + " has an unknown device status bit");
  if ((s.status & kStatusFeaturesOk) && !(s.driver_features & (1ull << kFeatureVersion1))) {
    return make_error(what + " has FEATURES_OK without VERSION_1");
  }
  if ((s.status & kStatusDriverOk) && !(s.status & kStatusFeaturesOk)) {
    return make_error(what + " has DRIVER_OK without FEATURES_OK");
  }
  const bool live = s.status & kStatusDriverOk;
  s.config_generation = b[49];
  auto vector_ok = [&](uint64_t v) { return v == kNoVector || v < nv; };
  s.config_vector = static_cast<uint16_t>(get(b, 50, 2));
  if (!vector_ok(s.config_vector)) return make_error(what + " gives the configuration an MSI-X vector the device lacks");
  s.queue_select = static_cast<uint16_t>(get(b, 52, 2));
  if (b[54] & ~1u || b[55]) return make_error(what + " has reserved bits set");
  s.failed = b[54] & 1;
  s.pba[0] = get(b, 56, 8);
  s.pba[1] = get(b, 64, 8);
  for (uint64_t v = nv; v < 128; v++) {
    if ((s.pba[v / 64] >> (v % 64)) & 1) return make_error(what + " marks an MSI-X vector the device lacks pending");
  }
  size_t off = TransportState::kHeaderBytes;
  for (uint64_t i = 0; i < nq; i++, off += TransportState::kQueueBytes) {
    const std::string qn = what + " of queue " + std::to_string(i);
    SavedQueue q;
    q.queue.size = static_cast<uint16_t>(get(b, off, 2));
    if (q.queue.size && (q.queue.size > info.max_queue_size || (q.queue.size & (q.queue.size - 1)))) {
      return make_error(qn + " has a size that is not a power of 2 up to " + std::to_string(info.max_queue_size));
    }
    if (b[off + 2] > 1 || b[off + 3] > 1) return make_error(qn + " has reserved bits set");
    q.queue.enabled = b[off + 2];
    q.started = b[off + 3];
    q.queue.vector = static_cast<uint16_t>(get(b, off + 4, 2));
    if (!vector_ok(q.queue.vector)) return make_error(qn + " uses an MSI-X vector the device lacks");
    q.base = static_cast<uint16_t>(get(b, off + 6, 2));
    q.queue.desc = get(b, off + 8, 8);
    q.queue.driver = get(b, off + 16, 8);
    q.queue.device = get(b, off + 24, 8);
    if (q.started && (!live || !q.queue.enabled || !q.queue.size || s.failed)) {
      return make_error(qn + " has a running ring on a queue the driver did not start");
    }
    if (!q.started && q.base) return make_error(qn + " has a ring position for a ring that never ran");
    s.queues.push_back(q);
  }
  for (uint64_t i = 0; i < nv; i++, off += TransportState::kVectorBytes) {
    MsixEntryState e{static_cast<uint32_t>(get(b, off, 4)), static_cast<uint32_t>(get(b, off + 4, 4)),
                     static_cast<uint32_t>(get(b, off + 8, 4)), static_cast<uint32_t>(get(b, off + 12, 4))};
    if (e.control & ~1u) return make_error(what + " sets reserved MSI-X vector control bits");
    s.msix.push_back(e);
  }
  return s;
}

Transport::Transport(const DeviceInfo& info, VirtioBackend& backend, uint64_t bar_address)
    : info_(info), backend_(backend), queues_(info.num_queues), msix_(info.num_queues + 1u) {
  MOSS_ASSERT(info.num_queues >= 1 && info.num_queues <= kMaxQueues);
  MOSS_ASSERT(info.config_size <= kDeviceMaxSize);
  MOSS_ASSERT(info.max_queue_size >= 1 && (info.max_queue_size & (info.max_queue_size - 1)) == 0);
  info_.features = offered_features(info);
  config_ = std::make_shared<pci::ConfigSpace>(kVirtioVendor, static_cast<uint16_t>(kModernDeviceBase + info.device_id),
                                               info.pci_class, kVirtioVendor, static_cast<uint16_t>(0x40 + info.device_id),
                                               1 /* revision: modern */);
  config_->set_bar(0, pci::Bar{kBarSize, true, false}, bar_address);
  auto add_read_only = [&](const std::vector<uint8_t>& body) {
    config_->add_capability(kCapVendor, body, std::vector<uint8_t>(body.size(), 0));
  };
  add_read_only(virtio_cap(kCfgCommon, kCommonOffset, kCommonSize, false));
  add_read_only(virtio_cap(kCfgNotify, kNotifyOffset, info.num_queues * kNotifyMultiplier, true));
  add_read_only(virtio_cap(kCfgIsr, kIsrOffset, 1, false));
  if (info.config_size) add_read_only(virtio_cap(kCfgDevice, kDeviceOffset, info.config_size, false));
  // MSI-X (PCI Local Bus 3.0, 6.8.2): control (table size - 1; enable and function mask
  // writable), table and PBA offsets with BIR 0.
  std::vector<uint8_t> msix;
  for (uint8_t b : le(num_vectors() - 1u, 2)) msix.push_back(b);
  for (uint8_t b : le(kMsixTableOffset, 4)) msix.push_back(b);
  for (uint8_t b : le(kMsixPbaOffset, 4)) msix.push_back(b);
  std::vector<uint8_t> msix_mask(msix.size(), 0);
  msix_mask[1] = static_cast<uint8_t>((kMsixEnable | kMsixFunctionMask) >> 8);
  msix_cap_ = config_->add_capability(kCapMsix, msix, msix_mask);
  config_->set_interrupt_pin(0, 0);  // No INTx: MSI-X only.
  last_bar_ = bar();
}

std::optional<uint64_t> Transport::bar() const {
  if (!config_->memory_enabled()) return std::nullopt;
  return config_->bar_address(0);
}

bool Transport::msix_enabled() const { return config_->read(msix_cap_ + 2u, 2) & kMsixEnable; }
bool Transport::msix_function_masked() const { return config_->read(msix_cap_ + 2u, 2) & kMsixFunctionMask; }

void Transport::config_written() {
  auto b = bar();
  bool en = msix_enabled(), fm = msix_function_masked();
  if (b != last_bar_ || en != last_msix_enabled_ || fm != last_function_masked_) generation_++;
  last_bar_ = b;
  last_msix_enabled_ = en;
  last_function_masked_ = fm;
}

std::optional<uint16_t> Transport::notify_queue(uint64_t offset, uint16_t num_queues) {
  if (offset < kNotifyOffset || offset >= kNotifyOffset + num_queues * kNotifyMultiplier) return std::nullopt;
  return static_cast<uint16_t>((offset - kNotifyOffset) / kNotifyMultiplier);
}

uint64_t Transport::read(uint64_t offset, uint32_t size) {
  if (size != 1 && size != 2 && size != 4 && size != 8) return 0;
  if (offset >= kCommonOffset && offset + size <= kCommonOffset + kCommonSize) return read_common(offset, size);
  if (offset == kIsrOffset) return 0;  // MSI-X only: the ISR never has a bit set.
  if (offset >= kDeviceOffset && offset + size <= kDeviceOffset + info_.config_size) {
    if (failed_) return ~0ull >> (64 - 8 * size);
    uint8_t buf[8] = {};
    auto r = backend_.read_config(static_cast<uint32_t>(offset - kDeviceOffset), std::span<uint8_t>(buf, size));
    if (!r) {
      fail("reading the device configuration failed: " + r.error().message);
      return ~0ull >> (64 - 8 * size);
    }
    uint64_t v = 0;
    for (uint32_t i = 0; i < size; i++) v |= static_cast<uint64_t>(buf[i]) << (8 * i);
    return v;
  }
  if (offset >= kMsixTableOffset && offset < kMsixPbaOffset + 8) return read_msix(offset, size);
  return 0;  // Reserved space and the notify area read as zero.
}

void Transport::write(uint64_t offset, uint32_t size, uint64_t value) {
  if (size != 1 && size != 2 && size != 4 && size != 8) return;
  if (offset >= kCommonOffset && offset + size <= kCommonOffset + kCommonSize) return write_common(offset, size, value);
  if (offset >= kDeviceOffset && offset + size <= kDeviceOffset + info_.config_size) {
    if (failed_) return;
    uint8_t buf[8];
    for (uint32_t i = 0; i < size; i++) buf[i] = static_cast<uint8_t>(value >> (8 * i));
    auto r = backend_.write_config(static_cast<uint32_t>(offset - kDeviceOffset), std::span<const uint8_t>(buf, size));
    if (!r) fail("writing the device configuration failed: " + r.error().message);
    return;
  }
  if (offset >= kMsixTableOffset && offset < kMsixTableOffset + msix_.size() * kMsixEntrySize) {
    write_msix(offset, size, value);
  }
  // Everything else (ISR, PBA, reserved space) is read-only; notify writes are the owner's.
}

QueueState* Transport::selected_queue() {
  return queue_select_ < queues_.size() ? &queues_[queue_select_] : nullptr;
}

uint64_t Transport::read_common(uint64_t offset, uint32_t size) {
  // Each register is read whole and the requested bytes extracted, so a driver reading a
  // 64-bit address as two 32-bit halves (Linux does) gets each half.
  auto field = [&](uint64_t base, uint32_t width, uint64_t v) -> std::optional<uint64_t> {
    if (offset < base || offset + size > base + width) return std::nullopt;
    uint64_t shifted = v >> (8 * (offset - base));
    return size >= 8 ? shifted : shifted & ((1ull << (8 * size)) - 1);
  };
  const QueueState* q = selected_queue();
  QueueState none;
  if (!q) q = &none;
  uint64_t dev_features =
      device_feature_select_ < 2 ? static_cast<uint32_t>(info_.features >> (32 * device_feature_select_)) : 0;
  uint64_t drv_features =
      driver_feature_select_ < 2 ? static_cast<uint32_t>(driver_features_ >> (32 * driver_feature_select_)) : 0;
  const std::pair<uint64_t, std::pair<uint32_t, uint64_t>> regs[] = {
      {kDeviceFeatureSelect, {4, device_feature_select_}},
      {kDeviceFeature, {4, dev_features}},
      {kDriverFeatureSelect, {4, driver_feature_select_}},
      {kDriverFeature, {4, drv_features}},
      {kConfigMsixVector, {2, config_vector_}},
      {kNumQueues, {2, info_.num_queues}},
      {kDeviceStatus, {1, status_}},
      {kConfigGeneration, {1, config_generation_}},
      {kQueueSelect, {2, queue_select_}},
      {kQueueSize, {2, selected_queue() ? (q->size ? q->size : info_.max_queue_size) : 0}},
      {kQueueMsixVector, {2, q->vector}},
      {kQueueEnable, {2, q->enabled ? 1u : 0u}},
      {kQueueNotifyOff, {2, selected_queue() ? queue_select_ : 0}},
      {kQueueDesc, {8, q->desc}},
      {kQueueDriver, {8, q->driver}},
      {kQueueDevice, {8, q->device}},
  };
  for (const auto& [base, wv] : regs) {
    if (auto v = field(base, wv.first, wv.second)) return *v;
  }
  return 0;  // An access straddling two registers.
}

void Transport::write_common(uint64_t offset, uint32_t size, uint64_t value) {
  QueueState* q = selected_queue();
  const bool live = status_ & kStatusDriverOk;
  auto addr = [&](uint64_t base, uint64_t& reg) {
    if (offset >= base && offset + size <= base + 8 && q && !live) reg = merge(reg, offset - base, size, value);
  };
  switch (offset) {
    case kDeviceFeatureSelect: device_feature_select_ = static_cast<uint32_t>(value); return;
    case kDriverFeatureSelect: driver_feature_select_ = static_cast<uint32_t>(value); return;
    case kDriverFeature:
      // Only before FEATURES_OK (3.1.1); bits the device did not offer are dropped.
      if (size == 4 && driver_feature_select_ < 2 && !(status_ & kStatusFeaturesOk)) {
        uint64_t shift = 32 * driver_feature_select_;
        driver_features_ = (driver_features_ & ~(0xffffffffull << shift)) | ((value & 0xffffffffull) << shift);
      }
      return;
    case kConfigMsixVector:
      if (size == 2) {
        config_vector_ = value < num_vectors() ? static_cast<uint16_t>(value) : kNoVector;
        generation_++;
      }
      return;
    case kDeviceStatus:
      if (size == 1) set_status(static_cast<uint8_t>(value));
      return;
    case kQueueSelect:
      if (size == 2) queue_select_ = static_cast<uint16_t>(value);
      return;
    case kQueueSize:
      // 2.7: split rings are a power of two in size; others are refused (reads show the old value).
      if (size == 2 && q && !live && value >= 1 && value <= info_.max_queue_size && !(value & (value - 1))) {
        q->size = static_cast<uint16_t>(value);
      }
      return;
    case kQueueMsixVector:
      if (size == 2 && q) {
        q->vector = value < num_vectors() ? static_cast<uint16_t>(value) : kNoVector;
        generation_++;
      }
      return;
    case kQueueEnable:
      if (size == 2 && q && !live && value == 1) q->enabled = true;  // 4.1.4.3.2: only 1 is written.
      return;
    default:
      break;
  }
  if (q) {
    addr(kQueueDesc, q->desc);
    addr(kQueueDriver, q->driver);
    addr(kQueueDevice, q->device);
  }
}

void Transport::set_status(uint8_t status) {
  if (status == 0) return reset();
  uint8_t rising = static_cast<uint8_t>(status & ~status_);
  if (rising & kStatusFeaturesOk) {
    // 3.1.1: the device may refuse the feature set; then FEATURES_OK reads back clear.
    bool ok = !(driver_features_ & ~info_.features) && (driver_features_ & (1ull << kFeatureVersion1));
    if (!ok) status = static_cast<uint8_t>(status & ~kStatusFeaturesOk);
  }
  if ((rising & kStatusDriverOk) && !failed_) {
    if (!(status_ & kStatusFeaturesOk) && !(status & kStatusFeaturesOk)) {
      status = static_cast<uint8_t>(status & ~kStatusDriverOk);  // DRIVER_OK without FEATURES_OK.
    } else {
      for (auto& q : queues_) {
        if (q.enabled && !q.size) q.size = info_.max_queue_size;
      }
      status_ = status;
      auto r = backend_.activate(driver_features_, queues_);
      if (!r) fail("starting the device failed: " + r.error().message);
      generation_++;
      return;
    }
  }
  status_ = static_cast<uint8_t>(status | (failed_ ? kStatusNeedsReset : 0));
}

void Transport::reset() {
  if (status_ & kStatusDriverOk && !failed_) {
    auto r = backend_.reset();
    if (!r) {
      fail("resetting the device failed: " + r.error().message);
    }
  }
  status_ = failed_ ? kStatusNeedsReset : 0;
  driver_features_ = 0;
  device_feature_select_ = driver_feature_select_ = 0;
  queue_select_ = 0;
  config_vector_ = kNoVector;
  for (auto& q : queues_) q = QueueState{};
  config_generation_++;
  generation_++;
}

void Transport::fail(const std::string& why) {
  if (!failed_) LOG_ERROR("virtio device %u: %s", info_.device_id, why.c_str());
  failed_ = true;
  status_ |= kStatusNeedsReset;
  generation_++;
}

uint64_t Transport::read_msix(uint64_t offset, uint32_t size) const {
  if (offset >= kMsixPbaOffset) return 0;  // Pending bits live in the call eventfds.
  uint64_t idx = (offset - kMsixTableOffset) / kMsixEntrySize, pos = (offset - kMsixTableOffset) % kMsixEntrySize;
  if (idx >= msix_.size() || pos + size > kMsixEntrySize) return 0;
  const MsixEntry& e = msix_[idx];
  uint32_t words[4] = {e.address_lo, e.address_hi, e.data, e.control};
  uint64_t v = 0;
  for (uint32_t i = 0; i < size; i++) {
    uint64_t byte = pos + i;
    v |= static_cast<uint64_t>((words[byte / 4] >> (8 * (byte % 4))) & 0xff) << (8 * i);
  }
  return v;
}

void Transport::write_msix(uint64_t offset, uint32_t size, uint64_t value) {
  uint64_t idx = (offset - kMsixTableOffset) / kMsixEntrySize, pos = (offset - kMsixTableOffset) % kMsixEntrySize;
  if (pos + size > kMsixEntrySize || (size != 4 && size != 8)) return;  // 6.8.2: dword or qword.
  MsixEntry& e = msix_[idx];
  uint32_t* words[4] = {&e.address_lo, &e.address_hi, &e.data, &e.control};
  for (uint32_t i = 0; i < size / 4; i++) {
    uint64_t w = pos / 4 + i;
    uint32_t v = static_cast<uint32_t>(value >> (32 * i));
    *words[w] = w == 3 ? (v & 1u) : v;  // Only the mask bit of vector control is writable.
  }
  generation_++;
}

std::optional<MsiMessage> Transport::queue_interrupt(uint16_t queue) const {
  if (queue >= queues_.size() || !msix_enabled() || msix_function_masked()) return std::nullopt;
  uint16_t v = queues_[queue].vector;
  if (v >= msix_.size() || (msix_[v].control & 1)) return std::nullopt;
  return MsiMessage{(static_cast<uint64_t>(msix_[v].address_hi) << 32) | msix_[v].address_lo, msix_[v].data};
}

TransportState Transport::state() const {
  TransportState s;
  s.command = static_cast<uint16_t>(config_->read(0x04, 2) & kCommandBits);
  s.msix_control = static_cast<uint16_t>(config_->read(msix_cap_ + 2u, 2) & (kMsixEnable | kMsixFunctionMask));
  s.bar = config_->bar_address(0);
  s.device_feature_select = device_feature_select_;
  s.driver_feature_select = driver_feature_select_;
  s.driver_features = driver_features_;
  s.status = status_;
  s.config_generation = config_generation_;
  s.config_vector = config_vector_;
  s.queue_select = queue_select_;
  s.failed = failed_;
  for (const auto& q : queues_) s.queues.push_back(SavedQueue{q, false, 0});
  for (const auto& e : msix_) s.msix.push_back({e.address_lo, e.address_hi, e.data, e.control});
  return s;
}

void Transport::restore(const TransportState& s) {
  MOSS_ASSERT(s.queues.size() == queues_.size() && s.msix.size() == msix_.size());
  config_->write(0x04, 2, s.command);
  config_->write(0x10, 4, static_cast<uint32_t>(s.bar));
  config_->write(0x14, 4, static_cast<uint32_t>(s.bar >> 32));
  config_->write(msix_cap_ + 2u, 2, s.msix_control);
  device_feature_select_ = s.device_feature_select;
  driver_feature_select_ = s.driver_feature_select;
  driver_features_ = s.driver_features;
  status_ = s.status;
  config_generation_ = s.config_generation;
  config_vector_ = s.config_vector;
  queue_select_ = s.queue_select;
  failed_ = s.failed;
  for (size_t i = 0; i < queues_.size(); i++) queues_[i] = s.queues[i].queue;
  for (size_t i = 0; i < msix_.size(); i++) {
    msix_[i] = {s.msix[i].address_lo, s.msix[i].address_hi, s.msix[i].data, s.msix[i].control};
  }
  config_written();
  generation_++;
}

}  // namespace moss::virtio_pci
