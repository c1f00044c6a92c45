// The device side of a virtio 1.x split virtqueue (virtio 1.2, section 2.7), over GuestMemory.
//
// Everything in guest memory is written by an untrusted guest, possibly while we read it. The
// contract of this file:
//   - every guest-controlled value (ring indices, heads, descriptor addresses, lengths, flags,
//     next links, indirect tables) is checked before use, with overflow-safe arithmetic; a
//     violation is an Error value, never an access outside the guest memory map;
//   - every descriptor is read from guest memory exactly once, into a local copy, so the guest
//     cannot change a descriptor between our check and our use;
//   - our own bugs (an internal offset out of range, pushing a head outside the table) are
//     MOSS_ASSERTs.
// What the caller does with an Error is device policy: the usual answer is to stop the queue
// and mark the device DEVICE_NEEDS_RESET.
//
// Threading: a Queue is used by one thread at a time (the worker's queue thread). The guest is
// the other party; the ring fields it shares with us are accessed with single atomic loads
// and stores, ordered by explicit fences (see queue.cc).
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <type_traits>
#include <vector>

#include "base/guest_memory.h"
#include "base/result.h"

namespace moss::virtio {

// virtio 1.x rings are little-endian; moss runs on x86_64 only, so fields are used as read.
static_assert(std::endian::native == std::endian::little, "virtio rings are little-endian");

// ---- Ring layout (virtio 1.2, 2.7.5 - 2.7.8) ----

struct Descriptor {
  uint64_t addr;   // Guest physical address of the buffer (or of an indirect table).
  uint32_t len;    // Bytes.
  uint16_t flags;  // kDescF*.
  uint16_t next;   // Next descriptor in the chain when kDescFNext is set.
};
static_assert(sizeof(Descriptor) == 16 && std::is_trivially_copyable_v<Descriptor>);

struct UsedElem {
  uint32_t id;   // Head of the used chain (32 bits in the ring for padding reasons).
  uint32_t len;  // Bytes the device wrote into the chain's writable buffers.
};
static_assert(sizeof(UsedElem) == 8);

inline constexpr uint16_t kDescFNext = 1;
inline constexpr uint16_t kDescFWrite = 2;
inline constexpr uint16_t kDescFIndirect = 4;
inline constexpr uint16_t kAvailFNoInterrupt = 1;  // avail->flags, without EVENT_IDX.
inline constexpr uint16_t kUsedFNoNotify = 1;      // used->flags, without EVENT_IDX.

inline constexpr uint32_t kMaxQueueSize = 32768;
// An indirect table may hold more descriptors than the queue size (Linux builds such tables
// when a request has more segments than the ring has slots), so its bound is the largest
// queue size rather than this queue's size: 512 KiB of table, a walk of bounded cost.
inline constexpr uint32_t kMaxIndirectDescriptors = 32768;
// Drivers must not offer more than 2^32 bytes in one chain (2.7.5). We stop one byte short so
// every total fits the 32-bit `len` of a used element.
inline constexpr uint64_t kMaxChainBytes = UINT32_MAX;

// Byte sizes of the three ring parts, including the EVENT_IDX fields (the spec sizes them in
// unconditionally, and a driver always allocates them).
constexpr uint64_t desc_table_bytes(uint32_t size) { return 16ull * size; }
constexpr uint64_t avail_ring_bytes(uint32_t size) { return 6ull + 2ull * size; }
constexpr uint64_t used_ring_bytes(uint32_t size) { return 6ull + 8ull * size; }
// Offsets inside the avail and used rings.
inline constexpr uint64_t kRingFlagsOffset = 0;
inline constexpr uint64_t kRingIdxOffset = 2;
constexpr uint64_t avail_entry_offset(uint32_t slot) { return 4ull + 2ull * slot; }
constexpr uint64_t used_event_offset(uint32_t size) { return 4ull + 2ull * size; }
constexpr uint64_t used_entry_offset(uint32_t slot) { return 4ull + 8ull * slot; }
constexpr uint64_t avail_event_offset(uint32_t size) { return 4ull + 8ull * size; }

// The EVENT_IDX rule (2.7.7.2, 2.7.10): the other side asked to be notified once the entry at
// index `event` is written. Having moved an index from `old_idx` to `new_idx`, notify iff
// `event` is one of the indices written in between, i.e. lies in [old_idx, new_idx) modulo
// 2^16. Both differences are taken mod 2^16, so this holds across the 65535 -> 0 wrap.
constexpr bool need_event(uint16_t event, uint16_t new_idx, uint16_t old_idx) {
  return static_cast<uint16_t>(new_idx - event - 1) < static_cast<uint16_t>(new_idx - old_idx);
}

// ---- Configuration ----

struct QueueConfig {
  uint16_t size = 0;  // Entries; a power of two, 1..32768 (32768 fits: 0 is rejected).
  uint64_t desc_gpa = 0;
  uint64_t avail_gpa = 0;
  uint64_t used_gpa = 0;
  bool event_idx = false;  // VIRTIO_F_EVENT_IDX negotiated.
  bool indirect = false;   // VIRTIO_F_INDIRECT_DESC negotiated.
};

// Checks the size, the alignment of each part (16/2/4) and that each part lies wholly inside
// one guest memory region. The driver chose all of these, so failures are Errors.
Result<void> validate_queue_config(const GuestMemory& mem, const QueueConfig& config);

// ---- Descriptor chains ----

// A walked, fully checked chain. The spans point into guest memory (valid while its mapping
// is); the guest can still change the bytes under us, so parse from copies (ChainReader).
// Readable spans are const: the device must not write a device-readable buffer (2.7.5.1).
struct DescriptorChain {
  uint16_t head = 0;  // The value to give back in push_used().
  std::vector<std::span<const uint8_t>> readable;  // In chain order; no empty spans.
  std::vector<std::span<uint8_t>> writable;        // In chain order; no empty spans.
  uint64_t readable_bytes = 0;  // Sum of readable sizes; with writable_bytes <= kMaxChainBytes.
  uint64_t writable_bytes = 0;
  uint32_t descriptors = 0;  // Descriptors walked (direct and indirect, zero-length included).
};
using Chain = DescriptorChain;

// Follows the chain starting at descriptor `head` of the table at config.desc_gpa. Pure: reads
// guest memory, writes nothing. Errors (all guest mistakes):
//   - head or any `next` outside the table; a chain of more than `size` descriptors (a loop);
//   - any buffer not wholly inside guest memory (one buffer may span adjacent regions and then
//     yields one span per region; a hole between regions is an Error);
//   - a device-readable descriptor after a device-writable one;
//   - total length above kMaxChainBytes;
//   - INDIRECT when not negotiated, INDIRECT together with NEXT, INDIRECT inside an indirect
//     table, an indirect table that is empty, not a multiple of 16 bytes, larger than
//     kMaxIndirectDescriptors, or not inside one memory region, or a walk of more descriptors
//     than the table holds (a loop).
// Zero-length descriptors are accepted and contribute no span (their address is not used);
// they still count toward the limits and the direction rule. Per 2.7.5.3.2 the WRITE flag of
// a descriptor that points at an indirect table is ignored, and such a descriptor ends the
// chain (it may follow direct descriptors).
Result<DescriptorChain> walk_chain(const GuestMemory& mem, const QueueConfig& config,
                                   uint16_t head);

// ---- Copying in and out of a chain ----

namespace detail {
// A position in a list of segments; shared by ChainReader and ChainWriter.
template <typename Byte>
class SegmentCursor {
 public:
  SegmentCursor(std::span<const std::span<Byte>> segs, uint64_t total) : segs_(segs), left_(total) {}
  uint64_t remaining() const { return left_; }
  uint64_t done() const { return done_; }
  // Calls f(span) for the next n bytes, in pieces, and consumes them. Caller checked n.
  template <typename F>
  void advance(uint64_t n, F&& f) {
    MOSS_ASSERT(n <= left_);
    left_ -= n;
    done_ += n;
    while (n > 0) {
      MOSS_ASSERT(seg_ < segs_.size());
      std::span<Byte> s = segs_[seg_];
      uint64_t piece = std::min<uint64_t>(n, s.size() - off_);
      f(s.subspan(off_, piece));
      off_ += piece;
      n -= piece;
      if (off_ == s.size()) {
        ++seg_;
        off_ = 0;
      }
    }
  }

