#include "devices/virtio/driver.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <string>

#include "devices/virtio/ring_access.h"

namespace moss::virtio {
namespace {

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

uint64_t used_offset(uint16_t size) { return align_up(desc_table_bytes(size) + avail_ring_bytes(size), 4); }

std::string idx_text(uint16_t v) { return std::to_string(v); }

}  // namespace

uint64_t DriverQueue::footprint(uint16_t size) { return used_offset(size) + used_ring_bytes(size); }

Result<DriverQueue> DriverQueue::create(const GuestMemory& mem, uint64_t base_gpa, uint16_t size,
                                        bool event_idx, bool indirect, uint16_t start_idx) {
  if (base_gpa % 16 != 0) return make_error("the driver ring base must be 16-byte aligned");
  QueueConfig config;
  config.size = size;
  config.desc_gpa = base_gpa;
  uint64_t end;
  if (__builtin_add_overflow(base_gpa, footprint(size), &end)) {
    return make_error("the driver ring does not fit in the address space");
  }
  config.avail_gpa = base_gpa + desc_table_bytes(size);
  config.used_gpa = base_gpa + used_offset(size);
  config.event_idx = event_idx;
  config.indirect = indirect;
  MOSS_TRY_VOID(validate_queue_config(mem, config));
  MOSS_TRY(auto whole, mem.slice(base_gpa, footprint(size)));
  std::memset(whole.data(), 0, whole.size());
  MOSS_TRY(auto desc, mem.slice(config.desc_gpa, desc_table_bytes(size)));
  MOSS_TRY(auto avail, mem.slice(config.avail_gpa, avail_ring_bytes(size)));
  MOSS_TRY(auto used, mem.slice(config.used_gpa, used_ring_bytes(size)));
  return DriverQueue(mem, config, desc, avail, used, start_idx);
}

DriverQueue::DriverQueue(const GuestMemory& mem, const QueueConfig& config, std::span<uint8_t> desc,
                         std::span<uint8_t> avail, std::span<uint8_t> used, uint16_t start_idx)
    : mem_(&mem),
      config_(config),
      desc_(desc),
      avail_(avail),
      used_(used),
      avail_idx_(start_idx),
      last_used_(start_idx),
      kicked_from_(start_idx),
      in_flight_(config.size) {
  // Lowest indices on top of the stack: chains then use 0, 1, 2... which keeps tests readable.
  for (uint32_t i = config.size; i > 0; --i) free_.push_back(static_cast<uint16_t>(i - 1));
  ring::store16(avail_, kRingIdxOffset, start_idx);
  ring::store16(used_, kRingIdxOffset, start_idx);
  // Ask for an interrupt on the first completion, as a fresh Linux ring does.
  if (config_.event_idx) ring::store16(avail_, used_event_offset(config_.size), start_idx);
}

void DriverQueue::put_descriptor(uint16_t index, const Descriptor& desc) {
  MOSS_ASSERT(index < config_.size);
  std::memcpy(desc_.data() + uint64_t{index} * sizeof(Descriptor), &desc, sizeof desc);
}

Result<std::vector<uint16_t>> DriverQueue::allocate(size_t count) {
  if (count == 0) return make_error("a chain needs at least one buffer");
  if (count > free_.size()) {
    return make_error("the ring has " + std::to_string(free_.size()) + " free descriptors, " +
                      std::to_string(count) + " needed");
  }
  std::vector<uint16_t> out(free_.end() - static_cast<ptrdiff_t>(count), free_.end());
  std::reverse(out.begin(), out.end());
  free_.resize(free_.size() - count);
  return out;
}

Result<uint16_t> DriverQueue::add_chain(std::span<const Buffer> readable,
                                        std::span<const Buffer> writable) {
  MOSS_TRY(auto ids, allocate(readable.size() + writable.size()));
  for (size_t i = 0; i < ids.size(); ++i) {
    bool w = i >= readable.size();
    const Buffer& b = w ? writable[i - readable.size()] : readable[i];
    bool last = i + 1 == ids.size();
    uint16_t flags = static_cast<uint16_t>((w ? kDescFWrite : 0) | (last ? 0 : kDescFNext));
    put_descriptor(ids[i], Descriptor{b.gpa, b.len, flags, last ? uint16_t{0} : ids[i + 1]});
  }
  uint16_t head = ids[0];
  in_flight_[head] = std::move(ids);
  publish_raw(head);
  return head;
}

Result<uint16_t> DriverQueue::add_indirect_chain(std::span<const Buffer> readable,
                                                 std::span<const Buffer> writable,
                                                 uint64_t table_gpa) {
  if (!config_.indirect) return make_error("VIRTIO_F_INDIRECT_DESC was not negotiated");
  size_t n = readable.size() + writable.size();
  if (n == 0 || n > kMaxIndirectDescriptors) return make_error("bad indirect table length");
  uint32_t table_bytes = static_cast<uint32_t>(n * sizeof(Descriptor));
  MOSS_TRY_VOID(mem_->slice(table_gpa, table_bytes));  // All of it in one region, like the device wants.
  for (size_t i = 0; i < n; ++i) {
    bool w = i >= readable.size();
    const Buffer& b = w ? writable[i - readable.size()] : readable[i];
    bool last = i + 1 == n;
    uint16_t flags = static_cast<uint16_t>((w ? kDescFWrite : 0) | (last ? 0 : kDescFNext));
    Descriptor d{b.gpa, b.len, flags, last ? uint16_t{0} : static_cast<uint16_t>(i + 1)};
    MOSS_TRY_VOID(mem_->write_obj(table_gpa + i * sizeof(Descriptor), d));
  }
  MOSS_TRY(auto ids, allocate(1));
  put_descriptor(ids[0], Descriptor{table_gpa, table_bytes, kDescFIndirect, 0});
  uint16_t head = ids[0];
  in_flight_[head] = std::move(ids);
  publish_raw(head);
  return head;
}

void DriverQueue::publish_raw(uint16_t head) {
  ring::store16(avail_, avail_entry_offset(avail_idx_ & (config_.size - 1)), head);
  // Release: the descriptors and the ring entry must be visible before the idx that exposes
  // them (2.7.13.3.1); the device pairs this with an acquire after reading idx.
  std::atomic_thread_fence(std::memory_order_release);
  ++avail_idx_;
  ring::store16(avail_, kRingIdxOffset, avail_idx_);
}

void DriverQueue::set_avail_idx_raw(uint16_t idx) {
  std::atomic_thread_fence(std::memory_order_release);
  avail_idx_ = idx;
  ring::store16(avail_, kRingIdxOffset, idx);
}

Result<void> DriverQueue::write_descriptor(uint16_t index, const Descriptor& desc) {
  if (index >= config_.size) return make_error("descriptor index " + idx_text(index) + " is outside the table");
  put_descriptor(index, desc);
  return {};
}

Result<void> DriverQueue::write_descriptor_at(uint64_t gpa, const Descriptor& desc) {
  return mem_->write_obj(gpa, desc);
}

Result<std::optional<std::pair<uint16_t, uint32_t>>> DriverQueue::pop_used() {
  using Out = std::optional<std::pair<uint16_t, uint32_t>>;
  uint16_t used_idx = ring::load16(used_, kRingIdxOffset);
  // Acquire: pairs with the device's release before its used->idx store, so the element and
  // the bytes it wrote into our buffers are visible once we see the new idx.
  std::atomic_thread_fence(std::memory_order_acquire);
  if (used_idx == last_used_) return Out();
  if (static_cast<uint16_t>(used_idx - last_used_) > config_.size) {
    return make_error("the device moved used->idx from " + idx_text(last_used_) + " to " +
                      idx_text(used_idx) + ", more than the queue size ahead");
  }
  UsedElem elem;
  std::memcpy(&elem, used_.data() + used_entry_offset(last_used_ & (config_.size - 1)), sizeof elem);
  if (elem.id >= config_.size || in_flight_[elem.id].empty()) {
    return make_error("the device returned head " + std::to_string(elem.id) + ", which is not in flight");
  }
  for (uint16_t id : in_flight_[elem.id]) free_.push_back(id);
  in_flight_[elem.id].clear();
  ++last_used_;
  return Out(std::pair<uint16_t, uint32_t>(static_cast<uint16_t>(elem.id), elem.len));
}

bool DriverQueue::kick_needed() {
  // Full fence: the avail->idx store must be visible before we read avail_event / flags (the
  // device's mirror image is in Queue::enable_notification).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (!config_.event_idx) return (ring::load16(used_, kRingFlagsOffset) & kUsedFNoNotify) == 0;
  uint16_t event = ring::load16(used_, avail_event_offset(config_.size));
  uint16_t old = kicked_from_;
  kicked_from_ = avail_idx_;
  return need_event(event, avail_idx_, old);
}

void DriverQueue::set_used_event(uint16_t idx) {
  if (config_.event_idx) ring::store16(avail_, used_event_offset(config_.size), idx);
}

bool DriverQueue::enable_interrupts() {
  if (config_.event_idx) {
    set_used_event(last_used_);
  } else {
    set_no_interrupt(false);
  }
  // Full fence: the request must be visible before we re-read used->idx; the device writes
  // used->idx, fences, then reads used_event / flags (Queue::needs_notification).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return ring::load16(used_, kRingIdxOffset) != last_used_;
}

void DriverQueue::set_no_interrupt(bool suppress) {
  ring::store16(avail_, kRingFlagsOffset, suppress ? kAvailFNoInterrupt : 0);
}

}  // namespace moss::virtio
