// Inflight I/O tracking for one split virtqueue (vhost-user spec, "Inflight I/O tracking",
// VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD), so that a backend that starts on a ring another
// backend left mid-flight (it crashed, or its frontend lost it) can resubmit what the driver
// is still waiting for.
//
// The region is the spec's QueueRegionSplit in memory the frontend shares:
//   u64 features; u16 version; u16 desc_num; u16 last_batch_head; u16 used_idx;
//   DescStateSplit desc[desc_num] = { u8 inflight; u8 padding[5]; u16 next; u64 counter; }
// Its contents come from the frontend and from whatever backend wrote it before us, so
// attach() validates everything it reads and copies it once; later we only write.
//
// Order of writes (each step is visible before the next, so a crash anywhere leaves a region
// the next backend can repair): mark() on taking a head from the available ring; on
// completion, before_push() links the head into the "last batch", the device publishes the
// used element, then after_push() clears the head and records the used index.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/result.h"

namespace moss::blk {

class InflightTracker {
 public:
  static constexpr uint16_t kVersion = 1;
  static constexpr uint64_t kHeaderBytes = 16;
  static constexpr uint64_t kDescBytes = 16;

  // Takes over `region`, one queue's share of the inflight buffer, sized for `capacity`
  // descriptors (the buffer's queue_size), for a ring of `ring_size` entries whose used->idx
  // reads `used_idx`. A region still at version 0 is initialised; otherwise the last batch
  // is repaired (if the writer died between publishing used->idx and clearing its heads) and
  // the heads still in flight are collected, oldest first.
  // Errors: a region that is too small, of another version or descriptor count, or with
  // in-flight heads that cannot be real (outside the ring, more than it holds).
  static Result<InflightTracker> attach(std::span<uint8_t> region, uint16_t capacity, uint16_t ring_size,
                                        uint16_t used_idx);

  // True if the region was initialised here (nothing was in flight before).
  bool fresh() const { return fresh_; }
  // Heads to resubmit, oldest (lowest counter) first.
  const std::vector<uint16_t>& resubmit() const { return resubmit_; }
  // Where the device resumes the available ring: every head taken is either used or here.
  uint16_t next_avail(uint16_t used_idx) const { return static_cast<uint16_t>(used_idx + resubmit_.size()); }

  void mark(uint16_t head);
  void before_push(uint16_t head);
  void after_push(uint16_t head, uint16_t new_used_idx);

  uint8_t* data() const { return region_.data(); }

 private:
  explicit InflightTracker(std::span<uint8_t> region) : region_(region) {}
  std::span<uint8_t> region_;
  uint16_t ring_size_ = 0;
  uint64_t counter_ = 1;
  bool fresh_ = false;
  std::vector<uint16_t> resubmit_;
};

}  // namespace moss::blk