 private:
  std::span<const std::span<Byte>> segs_;
  size_t seg_ = 0;
  size_t off_ = 0;
  uint64_t left_ = 0;
  uint64_t done_ = 0;
};
Error short_chain_error(const char* what, uint64_t want, uint64_t have);
}  // namespace detail

// Reads a chain's device-readable bytes in order. A read either succeeds in full or fails
// and consumes nothing. The chain must outlive the reader.
class ChainReader {
 public:
  explicit ChainReader(const DescriptorChain& chain)
      : cur_(std::span<const std::span<const uint8_t>>(chain.readable), chain.readable_bytes) {}
  uint64_t remaining() const { return cur_.remaining(); }
  uint64_t consumed() const { return cur_.done(); }

  Result<void> read(std::span<uint8_t> out);
  Result<void> skip(uint64_t n);
  // The next n bytes as spans into guest memory (for zero-copy I/O such as pwritev), consumed.
  Result<std::vector<std::span<const uint8_t>>> take(uint64_t n);
  // Copies a struct out of guest memory: the value cannot change while it is parsed.
  template <typename T>
  Result<T> read_obj() {
    static_assert(std::is_trivially_copyable_v<T>);
    T obj;
    MOSS_TRY_VOID(read(std::span<uint8_t>(reinterpret_cast<uint8_t*>(&obj), sizeof(T))));
    return obj;
  }

