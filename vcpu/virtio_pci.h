// The virtio-pci modern transport (virtio 1.2, section 4.1) of one device, as a pure model.
//
// The guest's config-space and BAR accesses go in; what the device behind it must do comes out
// through a VirtioBackend (feature negotiation is done here, the rings and the device config
// live in the backend, e.g. a vhost-user worker). Interrupts are MSI-X only: the transport
// tells its owner which (address, data) message each queue raises, and the owner (the
// Machine) turns that into KVM GSI routes and irqfds. Queue notifications are meant to be KVM
// ioeventfds on notify_address(q); a notify write that still traps here is forwarded.
//
// BAR 0 (memory, 64-bit, kBarSize bytes) holds every region:
//   0x0000 common configuration    0x1000 ISR status    0x2000 device configuration
//   0x3000 notifications (4 bytes per queue)            0x4000 MSI-X table, 0x5000 PBA
//
// Thread-safety is the caller's: one lock around every call.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "vcpu/pci.h"

namespace moss::virtio_pci {

constexpr uint64_t kBarSize = 0x8000;
constexpr uint64_t kCommonOffset = 0x0000, kCommonSize = 0x38;
constexpr uint64_t kIsrOffset = 0x1000;
constexpr uint64_t kDeviceOffset = 0x2000, kDeviceMaxSize = 0x1000;
constexpr uint64_t kNotifyOffset = 0x3000, kNotifyMultiplier = 4;
constexpr uint64_t kMsixTableOffset = 0x4000, kMsixPbaOffset = 0x5000;
constexpr uint16_t kNoVector = 0xffff;
constexpr uint32_t kMaxQueues = 64;

// Device status bits (2.1).
constexpr uint8_t kStatusAcknowledge = 1, kStatusDriver = 2, kStatusDriverOk = 4, kStatusFeaturesOk = 8,
                  kStatusNeedsReset = 0x40, kStatusFailed = 0x80;

// Transport feature bits (6).
constexpr int kFeatureIndirectDesc = 28, kFeatureEventIdx = 29, kFeatureVersion1 = 32;

struct QueueState {
  uint16_t size = 0;  // As the driver set it (<= the maximum).
  bool enabled = false;
  uint16_t vector = kNoVector;
  uint64_t desc = 0, driver = 0, device = 0;  // Guest physical addresses.
};

// The device behind the transport. Calls are made with the transport's lock held.
class VirtioBackend {
 public:
  virtual ~VirtioBackend() = default;
  // Exactly data.size() bytes of device config from `offset` (already bounds-checked against
  // the config size the transport was given).
  virtual Result<void> read_config(uint32_t offset, std::span<uint8_t> data) = 0;
  virtual Result<void> write_config(uint32_t offset, std::span<const uint8_t> data) = 0;
  // DRIVER_OK: run the enabled queues with the negotiated features.
  virtual Result<void> activate(uint64_t features, std::span<const QueueState> queues) = 0;
  // The driver reset the device: stop every queue (after activate) and forget the features.
  virtual Result<void> reset() = 0;
};

struct DeviceInfo {
  uint16_t device_id = 0;      // Virtio device id (2 = block); PCI device id is 0x1040 + id.
  uint32_t pci_class = 0;      // Class code for config space (class << 16 | subclass << 8).
  uint64_t features = 0;       // What the device offers (transport bits are filtered here).
  uint16_t num_queues = 1;     // 1..kMaxQueues.
  uint16_t max_queue_size = 256;
  uint32_t config_size = 0;    // Bytes of device configuration, at most kDeviceMaxSize.
};

// An MSI message, as the MSI-X table entry holds it.
struct MsiMessage {
  uint64_t address = 0;
  uint32_t data = 0;
  bool operator==(const MsiMessage&) const = default;
};

// Everything of a transport the guest can see or set, as Transport::state() gives it and
// restore() applies it; the ring positions are the backend's (GET_VRING_BASE), filled in by
// whoever stopped the rings. encode_transport_state() makes the versioned blob a spore holds
// (ipc/vcpu.capnp DeviceState.transport); decode_transport_state() checks it against the
// device it is loaded into.
//
// Layout, version 1, little-endian:
//   0 char[8] "MOSSVPCI"   8 u32 version   12 u32 total length in bytes
//  16 u16 PCI command      18 u16 MSI-X message control   20 u16 queues   22 u16 MSI-X vectors
//  24 u64 BAR 0 address (as programmed, flag bits clear)
//  32 u32 device feature select   36 u32 driver feature select   40 u64 driver features
//  48 u8 status  49 u8 config generation  50 u16 config vector  52 u16 queue select
//  54 u8 flags (bit 0: failed)  55 u8 0   56 u64[2] PBA (bit v: vector v pending)
//  72 queues x { u16 size, u8 enabled, u8 flags (bit 0: ring started, base valid), u16 vector,
//                u16 ring base (next available index), u64 desc, u64 driver, u64 device }
//  .. vectors x { u32 address lo, u32 address hi, u32 data, u32 control }
// The decoder checks every field against the DeviceInfo, the exact length and that reserved
// bits are zero.
struct MsixEntryState {
  uint32_t address_lo = 0, address_hi = 0, data = 0, control = 1;
  bool operator==(const MsixEntryState&) const = default;
};
struct SavedQueue {
  QueueState queue;
  bool started = false;   // The backend ran this ring: `base` is where it stopped.
  uint16_t base = 0;
  bool operator==(const SavedQueue& o) const {
    return queue.size == o.queue.size && queue.enabled == o.queue.enabled && queue.vector == o.queue.vector &&
           queue.desc == o.queue.desc && queue.driver == o.queue.driver && queue.device == o.queue.device &&
           started == o.started && base == o.base;
  }
};
struct TransportState {
  static constexpr uint32_t kVersion = 1;
  static constexpr size_t kHeaderBytes = 72, kQueueBytes = 32, kVectorBytes = 16;
  uint16_t command = 0;
  uint16_t msix_control = 0;  // Only the enable and function-mask bits.
  uint64_t bar = 0;
  uint32_t device_feature_select = 0, driver_feature_select = 0;
  uint64_t driver_features = 0;
  uint8_t status = 0;
  uint8_t config_generation = 0;
  uint16_t config_vector = kNoVector;
  uint16_t queue_select = 0;
  bool failed = false;
  uint64_t pba[2] = {0, 0};
  std::vector<SavedQueue> queues;
  std::vector<MsixEntryState> msix;
  bool operator==(const TransportState&) const = default;
};
std::vector<uint8_t> encode_transport_state(const TransportState& s);
// Pure: an Error names the first thing wrong, in one sentence.
Result<TransportState> decode_transport_state(std::span<const uint8_t> bytes, const DeviceInfo& info);
// The features a transport for `info` offers the driver (the device's, filtered, plus VERSION_1).
uint64_t offered_features(const DeviceInfo& info);

class Transport {
 public:
  // `backend` must outlive the transport. The BAR starts at `bar_address` (kBarSize-aligned).
  Transport(const DeviceInfo& info, VirtioBackend& backend, uint64_t bar_address);

