// The virtio-blk device (virtio 1.2, 5.2) as a vhost-user DeviceInterface: rings in, disk I/O
// through the Engine out of order, used elements and interrupts back.
//
// One BlkDevice serves one frontend connection (one Backend) on the worker runtime, a
// runtime::VirtioDevice (devices/worker/virtio_device.h); the Disk and the Engine outlive it
// and serve the next. Everything runs on the worker's thread: the base calls process() when a
// ring was kicked, enabled or started, and the device watches the engine's completion fd
// itself while it lives.
//
// Guest input is trusted for nothing: chains go through walk_chain and parse_request, and a
// request the guest got wrong is answered with VIRTIO_BLK_S_IOERR or UNSUPP in its status
// byte. A chain with no status byte, a ring index that runs away or a head offered twice
// breaks the queue: it stops being processed and its error eventfd is signalled, until the
// driver resets the device.
//
// Quiescing and state travel over vhost-user: GET_VRING_BASE stops a ring and drains what is in
// flight (ring_stopping); with every ring stopped, DEVICE_STATE saves a SavedState (state.h) or
// loads one of this disk, which the rings must then start from.
#pragma once

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
#include "devices/worker/virtio_device.h"

namespace moss::blk {

// Virtio feature bits (virtio 1.2, 5.2.3 and 6), and the config fields they make valid.
namespace feature {
using namespace virtio::feature;
constexpr int kSizeMax = 1;       // size_max
constexpr int kSegMax = 2;        // seg_max
constexpr int kRo = 5;            // The disk is read-only.
constexpr int kBlkSize = 6;       // blk_size
constexpr int kFlush = 9;         // VIRTIO_BLK_T_FLUSH; without it, every write is written through.
constexpr int kTopology = 10;     // physical_block_exp, alignment_offset, min_io_size, opt_io_size
constexpr int kMq = 12;           // num_queues
constexpr int kDiscard = 13;      // max_discard_sectors, max_discard_seg, discard_sector_alignment
constexpr int kWriteZeroes = 14;  // max_write_zeroes_sectors, max_write_zeroes_seg, write_zeroes_may_unmap
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
std::vector<uint8_t> config_space(const DiskInfo& disk, uint32_t num_queues);

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

class BlkDevice final : public runtime::VirtioDevice {
 public:
  // `disk` and `engine` outlive the device; options.num_queues is 1..256. `loop`: where the
  // device watches the engine's completions.
  BlkDevice(const Disk& disk, Engine& engine, DeviceOptions options, event_base* loop);
  ~BlkDevice() override;
  BlkDevice(const BlkDevice&) = delete;
  BlkDevice& operator=(const BlkDevice&) = delete;

  // runtime::Device.
  uint32_t in_flight() const override;
  void drain() override;
  runtime::Stats stats() const override;

  void on_io_ready();
  const Counters& counters() const { return counters_; }
  const std::string& serial() const { return serial_; }

 private:
  // runtime::VirtioDevice.
  void process(uint32_t q) override;
  // Sets up inflight tracking (INFLIGHT_SHMFD) and what a previous backend left to resubmit.
  Result<void> ring_started(uint32_t q, virtio::Queue& queue) override;
  void ring_stopping(uint32_t q) override;
  void memory_changing() override;
  // SavedState: the common part, and the disk as the guest saw it (check_state_fits).
  Result<std::vector<uint8_t>> write_state(const virtio::CommonState& common) const override;
  Result<virtio::CommonState> read_state(std::span<const uint8_t> bytes) const override;

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
  bool write_through() const { return !(acked_features() & (uint64_t{1} << feature::kFlush)); }
  void start_request(uint32_t q, uint16_t head);
  void complete(uint32_t q, uint16_t head);
  void on_done(Engine::Tag tag, int res);
  void drain(uint32_t q);
  void count(const Slot& s);
  InflightTracker* tracker(uint32_t q);

  const Disk& disk_;
  Engine& engine_;
  const std::string serial_;
  std::vector<QueueState> queues_;
  Counters counters_;
  Event engine_event_;
};

}  // namespace moss::blk
