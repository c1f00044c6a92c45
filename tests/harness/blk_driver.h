// A virtio-blk driver over one queue of a harness Guest: what the guest kernel's virtio_blk
// does, minus the block layer. Requests go into fixed slots in guest RAM (header, status byte,
// an indirect table and a data buffer each), so up to `depth` of them can be in flight.
//
// Each request's status byte starts as kNoStatus, so a backend that returns a chain without
// writing it is seen. Waits end at the Guest's timeout: a wedged backend is an Error, never a
// hang. Data segments follow the backend's SIZE_MAX/SEG_MAX; a chain of more than one
// descriptor goes through an indirect table when INDIRECT_DESC was negotiated (as Linux
// does), unless the options say otherwise.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "devices/blk/request.h"
#include "tests/harness/guest.h"

namespace moss::harness {

constexpr uint8_t kNoStatus = 0xff;  // The sentinel a request's status byte starts with.

// The virtio-blk config space fields the harness uses (virtio 1.2, 5.2.4).
struct BlkConfig {
  uint64_t capacity_sectors = 0;
  uint32_t size_max = 0;  // With VIRTIO_BLK_F_SIZE_MAX.
  uint32_t seg_max = 0;   // With VIRTIO_BLK_F_SEG_MAX.
  uint32_t blk_size = 512;
  uint16_t num_queues = 1;
  uint32_t max_discard_sectors = 0, max_discard_seg = 0;
  uint32_t max_write_zeroes_sectors = 0, max_write_zeroes_seg = 0;
  bool write_zeroes_may_unmap = false;
};
BlkConfig parse_blk_config(std::span<const uint8_t> bytes);

struct BlkOp {
  blk::Type type = blk::Type::kIn;
  uint64_t sector = 0;
  uint32_t bytes = 0;               // IN / OUT: data bytes in the slot's buffer; GET_ID: 20.
  std::vector<blk::Range> ranges;   // DISCARD / WRITE_ZEROES.
};

struct Completion {
  uint32_t slot = 0;
  uint8_t status = kNoStatus;  // What the device wrote (kNoStatus: nothing).
  uint32_t len = 0;            // The used element's length.
};

class BlkDriver {
 public:
  enum class Descriptors { kAuto, kDirect, kIndirect };
  struct Options {
    uint32_t queue = 0;
    uint32_t depth = 1;                 // Slots: requests that can be in flight at once.
    uint32_t max_bytes = 128u << 10;    // Data buffer per slot.
    Descriptors descriptors = Descriptors::kAuto;
  };

  // `guest` must outlive the driver.
  static Result<BlkDriver> create(Guest& guest, const Options& options);

  const BlkConfig& config() const { return config_; }
  Guest& guest() { return *guest_; }
  uint32_t depth() const { return static_cast<uint32_t>(slots_.size()); }
  uint32_t in_flight() const { return in_flight_; }

  // ---- Asynchronous use ----
  std::optional<uint32_t> free_slot() const;
  // The slot's data buffer (max_bytes): fill it before an OUT, read it after an IN.
  std::span<uint8_t> buffer(uint32_t slot);
  uint64_t buffer_gpa(uint32_t slot) const { return slots_.at(slot).data_gpa; }
  // Builds the chain in a free slot and publishes it; call kick() after one or more.
  Result<void> submit(uint32_t slot, const BlkOp& op);
  Result<void> kick();
  // Returns completions as they arrive, at least `at_least` of them (and at most in_flight()),
  // or an Error once the Guest's timeout passes or the backend disconnects.
  Result<std::vector<Completion>> reap(size_t at_least);

  // ---- One request at a time: the virtio status, or an Error if none came back ----
  Result<uint8_t> read(uint64_t sector, std::span<uint8_t> out);
  Result<uint8_t> write(uint64_t sector, std::span<const uint8_t> data);
  Result<uint8_t> flush();
  Result<uint8_t> discard(std::span<const blk::Range> ranges);
  Result<uint8_t> write_zeroes(std::span<const blk::Range> ranges);
  // The device's id string (up to 20 bytes, NUL-padded) with the status.
  Result<std::pair<uint8_t, std::string>> get_id();

 private:
  struct Slot {
    uint64_t control_gpa = 0;  // Header at +0, status at +16, indirect table at +64.
    uint64_t data_gpa = 0;
    bool busy = false;
    uint16_t head = 0;
  };
  static constexpr uint64_t kStatusOffset = 16;
  static constexpr uint64_t kTableOffset = 64;

  BlkDriver(Guest& guest, const Options& options, const BlkConfig& config) : guest_(&guest), options_(options), config_(config) {}
  Result<uint8_t> one(const BlkOp& op);
  std::chrono::steady_clock::time_point deadline() const;

  Guest* guest_;
  Options options_;
  BlkConfig config_;
  uint32_t max_segments_ = 0;
  std::vector<Slot> slots_;
  std::vector<int32_t> slot_of_head_;  // By descriptor head; -1 when not ours.
  uint32_t in_flight_ = 0;
};

// "OK", "IOERR", "UNSUPP", "no status", or the number.
std::string status_name(uint8_t status);

}  // namespace moss::harness
