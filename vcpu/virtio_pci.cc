#include "vcpu/virtio_pci.h"

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

}  // namespace

Transport::Transport(const DeviceInfo& info, VirtioBackend& backend, uint64_t bar_address)
    : info_(info), backend_(backend), queues_(info.num_queues), msix_(info.num_queues + 1u) {
  MOSS_ASSERT(info.num_queues >= 1 && info.num_queues <= kMaxQueues);
  MOSS_ASSERT(info.config_size <= kDeviceMaxSize);
  MOSS_ASSERT(info.max_queue_size >= 1 && (info.max_queue_size & (info.max_queue_size - 1)) == 0);
  info_.features &= kPassedFeatures;
  info_.features |= 1ull << kFeatureVersion1;  // 4.1.2: a modern-only device.
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

}  // namespace moss::virtio_pci