  std::shared_ptr<pci::ConfigSpace> config_space() const { return config_; }
  // Call after every guest write to config space (the BAR or MSI-X control may have changed).
  void config_written();

  // Where BAR 0 is now, or nullopt while memory decoding is off.
  std::optional<uint64_t> bar() const;
  uint64_t notify_address(uint16_t queue) const { return *bar() + kNotifyOffset + queue * kNotifyMultiplier; }

  // An access at `offset` into BAR 0 of 1, 2, 4 or 8 bytes.
  uint64_t read(uint64_t offset, uint32_t size);
  void write(uint64_t offset, uint32_t size, uint64_t value);

  // The message queue q raises now, or nullopt if it raises none (MSI-X off or the function
  // or vector masked: the owner then leaves the interrupt pending in the call eventfd, which
  // is delivered when the route comes back, as the spec's "pending bit" asks).
  std::optional<MsiMessage> queue_interrupt(uint16_t queue) const;
  uint16_t num_queues() const { return info_.num_queues; }
  uint16_t num_vectors() const { return static_cast<uint16_t>(info_.num_queues + 1); }
  uint8_t status() const { return status_; }
  // The backend failed: tell the driver (DEVICE_NEEDS_RESET) and stop using the backend.
  void fail(const std::string& why);
  // Bumped whenever queue_interrupt() of any queue, or bar(), may have changed.
  uint64_t generation() const { return generation_; }

  // What the guest can see or set (ring bases left unset: they are the backend's).
  TransportState state() const;
  // Applies a state decode_transport_state() accepted for this device's DeviceInfo, on a
  // transport the guest has not touched; the backend is not called. Bumps generation().
  void restore(const TransportState& s);

  // A notify write that reached the transport instead of an ioeventfd; the owner kicks.
  // Returns the queue index, or nullopt for a write outside the notify area.
  static std::optional<uint16_t> notify_queue(uint64_t offset, uint16_t num_queues);

 private:
  uint64_t read_common(uint64_t offset, uint32_t size);
  void write_common(uint64_t offset, uint32_t size, uint64_t value);
  void set_status(uint8_t status);
  void reset();
  uint64_t read_msix(uint64_t offset, uint32_t size) const;
  void write_msix(uint64_t offset, uint32_t size, uint64_t value);
  bool msix_enabled() const;
  bool msix_function_masked() const;
  QueueState* selected_queue();

  DeviceInfo info_;
  VirtioBackend& backend_;
  std::shared_ptr<pci::ConfigSpace> config_;
  uint8_t msix_cap_ = 0;  // Offset of the MSI-X capability in config space.

  uint32_t device_feature_select_ = 0;
  uint32_t driver_feature_select_ = 0;
  uint64_t driver_features_ = 0;
  uint16_t config_vector_ = kNoVector;
  uint8_t status_ = 0;
  uint8_t config_generation_ = 0;
  uint16_t queue_select_ = 0;
  std::vector<QueueState> queues_;
  struct MsixEntry {
    uint32_t address_lo = 0, address_hi = 0, data = 0, control = 1;  // Masked at reset.
  };
  std::vector<MsixEntry> msix_;
  bool failed_ = false;
  uint64_t generation_ = 0;
  std::optional<uint64_t> last_bar_;
  bool last_msix_enabled_ = false, last_function_masked_ = false;
};

}  // namespace moss::virtio_pci
