// The driver side of a split virtqueue: the part a guest kernel plays. For host-side tests and
// the test driver harness, so the device code can be exercised without a guest.
//
// It behaves like a careful driver (free-descriptor list, release fence before publishing,
// EVENT_IDX fields) and checks what the device writes into the used ring. It can also write
// anything at all (raw descriptors, raw heads, raw avail indices) so tests can hand the device
// the malformed rings a hostile guest would.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "base/guest_memory.h"
#include "base/result.h"
#include "devices/virtio/queue.h"

namespace moss::virtio {

class DriverQueue {
 public:
  struct Buffer {
    uint64_t gpa = 0;
    uint32_t len = 0;
  };

  // Bytes a ring of `size` entries occupies from its base: descriptor table, available ring,
  // then the used ring at the next 4-byte boundary.
  static uint64_t footprint(uint16_t size);

  // Lays a zeroed ring out at `base_gpa` (16-byte aligned, footprint(size) bytes inside one
  // region). `start_idx` is where both free-running indices begin, as if that many chains had
  // already gone round; tests use it to reach the 65535 -> 0 wrap quickly. (It writes used->idx
  // too, which only the device writes on a live ring; give the device the same value with
  // Queue::set_last_avail_idx.)
  static Result<DriverQueue> create(const GuestMemory& mem, uint64_t base_gpa, uint16_t size,
                                    bool event_idx, bool indirect, uint16_t start_idx = 0);
  DriverQueue(DriverQueue&&) = default;  // Move-only, like Queue: one owner per ring side.
  DriverQueue& operator=(DriverQueue&&) = default;
  DriverQueue(const DriverQueue&) = delete;
  DriverQueue& operator=(const DriverQueue&) = delete;

  // What the driver tells the device (the transport's queue registers).
  const QueueConfig& config() const { return config_; }

  // Offers a chain of direct descriptors: readable buffers, then writable ones. Returns its
  // head. Error if both lists are empty or fewer descriptors are free than needed.
  Result<uint16_t> add_chain(std::span<const Buffer> readable, std::span<const Buffer> writable);
  // The same as one INDIRECT descriptor whose table is written at `table_gpa` (16 bytes per
  // buffer). Error if VIRTIO_F_INDIRECT_DESC is off or the table does not fit in memory.
  Result<uint16_t> add_indirect_chain(std::span<const Buffer> readable,
                                      std::span<const Buffer> writable, uint64_t table_gpa);

  // The next chain the device returned: (head, bytes written), or nullopt. Error if the device
  // moved used->idx too far or returned a head that is not in flight.
  Result<std::optional<std::pair<uint16_t, uint32_t>>> pop_used();

  // After adding chains: must the driver notify the device? (avail_event with EVENT_IDX, the
  // VIRTQ_USED_F_NO_NOTIFY flag without.)
  bool kick_needed();
  // Used-buffer notification suppression, the driver's half: with EVENT_IDX, ask for an
  // interrupt once used entry `idx` is written; without it, set or clear NO_INTERRUPT.
  void set_used_event(uint16_t idx);
  void set_no_interrupt(bool suppress);
  // Before sleeping on the interrupt: ask for one on the next completion, then re-read
  // used->idx. Returns true if completions arrived meanwhile (pop them instead of sleeping).
  bool enable_interrupts();

  uint16_t avail_idx() const { return avail_idx_; }
  uint16_t last_used_idx() const { return last_used_; }
  size_t free_descriptors() const { return free_.size(); }

  // ---- Raw writes for malformed-ring tests: no validation, no bookkeeping ----
  // Descriptor `index` of the main table (Error only if index >= size: that would be outside
  // the table we own).
  Result<void> write_descriptor(uint16_t index, const Descriptor& desc);
  // A descriptor anywhere in guest memory, e.g. into an indirect table.
  Result<void> write_descriptor_at(uint64_t gpa, const Descriptor& desc);
  // Puts any value into the next available slot and bumps avail->idx (release fence first).
  void publish_raw(uint16_t head);
  // Sets avail->idx without writing ring entries (e.g. a jump past the queue size).
  void set_avail_idx_raw(uint16_t idx);

 private:
  DriverQueue(const GuestMemory& mem, const QueueConfig& config, std::span<uint8_t> desc,
              std::span<uint8_t> avail, std::span<uint8_t> used, uint16_t start_idx);
  void put_descriptor(uint16_t index, const Descriptor& desc);
  Result<std::vector<uint16_t>> allocate(size_t count);

  const GuestMemory* mem_;
  QueueConfig config_;
  std::span<uint8_t> desc_, avail_, used_;
  uint16_t avail_idx_;
  uint16_t last_used_;
  uint16_t kicked_from_;  // avail_idx_ at the last kick_needed().
  std::vector<uint16_t> free_;
  std::vector<std::vector<uint16_t>> in_flight_;  // By head: the descriptors it holds.
};

}  // namespace moss::virtio