 private:
  detail::SegmentCursor<const uint8_t> cur_;
};

// Writes a chain's device-writable bytes in order; written() is the `len` for push_used.
// A write either succeeds in full or fails and writes nothing.
class ChainWriter {
 public:
  explicit ChainWriter(const DescriptorChain& chain)
      : cur_(std::span<const std::span<uint8_t>>(chain.writable), chain.writable_bytes) {}
  uint64_t remaining() const { return cur_.remaining(); }
  uint64_t written() const { return cur_.done(); }

  Result<void> write(std::span<const uint8_t> bytes);
  // The next n bytes as spans into guest memory (for zero-copy I/O such as preadv). They
  // count as written; if the I/O fills fewer, report the smaller length to push_used (the
  // spec allows `len` to underestimate, never to overstate).
  Result<std::vector<std::span<uint8_t>>> take(uint64_t n);
  template <typename T>
  Result<void> write_obj(const T& obj) {
    static_assert(std::is_trivially_copyable_v<T>);
    return write(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&obj), sizeof(T)));
  }

 private:
  detail::SegmentCursor<uint8_t> cur_;
};

// ---- The queue ----

class Queue {
 public:
  // Validates `config` (validate_queue_config). `mem` must outlive the queue; when the memory
  // table changes (vhost-user SET_MEM_TABLE), make a new Queue and carry last_avail_idx over.
  // The used index starts from used->idx in guest memory (0 on a fresh ring; the value we
  // last wrote after a restore); the avail index starts at 0 until set_last_avail_idx.
  static Result<Queue> create(const GuestMemory& mem, const QueueConfig& config);
  // Move-only: two copies would both think they own the ring's device side.
  Queue(Queue&&) = default;
  Queue& operator=(Queue&&) = default;
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;

  const QueueConfig& config() const { return config_; }

  // The next available ring entry the device will consume (vhost-user GET_VRING_BASE).
  uint16_t last_avail_idx() const { return last_avail_; }
  uint16_t next_avail_index() const { return last_avail_; }
  // Resumes from a saved position (vhost-user SET_VRING_BASE, state restore). The next
  // notification decision is then made without history (it notifies).
  void set_last_avail_idx(uint16_t idx);
  uint16_t used_idx() const { return used_idx_; }

  // Takes the next available head, or nullopt if the driver has offered nothing new.
  // Errors: avail->idx moved more than `size` past our position, or a head >= size; the
  // entry is then not consumed and the queue is unusable until reset.
  Result<std::optional<uint16_t>> pop_head();
  // pop_head() then walk_chain(). If the walk fails, the entry stays consumed; a device that
  // wants to return such a chain (push_used(head, 0)) and go on calls the two itself.
  Result<std::optional<DescriptorChain>> pop();

  // Returns chain `head` to the driver with `written` bytes written. Error if every popped
  // chain has already been returned (so a confused device cannot overrun the used ring).
  Result<void> push_used(uint16_t head, uint32_t written);

  // After one or more push_used: should the device notify (signal its call eventfd)?
  // With EVENT_IDX: iff the driver's used_event lies among the used indices written since the
  // last call. Without: iff the driver did not set VIRTQ_AVAIL_F_NO_INTERRUPT.
  bool needs_notification();

  // Available-buffer notification suppression (2.7.10). disable_notification() asks the driver
  // not to kick (used->flags; with EVENT_IDX the stale avail_event already suppresses kicks).
  // enable_notification() asks for a kick on the next new buffer and then re-reads avail->idx:
  // it returns true if buffers arrived meanwhile, in which case the caller must pop again
  // rather than sleep, since the driver may have checked before it saw our request.
  void disable_notification();
  bool enable_notification();
  // EVENT_IDX only (a no-op otherwise): ask to be kicked once the driver writes avail entry
  // `idx`.
  void set_avail_event(uint16_t idx);

 private:
  Queue(const GuestMemory& mem, const QueueConfig& config, std::span<uint8_t> avail,
        std::span<uint8_t> used);

  const GuestMemory* mem_;
  QueueConfig config_;
  std::span<uint8_t> avail_;  // Driver-written; we only read it.
  std::span<uint8_t> used_;   // Device-written (the guest can scribble on it: we never read
                              // back anything but our own idx at creation).
  uint16_t last_avail_ = 0;
  uint16_t used_idx_ = 0;
  uint16_t signalled_used_ = 0;  // used_idx_ at the last needs_notification().
  bool signalled_used_valid_ = false;
};

}  // namespace moss::virtio
