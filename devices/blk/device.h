// The virtio-blk device (virtio 1.2, 5.2) as a vhost-user DeviceInterface: rings in, disk I/O
// through the Engine out of order, used elements and interrupts back.
//
// One BlkDevice serves one frontend connection (one Backend) on the worker runtime
// (devices/worker/device.h); the Disk and the Engine outlive it and serve the next. Everything
// runs on the worker's thread: the Backend calls the DeviceInterface methods, the runtime calls
// on_kick() when a ring's kick eventfd fired (it has read it), and the device watches the
// engine's completion fd itself while it lives.
//
// Guest input is trusted for nothing: chains go through walk_chain and parse_request, and a
// request the guest got wrong is answered with VIRTIO_BLK_S_IOERR or UNSUPP in its status
// byte. A chain with no status byte, a ring index that runs away or a head offered twice
// breaks the queue: it stops being processed and its error eventfd is signalled, until the
// driver resets the device.
//
// Quiescing and state travel over vhost-user: GET_VRING_BASE stops a ring and drains what is in
// flight (on_queue_stopped); with every ring stopped, DEVICE_STATE saves state() or loads a
// saved one (load_state), which the rings must then start from.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "devices/blk/disk.h"
#include "devices/blk/engine.h"
#include "devices/blk/inflight.h"
#include "devices/blk/request.h"
#include "devices/blk/state.h"
#include "base/event.h"
#include "devices/virtio/rings.h"
#include "devices/worker/device.h"
#include "vhost-user/backend.h"

namespace moss::blk {

// Virtio feature bits (virtio 1.2, 5.2.3 and 6).
namespace feature {
constexpr int kSizeMax = 1;
constexpr int kSegMax = 2;
constexpr int kRo = 5;
constexpr int kBlkSize = 6;
constexpr int kFlush = 9;
constexpr int kTopology = 10;
constexpr int kMq = 12;
constexpr int kDiscard = 13;
constexpr int kWriteZeroes = 14;
using namespace virtio::feature;
}  // namespace feature

struct DeviceOptions {
  uint32_t num_queues = 1;  // 1..256; the driver may use fewer.
  std::string serial;       // GET_ID; empty: the disk's default. At most 20 bytes.
};

// Limits the device announces. Linux builds requests of at most seg_max segments of at most
// size_max bytes, so one request stays within the engine's default bounce budget (64 MiB).
constexpr uint32_t kMaxQueueSize = 1024;
constexpr uint32_t kMaxSegments = 254;     // seg_max
constexpr uint32_t kMaxSegmentBytes = 256 * 1024;  // size_max
constexpr size_t kConfigSize = 96;  // struct virtio_blk_config up to and including zoned.

// The config space the guest sees (virtio 1.2, 5.2.4). Pure.
std::array<uint8_t, kConfigSize> config_space(const DiskInfo& disk, uint32_t num_queues);

// Whether a saved state was taken of this disk as this worker shows it (capacity, read-only
// flag, serial, queue count); an Error names what differs. Pure.
Result<void> check_state_fits(const SavedState& s, const DiskInfo& disk, const std::string& serial,
                              uint32_t num_queues);

// Requests the device has returned to the guest, by kind (the broker's `stats`).
struct Counters {
  uint64_t read_requests = 0;
  uint64_t write_requests = 0;
  uint64_t flush_requests = 0;
  uint64_t other_requests = 0;  // GET_ID, DISCARD, WRITE_ZEROES, and requests that did not parse.
  uint64_t bytes_read = 0;      // Of requests that succeeded.
  uint64_t bytes_written = 0;
  uint64_t errors = 0;          // Requests answered with a status other than OK.
  Counters& operator+=(const Counters& o);
  bool operator==(const Counters&) const = default;
};

class BlkDevice final : public runtime::Device {
 public:
  // `disk` and `engine` outlive the device; options.num_queues is 1..256. `loop`: where the
  // device watches the engine's completions.
  BlkDevice(const Disk& disk, Engine& engine, DeviceOptions options, event_base* loop);
  ~BlkDevice() override;
  BlkDevice(const BlkDevice&) = delete;
  BlkDevice& operator=(const BlkDevice&) = delete;

  // runtime::Device.
  void attach(const vhost_user::Backend& backend) override { rings_.attach(backend); }
  void on_kick(uint32_t queue) override;
  uint32_t in_flight() const override;
  void drain() override;
  runtime::Stats stats() const override;

  void on_io_ready();
  const Counters& counters() const { return counters_; }
  const std::string& serial() const { return serial_; }

  // The device's state as save_state() writes it: the driver's features (or those a loaded
  // state expects), and per ring where it stands now if it runs, or where it stopped. Needs
  // in_flight() == 0 (every ring stopped, or drained).
  SavedState state() const;

  // DeviceInterface.
  uint64_t features() const override;
  uint64_t protocol_features() const override;
  uint32_t num_queues() const override { return static_cast<uint32_t>(queues_.size()); }
  uint32_t max_queue_size() const override { return kMaxQueueSize; }
  Result<void> set_features(uint64_t acked) override;
  Result<std::vector<uint8_t>> get_config(uint32_t offset, uint32_t size) override;
  Result<void> set_config(uint32_t offset, std::span<const uint8_t> data, uint32_t flags) override;
  Result<void> on_queue_started(uint32_t index, const vhost_user::Vring& vring) override;
  uint16_t on_queue_stopped(uint32_t index) override;
  void on_queue_enabled(uint32_t index, bool enabled) override;
  void on_memory_changing() override;
  void reset() override;
  Result<std::vector<uint8_t>> save_state() override;
  Result<void> load_state(std::span<const uint8_t> bytes) override;
  size_t max_state_bytes() const override { return SavedState::kMaxBytes; }

 private:
  enum class Kind : uint8_t { kRead, kWrite, kFlush, kOther };
  struct Slot {
    bool busy = false;
    Kind kind = Kind::kOther;
    uint64_t bytes = 0;      // Data bytes of a read or write (counted if it succeeds).
    uint32_t pending = 0;    // Engine operations not yet finished.
    uint8_t status = kOk;
    uint32_t used_len = 0;   // Bytes written into the chain, status byte included.
    std::span<uint8_t> status_byte;
  };
  // What blk keeps per ring beside the RingSet.
  struct QueueState {
    std::optional<InflightTracker> inflight;
    const uint8_t* inflight_base = nullptr;  // The buffer mapping the tracker was made for.
    std::vector<uint16_t> resubmit;  // Heads a previous backend left in flight.
    std::vector<Slot> slots;         // By head.
    uint32_t in_flight = 0;
  };

  DiskGeometry geometry() const;
  bool write_through() const { return !(features_.acked() & (uint64_t{1} << feature::kFlush)); }
  void process(uint32_t q);
  void start_request(uint32_t q, uint16_t head);
  void complete(uint32_t q, uint16_t head);
  void on_done(Engine::Tag tag, int res);
  void drain(uint32_t q);
  void count(const Slot& s);
  InflightTracker* tracker(uint32_t q);

  const Disk& disk_;
  Engine& engine_;
  const std::string serial_;
  const std::array<uint8_t, kConfigSize> config_;
  virtio::DriverFeatures features_;
  virtio::RingSet rings_;
  std::vector<QueueState> queues_;
  // Where each ring stood when it last stopped: what save_state records.
  std::vector<QueuePosition> positions_;
  // From load_state: what the frontend's ring positions must match.
  std::vector<QueuePosition> expected_positions_;
  Counters counters_;
  Event engine_event_;
};

}  // namespace moss::blk
